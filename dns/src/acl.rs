//! Who may transfer a zone (`--allow-transfer CIDR[,key=NAME]`): a client address block, and
//! optionally the TSIG key its requests must be signed with. Nobody by default. Free of I/O.

use std::net::IpAddr;
use std::str::FromStr;

use hickory_proto::rr::Name;

use crate::cidr::Cidr;

/// One entry of an access list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    /// The clients.
    pub cidr: Cidr,
    /// The key their requests must be signed with (lowercase, fully qualified), if any.
    pub key: Option<Name>,
}

impl FromStr for Acl {
    type Err = String;

    /// `10.0.0.0/8`, `192.0.2.1` or `2001:db8::/32`, optionally `,key=NAME`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (cidr, key) = with_key(s, "CIDR")?;
        let cidr = cidr.trim().parse::<Cidr>().map_err(|e| e.to_string())?;
        Ok(Self { cidr, key })
    }
}

/// Splits `WHAT` or `WHAT,key=NAME` (a `--tsig-key`'s name, lowercased and fully qualified),
/// for the flags that name a key: `--allow-transfer`, `--notify`. `what` names the first part
/// in the error.
pub fn with_key<'s>(s: &'s str, what: &str) -> Result<(&'s str, Option<Name>), String> {
    let Some((first, k)) = s.split_once(',') else {
        return Ok((s.trim(), None));
    };
    let name = k
        .trim()
        .strip_prefix("key=")
        .ok_or_else(|| format!("{s:?}: expected {what} or {what},key=NAME (NAME a --tsig-key)"))?;
    let mut n = Name::from_ascii(name)
        .map_err(|_| format!("{s:?}: key {name:?} is not a domain name"))?
        .to_lowercase();
    n.set_fqdn(true);
    Ok((first.trim(), Some(n)))
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No entry lists the client's address.
    NotListed,
    /// The client is listed only with a key, and the request is not signed.
    Unsigned,
    /// The client is listed only with another key.
    WrongKey,
}

impl Refusal {
    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotListed => "acl",
            Self::Unsigned => "unsigned",
            Self::WrongKey => "wrong_key",
        }
    }
}

/// Whether `peer`, whose request was signed with `key` (verified), may go on: some entry lists
/// its address and names no key or that key.
pub fn check(acls: &[Acl], peer: IpAddr, key: Option<&Name>) -> Result<(), Refusal> {
    let mut listed = acls.iter().filter(|a| a.cidr.contains(peer)).peekable();
    if listed.peek().is_none() {
        return Err(Refusal::NotListed);
    }
    let mut needs_key = false;
    for a in listed {
        match (&a.key, key) {
            (None, _) => return Ok(()),
            (Some(want), Some(got)) if want == got => return Ok(()),
            _ => needs_key = true,
        }
    }
    Err(if needs_key && key.is_none() {
        Refusal::Unsigned
    } else {
        Refusal::WrongKey
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("name")
    }

    #[test]
    fn entries_parse_and_say_what_is_wrong() {
        let a: Acl = "10.0.0.0/8,key=Xfr".parse().expect("valid");
        assert_eq!(a.key, Some(name("xfr.")));
        let b: Acl = "2001:db8::1".parse().expect("valid");
        assert_eq!(b.key, None);
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/8,xfr",
            "nonsense",
            "10.0.0.1,key=a..b",
        ] {
            assert!(bad.parse::<Acl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_listed_client_passes_with_the_key_its_entry_names() {
        let acls: Vec<Acl> = ["127.0.0.0/8,key=xfr.", "10.1.0.0/16"]
            .iter()
            .map(|s| s.parse().expect("valid"))
            .collect();
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        let ten: IpAddr = "10.1.2.3".parse().expect("ip");
        let other: IpAddr = "192.0.2.1".parse().expect("ip");
        let xfr = name("xfr.");
        let wrong = name("other.");
        assert_eq!(check(&acls, lo, Some(&xfr)), Ok(()));
        assert_eq!(check(&acls, lo, None), Err(Refusal::Unsigned));
        assert_eq!(check(&acls, lo, Some(&wrong)), Err(Refusal::WrongKey));
        assert_eq!(check(&acls, ten, None), Ok(()));
        assert_eq!(check(&acls, ten, Some(&wrong)), Ok(()), "no key required");
        assert_eq!(check(&acls, other, Some(&xfr)), Err(Refusal::NotListed));
        assert_eq!(
            check(&[], lo, Some(&xfr)),
            Err(Refusal::NotListed),
            "nobody by default"
        );
        let mapped: IpAddr = "::ffff:10.1.0.9".parse().expect("ip");
        assert_eq!(
            check(&acls, mapped, None),
            Ok(()),
            "IPv4-mapped counts as IPv4"
        );
    }
}

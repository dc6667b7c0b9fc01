//! The SkyDNS key layout: a name's labels reversed under a prefix.
//!
//! `hello-world.default.federation.svc.example.com.` under `/skydns` is
//! `/skydns/com/example/svc/federation/default/hello-world`. Any key below that is a record of the
//! same name (ExternalDNS uses 8-hex random leaves).

use hickory_proto::rr::Name;

pub use fedplane_ops::etcd::normalize_prefix;

/// The key of a name: prefix, then its labels from the root, lowercased.
pub fn name_to_key(prefix: &str, name: &Name) -> String {
    let mut key = String::with_capacity(prefix.len() + name.len() + 1);
    key.push_str(prefix);
    let labels: Vec<_> = name.iter().collect();
    for label in labels.iter().rev() {
        key.push('/');
        for &b in *label {
            key.push(char::from(b.to_ascii_lowercase()));
        }
    }
    key
}

/// The name a key stands for (CoreDNS's `msg.Domain`), or `None` if the key is not under the
/// prefix or its labels do not make a name.
pub fn key_to_name(prefix: &str, key: &str) -> Option<Name> {
    let rest = key.strip_prefix(prefix)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let labels: Vec<&str> = rest.split('/').filter(|l| !l.is_empty()).rev().collect();
    let mut name = Name::from_labels(labels.iter().map(|l| l.as_bytes())).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// Strips `n` labels from the left of a name (SkyDNS `targetstrip`); the root stays the root.
pub fn strip_labels(name: &Name, n: u8) -> Name {
    let keep = name.num_labels().saturating_sub(n);
    name.trim_to(usize::from(keep))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("valid name")
    }

    #[test]
    fn key_reverses_labels_and_lowercases() {
        assert_eq!(
            name_to_key(
                "/skydns",
                &name("Hello-World.default.federation.svc.example.com.")
            ),
            "/skydns/com/example/svc/federation/default/hello-world"
        );
        assert_eq!(name_to_key("/skydns", &Name::root()), "/skydns");
    }

    #[test]
    fn key_to_name_is_the_inverse_and_rejects_other_prefixes() {
        let k = "/skydns/com/example/svc/x/1a2b3c4d";
        assert_eq!(
            key_to_name("/skydns", k),
            Some(name("1a2b3c4d.x.svc.example.com."))
        );
        assert_eq!(key_to_name("/skydns", "/skydnsx/com"), None);
        assert_eq!(key_to_name("/skydns", "/other/com"), None);
    }

    #[test]
    fn targetstrip_removes_leftmost_labels() {
        assert_eq!(
            strip_labels(&name("1a2b3c4d.x.example.com."), 1),
            name("x.example.com.")
        );
        assert_eq!(strip_labels(&name("a.b."), 9), Name::root());
    }
}

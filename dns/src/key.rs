//! The SkyDNS key layout: a name's labels reversed under a prefix, and the one mapping between
//! keys and names that loading, the watch, the fast path and the general path all use.
//!
//! `hello-world.default.federation.svc.example.com.` under `/skydns` is
//! `/skydns/com/example/svc/federation/default/hello-world`. Any key below that is a record of the
//! same name (ExternalDNS uses 8-hex random leaves).
//!
//! A key names something only when every label after the prefix is 1–63 bytes of printable
//! ASCII without upper-case letters, `.` or `\` (queries are matched lower-case, and SkyDNS
//! writes a name's labels as they read, without escapes), and the name fits in 255 bytes. Any
//! other key (`//`, a trailing `/`, `Www`, `café`, bytes that are not UTF-8, a label of 64
//! bytes) could never be asked for: [`check_key`] says why, and such keys are never stored
//! (the sync task logs and counts them once). The other way round, a query name with a label
//! no key can hold (`x\/b`, `a\.b`, non-ASCII bytes) has no key ([`name_to_key`] is `None`):
//! nothing exists there.

use hickory_proto::rr::Name;

pub use fedplane_ops::etcd::normalize_prefix;

/// Why a key under the prefix can never be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is not the prefix or below it.
    #[error("not under the prefix")]
    OutsidePrefix,
    /// The key is not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// Two `/` in a row, or a trailing `/`.
    #[error("an empty label (`//` or a trailing `/`)")]
    EmptyLabel,
    /// A label of more than 63 bytes.
    #[error("a label longer than 63 bytes")]
    LabelTooLong,
    /// More than 255 bytes in wire form.
    #[error("a name longer than 255 bytes")]
    NameTooLong,
    /// Upper-case letters: queries are matched lower-case.
    #[error("upper-case letters (names are matched in lower case)")]
    UpperCase,
    /// Bytes outside ASCII (an IDN label is written in its `xn--` form).
    #[error("bytes outside ASCII (write IDN labels as xn--)")]
    NotAscii,
    /// A space, a control character, `.` or `\` in a label.
    #[error("a space, control character, `.` or `\\` in a label")]
    UnusableByte,
}

impl KeyError {
    /// Label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::OutsidePrefix => "outside_prefix",
            Self::NotUtf8 => "not_utf8",
            Self::EmptyLabel => "empty_label",
            Self::LabelTooLong => "label_too_long",
            Self::NameTooLong => "name_too_long",
            Self::UpperCase => "upper_case",
            Self::NotAscii => "not_ascii",
            Self::UnusableByte => "unusable_byte",
        }
    }
}

/// Whether a key label may hold byte `b` (and a lower-cased query label, to have a key).
pub(crate) fn label_byte_ok(b: u8) -> bool {
    b.is_ascii_graphic() && !b.is_ascii_uppercase() && !matches!(b, b'.' | b'\\' | b'/')
}

fn check_label(label: &[u8]) -> Result<(), KeyError> {
    if label.is_empty() {
        return Err(KeyError::EmptyLabel);
    }
    if label.len() > 63 {
        return Err(KeyError::LabelTooLong);
    }
    match label.iter().find(|&&b| !label_byte_ok(b)) {
        None => Ok(()),
        Some(b) if !b.is_ascii() => Err(KeyError::NotAscii),
        Some(b) if b.is_ascii_uppercase() => Err(KeyError::UpperCase),
        Some(_) => Err(KeyError::UnusableByte),
    }
}

/// The key's labels from the root (key order), once checked.
fn key_labels<'k>(
    prefix: &str,
    key: &'k [u8],
) -> Result<impl DoubleEndedIterator<Item = &'k [u8]>, KeyError> {
    let rest = key
        .strip_prefix(prefix.as_bytes())
        .ok_or(KeyError::OutsidePrefix)?;
    let labels = match rest {
        [] => None,
        [b'/', labels @ ..] => Some(labels),
        _ => return Err(KeyError::OutsidePrefix),
    };
    if std::str::from_utf8(rest).is_err() {
        return Err(KeyError::NotUtf8);
    }
    let split = labels.map(|l| l.split(|&b| b == b'/'));
    for label in split.clone().into_iter().flatten() {
        check_label(label)?;
    }
    // In wire form each `/label` is a length byte and the label, then the root's 0.
    if rest.len() + 1 > 255 {
        return Err(KeyError::NameTooLong);
    }
    Ok(split.into_iter().flatten())
}

/// Whether `key` names something (see the module docs), and if not why.
pub fn check_key(prefix: &str, key: &[u8]) -> Result<(), KeyError> {
    key_labels(prefix, key).map(|_| ())
}

/// The wire form of the name `key` stands for (lower-case, as every key that names something
/// is): what the fast path's table is keyed by.
pub fn key_wire(prefix: &str, key: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(key.len().saturating_sub(prefix.len()) + 1);
    for label in key_labels(prefix, key)?.rev() {
        out.push(u8::try_from(label.len()).map_err(|_| KeyError::LabelTooLong)?);
        out.extend_from_slice(label);
    }
    out.push(0);
    Ok(out)
}

/// The name a key stands for (CoreDNS's `msg.Domain`), or `None` if the key names nothing
/// ([`check_key`]).
pub fn key_to_name(prefix: &str, key: &str) -> Option<Name> {
    let labels = key_labels(prefix, key.as_bytes()).ok()?;
    let mut name = Name::from_labels(labels.rev()).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// What [`key_to_name`] and then [`strip_labels`] by `strip` give for `key`, without building
/// the name: its wire length and its key (a prefix of `key`); `None` for the root (a key that
/// names nothing gives the root too).
pub fn key_target<'k>(prefix: &str, key: &'k str, strip: u8) -> Option<(usize, &'k str)> {
    let _checked = key_labels(prefix, key.as_bytes()).ok()?;
    // Checked: `/label` parts after the prefix, each as long as the label's wire form.
    let rest = &key[prefix.len()..];
    let labels = rest.bytes().filter(|&b| b == b'/').count();
    let keep = match labels.checked_sub(usize::from(strip)) {
        Some(k) if k > 0 => k,
        _ => labels,
    };
    if keep == 0 {
        return None;
    }
    let end = rest
        .match_indices('/')
        .nth(keep)
        .map_or(rest.len(), |(i, _)| i);
    Some((end + 1, &key[..prefix.len() + end]))
}

/// The key of a name: prefix, then its labels from the root, lowercased. `None` when a label
/// holds a byte no key label can ([`check_key`]): no key names it, so nothing is there.
pub fn name_to_key(prefix: &str, name: &Name) -> Option<String> {
    let mut key = String::with_capacity(prefix.len() + name.len() + 1);
    key.push_str(prefix);
    let labels: Vec<_> = name.iter().collect();
    for label in labels.iter().rev() {
        key.push('/');
        for &b in *label {
            let b = b.to_ascii_lowercase();
            if !label_byte_ok(b) {
                return None;
            }
            key.push(char::from(b));
        }
    }
    Some(key)
}

/// Strips `n` labels from the left of a name (SkyDNS `targetstrip`). Stripping every label or
/// more leaves the name as it is (as CoreDNS does), never the root: a target of `.` means "no
/// service" (RFC 2782).
pub fn strip_labels(name: &Name, n: u8) -> Name {
    let labels = name.iter().count();
    match labels.checked_sub(usize::from(n)) {
        Some(keep) if keep > 0 => name.trim_to(keep),
        _ => name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("valid name")
    }

    proptest! {
        #[test]
        fn key_target_is_the_stripped_name_of_the_key(
            labels in prop::collection::vec("[a-z0-9-]{1,12}", 0..8),
            strip in 0u8..10,
        ) {
            let key = format!("/skydns{}", labels.iter().map(|l| format!("/{l}")).collect::<String>());
            let name = key_to_name("/skydns", &key).map(|n| strip_labels(&n, strip));
            let wire = |n: &Name| n.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
            match key_target("/skydns", &key, strip) {
                Some((len, k)) => {
                    let n = name.expect("a name");
                    prop_assert_eq!(len, wire(&n));
                    prop_assert_eq!(Some(k.to_owned()), name_to_key("/skydns", &n));
                }
                None => prop_assert!(name.is_none_or(|n| n.is_root())),
            }
        }
    }

    #[test]
    fn key_reverses_labels_and_lowercases() {
        assert_eq!(
            name_to_key(
                "/skydns",
                &name("Hello-World.default.federation.svc.example.com.")
            )
            .as_deref(),
            Some("/skydns/com/example/svc/federation/default/hello-world")
        );
        assert_eq!(
            name_to_key("/skydns", &Name::root()).as_deref(),
            Some("/skydns")
        );
    }

    #[test]
    fn key_to_name_is_the_inverse_and_rejects_other_prefixes() {
        let k = "/skydns/com/example/svc/x/1a2b3c4d";
        assert_eq!(
            key_to_name("/skydns", k),
            Some(name("1a2b3c4d.x.svc.example.com."))
        );
        assert_eq!(
            key_wire("/skydns", k.as_bytes()).expect("names something"),
            b"\x081a2b3c4d\x01x\x03svc\x07example\x03com\x00"
        );
        assert_eq!(key_to_name("/skydns", "/skydnsx/com"), None);
        assert_eq!(key_to_name("/skydns", "/other/com"), None);
        assert_eq!(key_to_name("/skydns", "/skydns"), Some(Name::root()));
    }

    #[test]
    fn keys_no_query_can_reach_name_nothing_and_say_why() {
        let long = format!("/skydns/com/example/{}", "a".repeat(64));
        let huge = format!("/skydns/com{}", "/abcdefg".repeat(32));
        let cases: [(&[u8], KeyError); 12] = [
            (b"/skydns/com/example//x", KeyError::EmptyLabel),
            (b"/skydns/com/example/x/", KeyError::EmptyLabel),
            (b"/skydns/", KeyError::EmptyLabel),
            (b"/skydns/com/example/Www", KeyError::UpperCase),
            ("/skydns/com/example/café".as_bytes(), KeyError::NotAscii),
            (b"/skydns/com/example/\xff", KeyError::NotUtf8),
            (long.as_bytes(), KeyError::LabelTooLong),
            (huge.as_bytes(), KeyError::NameTooLong),
            (b"/skydns/com/example/a.b", KeyError::UnusableByte),
            (b"/skydns/com/example/a b", KeyError::UnusableByte),
            (b"/skydns/com/example/a\\b", KeyError::UnusableByte),
            (b"/skydnsx/com", KeyError::OutsidePrefix),
        ];
        for (key, want) in cases {
            let shown = key.escape_ascii().to_string();
            assert_eq!(check_key("/skydns", key), Err(want), "{shown}");
            assert_eq!(key_wire("/skydns", key), Err(want), "{shown}");
            if let Ok(key) = std::str::from_utf8(key) {
                assert_eq!(key_to_name("/skydns", key), None, "{shown}");
            }
        }
        let ok = format!("/skydns/com/example/{}/_tcp/*/x-1", "a".repeat(63));
        assert_eq!(check_key("/skydns", ok.as_bytes()), Ok(()));
    }

    #[test]
    fn query_labels_no_key_can_hold_have_no_key() {
        let named =
            |first: &[u8]| Name::from_labels([first, b"example", b"com"]).expect("valid name");
        for first in [&b"x/b"[..], b"a.b", "café".as_bytes(), b"a b", b"a\\b"] {
            let shown = first.escape_ascii().to_string();
            assert_eq!(name_to_key("/skydns", &named(first)), None, "{shown}");
        }
        assert_eq!(
            name_to_key("/skydns", &named(b"_X@*")).as_deref(),
            Some("/skydns/com/example/_x@*")
        );
    }

    #[test]
    fn targetstrip_removes_leftmost_labels_but_never_all() {
        assert_eq!(
            strip_labels(&name("1a2b3c4d.x.example.com."), 1),
            name("x.example.com.")
        );
        assert_eq!(strip_labels(&name("a.b."), 2), name("a.b."));
        assert_eq!(strip_labels(&name("a.b."), 9), name("a.b."));
        assert_eq!(strip_labels(&Name::root(), 1), Name::root());
    }

    fn any_label() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..5),
            prop::collection::vec(prop::sample::select(b"aZ0-_./\\ \xc3\xa9".to_vec()), 0..4),
            Just(vec![b'a'; 64]),
        ]
    }

    proptest! {
        /// One mapping: a key that names something maps to a name whose key is that key, with
        /// the same wire form; a key that names nothing is not any name's key.
        #[test]
        fn keys_and_names_round_trip(labels in prop::collection::vec(any_label(), 0..5)) {
            let mut key = b"/skydns".to_vec();
            for l in &labels {
                key.push(b'/');
                key.extend_from_slice(l);
            }
            let Ok(text) = std::str::from_utf8(&key) else {
                prop_assert_eq!(check_key("/skydns", &key), Err(KeyError::NotUtf8));
                return Ok(());
            };
            match key_to_name("/skydns", text) {
                Some(n) => {
                    prop_assert_eq!(name_to_key("/skydns", &n), Some(text.to_owned()));
                    let wire = key_wire("/skydns", &key).expect("names something");
                    prop_assert_eq!(wire, crate::fast::wire_name(&n));
                }
                None => prop_assert!(check_key("/skydns", &key).is_err()),
            }
            // Any name made of the raw labels has no key or a key that names it.
            if let Ok(n) = Name::from_labels(labels.iter().rev().map(Vec::as_slice))
                && let Some(k) = name_to_key("/skydns", &n)
            {
                prop_assert_eq!(key_to_name("/skydns", &k), Some(n.to_lowercase()));
            }
        }
    }
}

//! Label and field selectors, parsed from `labelSelector` / `fieldSelector` and matched against
//! stored objects, as the real API server does for list, watch and delete-collection.

use serde_json::Value;

use super::kinds::Resource;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
enum LabelReq {
    Exists(String),
    NotExists(String),
    /// `k=v`, `k==v`, `k in (v1,v2)`.
    In(String, Vec<String>),
    /// `k!=v`, `k notin (v1,v2)`: also true when the label is absent.
    NotIn(String, Vec<String>),
}

/// One requirement of a field selector: `label=value` (`==` too) or `label!=value`.
#[derive(Debug, Clone, PartialEq)]
struct FieldReq {
    path: String,
    value: String,
    equal: bool,
}

/// The selectors of one list or watch request; the default selects everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Selector {
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

impl Selector {
    /// Parses both selectors; the error is the message of a 400 BadRequest.
    pub fn parse(
        res: &Resource,
        labels: Option<&str>,
        fields: Option<&str>,
    ) -> Result<Self, String> {
        let labels = match labels {
            Some(s) => parse_labels(s)?,
            None => Vec::new(),
        };
        let fields = match fields {
            Some(s) => parse_fields(res, s)?,
            None => Vec::new(),
        };
        Ok(Self { labels, fields })
    }

    /// Whether `obj` satisfies every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|req| match req {
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
            LabelReq::In(k, vs) => label(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            LabelReq::NotIn(k, vs) => !label(k).is_some_and(|v| vs.iter().any(|x| x == v)),
        });
        labels_ok
            && self
                .fields
                .iter()
                .all(|req| (field_value(obj, &req.path) == req.value) == req.equal)
    }
}

/// A field's value as a selector compares it: strings as they are, booleans and numbers
/// printed, absent as the empty string.
fn field_value(obj: &Value, path: &str) -> String {
    let mut v = obj;
    for part in path.split('.') {
        match v.get(part) {
            Some(next) => v = next,
            None => return String::new(),
        }
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn valid_value(v: &str) -> bool {
    v.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn parse_labels(s: &str) -> Result<Vec<LabelReq>, String> {
    let bad = |part: &str| format!("unable to parse requirement: found '{part}'");
    let mut reqs = Vec::new();
    for part in split_top(s) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let req = if let Some(k) = part.strip_prefix('!') {
            LabelReq::NotExists(k.trim().to_owned())
        } else if let Some((k, v)) = part.split_once("!=") {
            LabelReq::NotIn(k.trim().to_owned(), vec![v.trim().to_owned()])
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            LabelReq::In(k.trim().to_owned(), vec![v.trim().to_owned()])
        } else if let Some((k, set)) = set_requirement(part, " notin ") {
            LabelReq::NotIn(k, set.ok_or_else(|| bad(part))?)
        } else if let Some((k, set)) = set_requirement(part, " in ") {
            LabelReq::In(k, set.ok_or_else(|| bad(part))?)
        } else if part.contains(['(', ')', ' ', '<', '>']) {
            return Err(bad(part));
        } else {
            LabelReq::Exists(part.to_owned())
        };
        let (LabelReq::Exists(k)
        | LabelReq::NotExists(k)
        | LabelReq::In(k, _)
        | LabelReq::NotIn(k, _)) = &req;
        let values_ok = match &req {
            LabelReq::In(_, vs) | LabelReq::NotIn(_, vs) => vs.iter().all(|v| valid_value(v)),
            _ => true,
        };
        if !valid_key(k) || !values_ok {
            return Err(bad(part));
        }
        reqs.push(req);
    }
    Ok(reqs)
}

/// `key in (a,b)` → `(key, Some([a, b]))`; `None` when `op` is not the operator,
/// `Some((key, None))` when the set is malformed.
fn set_requirement(part: &str, op: &str) -> Option<(String, Option<Vec<String>>)> {
    let (k, rest) = part.split_once(op)?;
    let set = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .map(|inner| inner.split(',').map(|v| v.trim().to_owned()).collect());
    Some((k.trim().to_owned(), set))
}

fn parse_fields(res: &Resource, s: &str) -> Result<Vec<FieldReq>, String> {
    let mut reqs = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (path, value, equal) = if let Some((k, v)) = part.split_once("!=") {
            (k, v, false)
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            (k, v, true)
        } else {
            return Err(format!(
                "invalid selector: '{part}'; can't understand '{part}'"
            ));
        };
        let path = path.trim();
        if !res.supports_field(path) {
            return Err(format!(
                "field label not supported: {path} (the fake supports the labels of its kinds table)"
            ));
        }
        reqs.push(FieldReq {
            path: path.to_owned(),
            value: value.trim().to_owned(),
            equal,
        });
    }
    Ok(reqs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_fake::kinds::RESOURCES;
    use serde_json::json;

    fn obj() -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": {"app": "web", "tier": "front"}}})
    }

    fn sel(labels: &str) -> Selector {
        Selector::parse(&RESOURCES[0], Some(labels), None).expect("valid selector")
    }

    #[test]
    fn label_operators() {
        let o = obj();
        for yes in [
            "app=web",
            "app==web",
            "app!=db",
            "gone!=x",
            "app",
            "!gone",
            "app in (db, web)",
            "app notin (db)",
            "gone notin (db)",
            "app=web,tier in (front,back)",
        ] {
            assert!(sel(yes).matches(&o), "{yes} should match");
        }
        for no in [
            "app=db",
            "app!=web",
            "gone",
            "!app",
            "app in (db)",
            "app notin (web,db)",
        ] {
            assert!(!sel(no).matches(&o), "{no} should not match");
        }
    }

    #[test]
    fn malformed_selectors_are_refused() {
        for bad in ["app in db", "a b", "x>1", "app=we b"] {
            assert!(
                Selector::parse(&RESOURCES[0], Some(bad), None).is_err(),
                "{bad}"
            );
        }
        assert!(Selector::parse(&RESOURCES[0], None, Some("spec.type=x")).is_err());
    }

    #[test]
    fn field_selectors() {
        let f = |s: &str| Selector::parse(&RESOURCES[0], None, Some(s)).expect("valid");
        assert!(f("metadata.name=a").matches(&obj()));
        assert!(f("metadata.name!=b,metadata.namespace==ns").matches(&obj()));
        assert!(!f("metadata.namespace!=ns").matches(&obj()));
    }
}

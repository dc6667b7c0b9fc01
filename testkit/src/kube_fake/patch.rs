//! Patch documents: JSON merge patch (RFC 7386), JSON patch (RFC 6902), and the fake's reading
//! of strategic merge patches; plus YAML documents (for `apply_yaml` and server-side apply).

use serde_json::{Map, Value};

/// The patch types the API server accepts, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Merge,
    Strategic,
    Json,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/json-patch+json" => Some(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// RFC 7386: objects merge key by key, `null` removes a key, anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (k, v) in patch {
            if v.is_null() {
                map.remove(k);
            } else {
                merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// A strategic merge patch as the fake reads it: a merge patch (lists are replaced whole, not
/// merged by their patch merge key). `$setElementOrder/…` hints are dropped; the other
/// directives (`$patch`, `$retainKeys`, `$deleteFromPrimitiveList/…`) are refused, so a test
/// never silently gets a different result from the real server.
pub(crate) fn strategic_as_merge(patch: &Value) -> Result<Value, String> {
    match patch {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                if k.starts_with("$setElementOrder/") {
                    continue;
                }
                if k.starts_with('$') {
                    return Err(format!(
                        "the Kubernetes API fake treats strategic merge patches as merge patches \
                         and does not implement the directive {k}"
                    ));
                }
                out.insert(k.clone(), strategic_as_merge(v)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => items.iter().map(strategic_as_merge).collect(),
        other => Ok(other.clone()),
    }
}

/// RFC 6902 on `doc`: add, remove, replace, move, copy, test. All or nothing.
pub(crate) fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("a JSON patch must be an array")?;
    let mut out = doc.clone();
    for op in ops {
        let field = |name: &str| op.get(name).and_then(Value::as_str);
        let path = field("path").ok_or("a JSON patch operation needs a path")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or("the operation needs a value")
        };
        match field("op") {
            Some("add") => add(&mut out, path, value()?)?,
            Some("remove") => {
                remove(&mut out, path)?;
            }
            Some("replace") => {
                remove(&mut out, path)?;
                add(&mut out, path, value()?)?;
            }
            Some("move") => {
                let from = field("from").ok_or("move needs from")?;
                let v = remove(&mut out, from)?;
                add(&mut out, path, v)?;
            }
            Some("copy") => {
                let from = field("from").ok_or("copy needs from")?;
                let v = out
                    .pointer(from)
                    .cloned()
                    .ok_or(format!("no value at {from}"))?;
                add(&mut out, path, v)?;
            }
            Some("test") => {
                if out.pointer(path) != Some(&value()?) {
                    return Err(format!("testing value {path} failed"));
                }
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    *doc = out;
    Ok(())
}

/// Splits a JSON pointer into its parent pointer and unescaped last token.
fn split_pointer(path: &str) -> Result<(&str, String), String> {
    let i = path
        .rfind('/')
        .ok_or(format!("invalid JSON pointer {path:?}"))?;
    let last = path[i + 1..].replace("~1", "/").replace("~0", "~");
    Ok((&path[..i], last))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(last, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let i = if last == "-" {
                items.len()
            } else {
                last.parse()
                    .map_err(|_| format!("invalid index in {path}"))?
            };
            if i > items.len() {
                return Err(format!("index out of range in {path}"));
            }
            items.insert(i, value);
            Ok(())
        }
        _ => Err(format!("doc is missing path: {path}")),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("doc is missing path: {path}");
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&last).ok_or_else(missing),
        Some(Value::Array(items)) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => Ok(items.remove(i)),
            _ => Err(missing()),
        },
        _ => Err(missing()),
    }
}

/// Every object in a YAML (or JSON) text: multi-document `---` streams, and the items of any
/// `kind: List`. Empty documents are skipped.
pub(crate) fn yaml_objects(text: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for doc in docs {
        match doc {
            Value::Null => {}
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                let items = m.get("items").and_then(Value::as_array).cloned();
                out.extend(items.unwrap_or_default());
            }
            Value::Object(_) => out.push(doc),
            other => return Err(format!("a YAML document is not an object: {other}")),
        }
    }
    Ok(out)
}

/// One YAML (or JSON) document, as sent with a server-side apply patch.
pub(crate) fn yaml_object(text: &str) -> Result<Value, String> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(v);
    }
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}, "l": [3]}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn json_patch_operations() {
        let mut doc = json!({"a": {"b": [1, 2]}, "x~/y": 1});
        let ops = json!([
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "add", "path": "/a/b/0", "value": 0},
            {"op": "replace", "path": "/x~0~1y", "value": 2},
            {"op": "test", "path": "/x~0~1y", "value": 2},
            {"op": "copy", "from": "/a/b", "path": "/c"},
            {"op": "move", "from": "/c", "path": "/d"},
            {"op": "remove", "path": "/a/b/1"}
        ]);
        json_patch(&mut doc, &ops).expect("patch applies");
        assert_eq!(
            doc,
            json!({"a": {"b": [0, 2, 3]}, "x~/y": 2, "d": [0, 1, 2, 3]})
        );
        let before = doc.clone();
        let failing =
            json!([{"op": "remove", "path": "/d"}, {"op": "test", "path": "/a", "value": 1}]);
        assert!(json_patch(&mut doc, &failing).is_err());
        assert_eq!(doc, before, "a failed patch changes nothing");
    }

    #[test]
    fn strategic_directives() {
        let p = json!({"$setElementOrder/ports": [], "spec": {"a": 1}});
        assert_eq!(strategic_as_merge(&p), Ok(json!({"spec": {"a": 1}})));
        assert!(strategic_as_merge(&json!({"spec": {"$patch": "replace"}})).is_err());
    }

    #[test]
    fn yaml_streams_and_lists() {
        let text = "a: 1\n---\n---\nkind: List\nitems:\n- b: 2\n- c: 3\n";
        assert_eq!(
            yaml_objects(text),
            Ok(vec![json!({"a": 1}), json!({"b": 2}), json!({"c": 3})])
        );
    }
}

//! What each write does to the store, and the API server's errors.
//!
//! These run with the store locked, for HTTP requests and for the test's own
//! [`FakeKubeApi::apply`](super::FakeKubeApi::apply) alike.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::kinds::{RESOURCES, Resource};
use super::patch::{self, PatchKind};
use super::select::Selector;
use super::store::{Key, Obj, Store};

/// A failure, answered as a `Status` object with `code` as the HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `(name, resource)` for `details`.
    pub details: Option<(String, usize)>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn about(mut self, res: usize, name: &str) -> Self {
        self.details = Some((name.to_owned(), res));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(res: usize, name: &str) -> Self {
        let msg = format!("{} \"{name}\" not found", RESOURCES[res].plural);
        Self::new(404, "NotFound", msg).about(res, name)
    }

    fn conflict(res: usize, name: &str, why: &str) -> Self {
        let msg = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            RESOURCES[res].plural
        );
        Self::new(409, "Conflict", msg).about(res, name)
    }

    fn invalid(res: usize, name: &str, why: &str) -> Self {
        let msg = format!("{} \"{name}\" is invalid: {why}", RESOURCES[res].kind);
        Self::new(422, "Invalid", msg).about(res, name)
    }

    /// 410 Gone, reason `Expired`: the revision asked for is compacted away.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// The `Status` object kube's client parses into its error.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some((name, res)) = &self.details {
            let r = &RESOURCES[*res];
            s["details"] = json!({"name": name, "group": r.group, "kind": r.plural});
        }
        s
    }
}

/// Who writes: a client over HTTP, or the test through [`FakeKubeApi`](super::FakeKubeApi),
/// which sets whole objects, status included, like an administrator and every other
/// controller of the cluster at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    Client,
    Test,
}

/// The main resource, or its `/status` subresource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Main,
    Status,
}

fn meta(obj: &Value, field: &str) -> Option<String> {
    obj.get("metadata")?.get(field)?.as_str().map(str::to_owned)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let m = &mut obj["metadata"];
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut().expect("metadata was made an object")
}

/// Checks the body's type and namespace against the URL's and fills them in.
fn normalize(res: usize, ns: Option<&str>, body: &mut Value) -> Result<(), ApiError> {
    let r = &RESOURCES[res];
    if !body.is_object() {
        return Err(ApiError::bad_request("the body is not a JSON object"));
    }
    for (field, want) in [("apiVersion", r.api_version()), ("kind", r.kind.to_owned())] {
        match body.get(field).and_then(Value::as_str) {
            Some(got) if got != want => {
                return Err(ApiError::bad_request(format!(
                    "the {field} in the data ({got}) does not match the expected {field} ({want})"
                )));
            }
            _ => body[field] = Value::String(want),
        }
    }
    let m = meta_mut(body);
    if r.namespaced {
        let url_ns = ns.unwrap_or("default");
        match m.get("namespace").and_then(Value::as_str) {
            Some(got) if !got.is_empty() && got != url_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                m.insert("namespace".into(), Value::String(url_ns.to_owned()));
            }
        }
    } else {
        m.remove("namespace");
    }
    Ok(())
}

fn key(res: usize, obj: &Value, name: String) -> Key {
    Key {
        res,
        ns: meta(obj, "namespace").unwrap_or_default(),
        name,
    }
}

/// `POST` to a collection (and `apply` of an absent object).
pub(crate) fn create(
    store: &mut Store,
    res: usize,
    ns: Option<&str>,
    mut body: Value,
    caller: Caller,
) -> Result<Obj, ApiError> {
    normalize(res, ns, &mut body)?;
    let r = &RESOURCES[res];
    let uid = store.new_uid();
    let m = meta_mut(&mut body);
    if m.get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|v| !v.is_empty())
    {
        if caller == Caller::Client {
            let msg = "resourceVersion should not be set on objects to be created";
            return Err(ApiError::new(500, "InternalError", msg));
        }
        m.remove("resourceVersion");
    }
    let name = match m.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => match m.get("generateName").and_then(Value::as_str) {
            Some(prefix) if !prefix.is_empty() => format!("{prefix}{}", suffix(&uid)),
            _ => {
                let why = "metadata.name: Required value: name or generateName is required";
                return Err(ApiError::invalid(res, "", why));
            }
        },
    };
    m.insert("name".into(), Value::String(name.clone()));
    m.insert("uid".into(), Value::String(uid));
    m.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
    m.insert("generation".into(), json!(1));
    m.remove("deletionTimestamp");
    m.remove("managedFields");
    if r.reset_status_on_create && caller == Caller::Client {
        body.as_object_mut()
            .expect("normalized bodies are objects")
            .remove("status");
    }
    let key = key(res, &body, name.clone());
    if store.get(&key).is_some() {
        let msg = format!("{} \"{name}\" already exists", r.plural);
        return Err(ApiError::new(409, "AlreadyExists", msg).about(res, &name));
    }
    Ok(store.commit(key, Some(body)))
}

/// Five characters for `generateName`, from the UID's counter.
fn suffix(uid: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = u64::from_str_radix(&uid[uid.len() - 12..], 16).unwrap_or_default() * 7919;
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % 27) as usize] as char;
            n /= 27;
            c
        })
        .collect()
}

/// `PUT` on an object or its status (and `apply` of a stored object).
pub(crate) fn replace(
    store: &mut Store,
    res: usize,
    ns: Option<&str>,
    name: &str,
    mut body: Value,
    part: Part,
    caller: Caller,
) -> Result<Obj, ApiError> {
    normalize(res, ns, &mut body)?;
    match meta(&body, "name") {
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        _ => {
            meta_mut(&mut body).insert("name".into(), Value::String(name.to_owned()));
        }
    }
    let key = key(res, &body, name.to_owned());
    let stored = store
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(res, name))?;
    let stored_rv = meta(&stored, "resourceVersion").unwrap_or_default();
    match meta(&body, "resourceVersion") {
        Some(rv) if caller == Caller::Client && !rv.is_empty() && rv != stored_rv => {
            let why = "the object has been modified; please apply your changes to the latest version and try again";
            return Err(ApiError::conflict(res, name, why));
        }
        _ => {}
    }
    let mut new = if part == Part::Status {
        let mut new = (*stored).clone();
        set_status(&mut new, body.get("status"));
        new
    } else {
        if RESOURCES[res].status && caller == Caller::Client {
            set_status(&mut body, stored.get("status"));
        }
        carry_metadata(&stored, &mut body);
        body
    };
    meta_mut(&mut new).insert("resourceVersion".into(), Value::String(stored_rv));
    if new == *stored {
        // Like the real server, an update that changes nothing writes nothing.
        return Ok(stored);
    }
    let status_write = part == Part::Status && caller == Caller::Client;
    Ok(store.commit_as(key, Some(new), status_write))
}

fn set_status(obj: &mut Value, status: Option<&Value>) {
    if let Some(o) = obj.as_object_mut() {
        match status {
            Some(s) => o.insert("status".into(), s.clone()),
            None => o.remove("status"),
        };
    }
}

/// Keeps the fields a client cannot change, and bumps `generation` when anything outside
/// `metadata` and `status` changed.
fn carry_metadata(stored: &Value, new: &mut Value) {
    let spec = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("metadata");
            o.remove("status");
        }
        v
    };
    let generation = stored["metadata"]["generation"].as_i64().unwrap_or(1);
    let generation = generation + i64::from(spec(stored) != spec(new));
    let m = meta_mut(new);
    for field in ["uid", "creationTimestamp"] {
        match stored["metadata"].get(field) {
            Some(v) => m.insert(field.into(), v.clone()),
            None => m.remove(field),
        };
    }
    m.insert("generation".into(), json!(generation));
    m.remove("managedFields");
}

/// `PATCH` on an object or its status. Returns the object and whether it was created (a
/// server-side apply of an absent object).
#[allow(clippy::too_many_arguments)]
pub(crate) fn patch(
    store: &mut Store,
    res: usize,
    ns: Option<&str>,
    name: &str,
    kind: PatchKind,
    body: &[u8],
    part: Part,
    field_manager: Option<&str>,
) -> Result<(Obj, bool), ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("body is not UTF-8"))?;
    let doc = match kind {
        PatchKind::Apply => patch::yaml_object(text),
        _ => serde_json::from_str(text).map_err(|e| e.to_string()),
    }
    .map_err(|e| ApiError::bad_request(format!("invalid patch: {e}")))?;
    if kind == PatchKind::Apply {
        if field_manager.is_none_or(str::is_empty) {
            let why = "fieldManager: Required value: is required for apply patch";
            return Err(ApiError::invalid(res, name, why));
        }
        if doc.get("apiVersion").is_none() || doc.get("kind").is_none() {
            let msg = "apiVersion and kind must be set in a server-side apply patch";
            return Err(ApiError::bad_request(msg));
        }
    }
    let key = Key {
        res,
        ns: if RESOURCES[res].namespaced {
            ns.unwrap_or("default").to_owned()
        } else {
            String::new()
        },
        name: name.to_owned(),
    };
    let Some(stored) = store.get(&key).cloned() else {
        if kind == PatchKind::Apply && part == Part::Main {
            let mut doc = doc;
            meta_mut(&mut doc).insert("name".into(), Value::String(name.to_owned()));
            return Ok((create(store, res, ns, doc, Caller::Client)?, true));
        }
        return Err(ApiError::not_found(res, name));
    };
    let mut patched = (*stored).clone();
    match kind {
        PatchKind::Merge | PatchKind::Apply => patch::merge_patch(&mut patched, &doc),
        PatchKind::Strategic => {
            let doc = patch::strategic_as_merge(&doc).map_err(ApiError::bad_request)?;
            patch::merge_patch(&mut patched, &doc);
        }
        PatchKind::Json => patch::json_patch(&mut patched, &doc)
            .map_err(|e| ApiError::invalid(res, name, &format!("the JSON patch failed: {e}")))?,
    }
    let obj = replace(store, res, ns, name, patched, part, Caller::Client)?;
    Ok((obj, false))
}

/// `DELETE` on an object, with the preconditions of the `DeleteOptions` body if any. Returns
/// the object as it was.
pub(crate) fn delete(
    store: &mut Store,
    key: Key,
    options: Option<&Value>,
) -> Result<Obj, ApiError> {
    let (res, name) = (key.res, key.name.clone());
    let stored = store
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(res, &name))?;
    let preconditions = options.and_then(|o| o.get("preconditions"));
    for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
        let want = preconditions
            .and_then(|p| p.get(field))
            .and_then(Value::as_str);
        let have = meta(&stored, field).unwrap_or_default();
        if let Some(want) = want.filter(|w| *w != have) {
            let why = format!(
                "Precondition failed: {label} in precondition: {want}, {label} in object meta: {have}"
            );
            return Err(ApiError::conflict(res, &name, &why));
        }
    }
    store.commit(key, None);
    Ok(stored)
}

/// `DELETE` on a collection: every selected object. Returns them as they were.
pub(crate) fn delete_collection(
    store: &mut Store,
    res: usize,
    ns: Option<&str>,
    selector: &Selector,
) -> Vec<Obj> {
    let doomed: Vec<(Key, Obj)> = store
        .items(res, ns)
        .into_iter()
        .filter(|(_, o)| selector.matches(o))
        .collect();
    for (key, _) in &doomed {
        store.commit(key.clone(), None);
    }
    doomed.into_iter().map(|(_, o)| o).collect()
}

/// The resource of an object handed to the test API; panics (a bug in the test) when unknown.
pub(crate) fn resource_of(obj: &Value) -> (usize, &'static Resource) {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let res = super::kinds::by_kind(api_version, kind).unwrap_or_else(|| {
        panic!("the Kubernetes API fake does not serve apiVersion {api_version:?} kind {kind:?}")
    });
    (res, &RESOURCES[res])
}

/// Now as the API server writes timestamps: RFC 3339, UTC, whole seconds.
fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

//! The HTTP side: URL routing, query parameters, and one handler per verb, answering as the
//! real API server does (JSON bodies, `Status` errors, chunked watch streams).

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::stream;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};

use super::kinds::{self, RESOURCES};
use super::ops::{self, ApiError, Caller, Part};
use super::patch::PatchKind;
use super::select::Selector;
use super::store::{Key, Obj, WatchFrom, WatchMsg, WatchSpec};
use super::{Shared, lock};

pub(crate) type Body = UnsyncBoxBody<Bytes, io::Error>;

/// How long a watch lasts when the client gives no `timeoutSeconds` (the real server picks
/// 30 to 60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Serves one request on a connection accepted at reachability `epoch`. A request on a
/// connection older than the last `set_reachable(false)` is never answered: the connection is
/// about to be reset.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    epoch: u64,
    req: Request<Incoming>,
) -> Result<Response<Body>, io::Error> {
    if shared.reach.borrow().epoch != epoch {
        return std::future::pending().await;
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    lock(&shared.requests).push((req.method().to_string(), path_and_query));
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let query = parse_query(parts.uri.query());
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let request = Req {
        method: &parts.method,
        query: &query,
        content_type,
        body: &body,
    };
    Ok(handle(&shared, parts.uri.path(), &request).unwrap_or_else(|e| error(&e)))
}

/// What a handler needs of a request.
struct Req<'a> {
    method: &'a Method,
    query: &'a [(String, String)],
    content_type: &'a str,
    body: &'a [u8],
}

impl Req<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter as Go's `strconv.ParseBool` reads it.
    fn flag(&self, name: &str) -> bool {
        matches!(
            self.param(name),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True")
        )
    }

    fn json(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(self.body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
    }
}

/// Where a URL points.
#[derive(Debug)]
enum Route {
    Health,
    Version,
    CoreVersions,
    Groups,
    Resources(String, String),
    Collection {
        res: usize,
        ns: Option<String>,
    },
    Object {
        res: usize,
        ns: Option<String>,
        name: String,
        part: Part,
    },
}

fn not_found() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn route(path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["healthz" | "livez" | "readyz"] => Ok(Route::Health),
        ["version"] => Ok(Route::Version),
        ["api"] => Ok(Route::CoreVersions),
        ["apis"] => Ok(Route::Groups),
        ["api", v] => Ok(Route::Resources(String::new(), (*v).to_owned())),
        ["apis", g, v] => Ok(Route::Resources((*g).to_owned(), (*v).to_owned())),
        ["api", v, rest @ ..] => resource_route("", v, rest),
        ["apis", g, v, rest @ ..] => resource_route(g, v, rest),
        _ => Err(not_found()),
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Result<Route, ApiError> {
    // `namespaces/{ns}/status` is the Namespace's status, not a resource named "status".
    let (ns, rest) = match rest {
        ["namespaces", ns, more @ ..] if !more.is_empty() && more[0] != "status" => {
            (Some((*ns).to_owned()), more)
        }
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return Err(not_found()),
    };
    let res = kinds::by_plural(group, version, plural).ok_or_else(not_found)?;
    let r = &RESOURCES[res];
    if ns.is_some() && !r.namespaced || name.is_some() && r.namespaced && ns.is_none() {
        return Err(not_found());
    }
    let part = match sub {
        None => Part::Main,
        Some("status") if r.status => Part::Status,
        Some(_) => return Err(not_found()),
    };
    Ok(match name {
        None => Route::Collection { res, ns },
        Some(name) => Route::Object {
            res,
            ns,
            name: name.to_owned(),
            part,
        },
    })
}

fn handle(shared: &Shared, path: &str, req: &Req<'_>) -> Result<Response<Body>, ApiError> {
    let route = route(path)?;
    if let Route::Collection { res, .. } | Route::Object { res, .. } = &route
        && lock(&shared.forbidden).contains(res)
    {
        let r = &RESOURCES[*res];
        let verb = match *req.method {
            Method::GET if req.flag("watch") => "watch",
            Method::GET if matches!(route, Route::Collection { .. }) => "list",
            Method::GET => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            _ => "delete",
        };
        let group = if r.group.is_empty() { "" } else { r.group };
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "{}.{group} is forbidden: User \"system:serviceaccount:test:fake\" cannot {verb} resource \"{}\" in API group \"{group}\" at the cluster scope",
                r.plural, r.plural
            ),
        ));
    }
    let is_write = req.method != Method::GET;
    if is_write && req.param("dryRun").is_some() {
        let msg = "the Kubernetes API fake does not implement dryRun";
        return Err(ApiError::bad_request(msg));
    }
    let method_not_allowed = || {
        let msg = "the server does not allow this method on the requested resource";
        ApiError::new(405, "MethodNotAllowed", msg)
    };
    if is_write && !matches!(route, Route::Collection { .. } | Route::Object { .. }) {
        return Err(method_not_allowed());
    }
    match route {
        Route::Health => Ok(text(200, "ok")),
        Route::Version => Ok(json_ok(&kinds::version())),
        Route::CoreVersions => Ok(json_ok(&kinds::core_versions(&shared.addr.to_string()))),
        Route::Groups => Ok(json_ok(&kinds::group_list())),
        Route::Resources(g, v) => kinds::resource_list(&g, &v)
            .map(|l| json_ok(&l))
            .ok_or_else(not_found),
        Route::Collection { res, ns } => {
            let r = &RESOURCES[res];
            let selector = || {
                Selector::parse(r, req.param("labelSelector"), req.param("fieldSelector"))
                    .map_err(ApiError::bad_request)
            };
            match *req.method {
                Method::GET if req.flag("watch") => watch(shared, res, ns, selector()?, req),
                Method::GET => list(shared, res, ns.as_deref(), &selector()?, req),
                Method::POST if ns.is_some() || !r.namespaced => {
                    let mut store = lock(&shared.store);
                    let obj =
                        ops::create(&mut store, res, ns.as_deref(), req.json()?, Caller::Client)?;
                    Ok(json(201, &obj))
                }
                Method::DELETE => {
                    let mut store = lock(&shared.store);
                    let deleted =
                        ops::delete_collection(&mut store, res, ns.as_deref(), &selector()?);
                    let rv = store.rv();
                    Ok(json_ok(&list_body(res, rv, None, deleted)))
                }
                _ => Err(method_not_allowed()),
            }
        }
        Route::Object {
            res,
            ns,
            name,
            part,
        } => {
            let ns = ns.as_deref();
            let mut store = lock(&shared.store);
            match *req.method {
                Method::GET => {
                    let key = Key {
                        res,
                        ns: ns.unwrap_or_default().to_owned(),
                        name,
                    };
                    let obj = store
                        .get(&key)
                        .ok_or_else(|| ApiError::not_found(res, &key.name))?;
                    Ok(json_ok(obj))
                }
                Method::PUT => {
                    let body = req.json()?;
                    let obj = ops::replace(&mut store, res, ns, &name, body, part, Caller::Client)?;
                    Ok(json_ok(&obj))
                }
                Method::PATCH => {
                    let kind = PatchKind::from_content_type(req.content_type).ok_or_else(|| {
                        let msg = format!(
                            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {:?})",
                            req.content_type
                        );
                        ApiError::new(415, "UnsupportedMediaType", msg)
                    })?;
                    let manager = req.param("fieldManager");
                    let (obj, created) =
                        ops::patch(&mut store, res, ns, &name, kind, req.body, part, manager)?;
                    Ok(json(if created { 201 } else { 200 }, &obj))
                }
                Method::DELETE if part == Part::Main => {
                    let options = if req.body.is_empty() {
                        None
                    } else {
                        Some(req.json()?)
                    };
                    let key = Key {
                        res,
                        ns: ns.unwrap_or_default().to_owned(),
                        name,
                    };
                    let obj = ops::delete(&mut store, key, options.as_ref())?;
                    Ok(json_ok(&obj))
                }
                _ => Err(method_not_allowed()),
            }
        }
    }
}

/// A list body: items without `apiVersion` and `kind`, as the real server sends them.
fn list_body(res: usize, rv: u64, cont: Option<String>, items: Vec<Obj>) -> Value {
    let r = &RESOURCES[res];
    let items: Vec<Value> = items
        .into_iter()
        .map(|o| {
            let mut o = (*o).clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("apiVersion");
                m.remove("kind");
            }
            o
        })
        .collect();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        metadata["continue"] = Value::String(c);
    }
    json!({"kind": r.list_kind(), "apiVersion": r.api_version(), "metadata": metadata, "items": items})
}

fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

fn list(
    shared: &Shared,
    res: usize,
    ns: Option<&str>,
    selector: &Selector,
    req: &Req<'_>,
) -> Result<Response<Body>, ApiError> {
    let limit = match req.param("limit") {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        )
        .filter(|l| *l > 0),
        None => None,
    };
    let store = lock(&shared.store);
    let (rv, after) = match req.param("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, key) = decode_continue(res, token)
                .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
            (rv, Some(key))
        }
        None => match (
            req.param("resourceVersion"),
            req.param("resourceVersionMatch"),
        ) {
            (Some(rv), Some("Exact")) => {
                let rv = parse_rv(rv)?;
                if rv > store.rv() {
                    let msg = format!("Too large resource version: {rv}, current: {}", store.rv());
                    return Err(ApiError::new(504, "Timeout", msg));
                }
                (rv, None)
            }
            (_, None | Some("" | "NotOlderThan")) => (store.rv(), None),
            (_, Some(m)) => {
                return Err(ApiError::bad_request(format!(
                    "invalid resourceVersionMatch {m:?}"
                )));
            }
        },
    };
    let items = store.items_at(res, ns, rv).map_err(|compacted| {
        ApiError::expired(if after.is_some() {
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".to_owned()
        } else {
            format!("too old resource version: {rv} ({compacted})")
        })
    })?;
    let mut page = Vec::new();
    let mut cont = None;
    for (key, obj) in items {
        if after.as_ref().is_some_and(|a| key <= *a) || !selector.matches(&obj) {
            continue;
        }
        if limit.is_some_and(|l| page.len() == l) {
            cont = page
                .last()
                .map(|(k, _): &(Key, Obj)| encode_continue(rv, k));
            break;
        }
        page.push((key, obj));
    }
    let items = page.into_iter().map(|(_, o)| o).collect();
    Ok(json_ok(&list_body(res, rv, cont, items)))
}

fn watch(
    shared: &Shared,
    res: usize,
    ns: Option<String>,
    selector: Selector,
    req: &Req<'_>,
) -> Result<Response<Body>, ApiError> {
    let bookmarks = req.flag("allowWatchBookmarks");
    let initial_events = req.flag("sendInitialEvents");
    if initial_events && !bookmarks {
        let msg = "allowWatchBookmarks: Required value: sendInitialEvents requires setting allowWatchBookmarks to true";
        return Err(ApiError::new(422, "Invalid", msg));
    }
    let timeout = match req.param("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let from = match req.param("resourceVersion") {
        _ if initial_events => WatchFrom::Now,
        None | Some("" | "0") => WatchFrom::Now,
        Some(rv) => WatchFrom::After(parse_rv(rv)?),
    };
    let spec = WatchSpec {
        res,
        ns,
        selector,
        bookmarks,
    };
    let opened = lock(&shared.store).watch(spec, from, initial_events);
    let body = match opened {
        Ok(rx) => {
            let deadline = tokio::time::Instant::now() + timeout;
            let frames = stream::unfold(Some(rx), move |rx| async move {
                let mut rx = rx?;
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(WatchMsg::Line(line))) => Some((Ok(Frame::data(line)), Some(rx))),
                    // Send nothing more: the connection is about to be reset.
                    Ok(Some(WatchMsg::Cut)) => std::future::pending().await,
                    // Timed out, or the server is going away: end the stream cleanly.
                    Ok(None) | Err(_) => None,
                }
            });
            BodyExt::boxed_unsync(StreamBody::new(frames))
        }
        Err(compacted) => {
            let rv = req.param("resourceVersion").unwrap_or_default();
            let status = ApiError::expired(format!("too old resource version: {rv} ({compacted})"));
            let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": status.status()}))
                .expect("JSON values serialize");
            line.push(b'\n');
            full(Bytes::from(line))
        }
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("a valid response"))
}

/// Continue tokens are opaque to clients: hex of `rv/namespace/name`.
fn encode_continue(rv: u64, key: &Key) -> String {
    format!("{rv}/{}/{}", key.ns, key.name)
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(res: usize, token: &str) -> Option<(u64, Key)> {
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let mut parts = text.splitn(3, '/');
    let rv = parts.next()?.parse().ok()?;
    let ns = parts.next()?.to_owned();
    let name = parts.next()?.to_owned();
    Some((rv, Key { res, ns, name }))
}

/// `application/x-www-form-urlencoded` query pairs, decoded.
fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'%', Some(b)) => {
                    out.push(b);
                    i += 3;
                }
                (b'+', _) => {
                    out.push(b' ');
                    i += 1;
                }
                (b, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn json(code: u16, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).expect("JSON values serialize");
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(Bytes::from(body)))
        .expect("a valid response")
}

fn json_ok(v: &Value) -> Response<Body> {
    json(200, v)
}

fn text(code: u16, s: &'static str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(full(Bytes::from_static(s.as_bytes())))
        .expect("a valid response")
}

fn error(e: &ApiError) -> Response<Body> {
    json(e.code, &e.status())
}

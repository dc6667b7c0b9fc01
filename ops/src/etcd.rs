//! How fedplane binaries reach etcd: the same flags (and config-file section) everywhere, TLS
//! and password authentication, the connect options, and the requests every binary makes
//! alike (bounded in time, paged prefix reads, the message size limit).

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, KeyValue, SortOrder, SortTarget,
    TlsOptions,
};
use serde::Deserialize;

/// Environment variable that carries the etcd password (never a flag: argv is world-readable).
pub const PASSWORD_ENV: &str = "FEDPLANE_ETCD_PASSWORD";
/// Largest gRPC message we accept: a page of large values, or a big watch batch, must not make
/// a read fail forever on tonic's 4 MiB default.
pub const MAX_MESSAGE: usize = 64 << 20;
/// Bound on one unary etcd request (a range page, a transaction, a lease lookup), so a hung
/// connection is noticed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why one etcd request failed; each binary wraps it in its own error, with its context.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No answer within [`REQUEST_TIMEOUT`].
    #[error("timed out after {REQUEST_TIMEOUT:?}")]
    Timeout,
    /// etcd, or the connection to it, answered with an error.
    #[error(transparent)]
    Etcd(#[from] etcd_client::Error),
}

/// Runs one etcd request, bounded by [`REQUEST_TIMEOUT`].
pub async fn bounded<T>(
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, RequestError> {
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .map_err(|_| RequestError::Timeout)?
        .map_err(RequestError::Etcd)
}

/// The key range of everything under `prefix` (normalised, no trailing `/`): from `prefix/` up
/// to, not including, `prefix0` (`'0'` follows `'/'` in ASCII, so `prefix-b` stays out).
pub fn prefix_range(prefix: &str) -> (String, String) {
    (format!("{prefix}/"), format!("{prefix}0"))
}

/// How [`read_prefix`] pages.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    /// Keys per range request.
    pub page: i64,
    /// Ask etcd to sort by key, ascending (else its own order, which is by key too).
    pub sort_by_key: bool,
}

/// What a [`read_prefix`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixRead {
    /// The revision every page was read at.
    pub revision: i64,
    /// The etcd cluster that answered.
    pub cluster_id: u64,
    /// Range requests made.
    pub pages: usize,
}

/// Reads every key under `prefix` at one revision (the first page's), page by page, each
/// request bounded by [`REQUEST_TIMEOUT`] and accepting up to [`MAX_MESSAGE`]. `each` gets the
/// revision and every page's keys, in key order.
pub async fn read_prefix(
    client: &Client,
    prefix: &str,
    paging: Paging,
    mut each: impl FnMut(i64, &[KeyValue]),
) -> Result<PrefixRead, RequestError> {
    let (start, end) = prefix_range(prefix);
    let mut start = start.into_bytes();
    let mut kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
    let mut read = PrefixRead {
        revision: 0,
        cluster_id: 0,
        pages: 0,
    };
    loop {
        read.pages += 1;
        let mut opts = GetOptions::new()
            .with_range(end.clone())
            .with_limit(paging.page);
        if paging.sort_by_key {
            opts = opts.with_sort(SortTarget::Key, SortOrder::Ascend);
        }
        if read.revision > 0 {
            opts = opts.with_revision(read.revision);
        }
        let resp = bounded(kv.get(start.clone(), Some(opts))).await?;
        if read.revision == 0 {
            read.revision = resp.header().map_or(0, |h| h.revision());
            read.cluster_id = resp.header().map_or(0, |h| h.cluster_id());
        }
        each(read.revision, resp.kvs());
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => break,
        }
    }
    Ok(read)
}

/// The etcd flags, also the `etcd:` section of a config file (same names without `etcd-`).
/// Unknown fields in the file are errors, so a typo is not silently ignored.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdFlags {
    /// etcd endpoints, comma separated; any reachable one is used [default: http://127.0.0.1:2379]
    #[arg(
        long = "etcd-endpoints",
        value_name = "URL[,URL]...",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// etcd key prefix of the SkyDNS records [default: /skydns]
    #[arg(long = "etcd-prefix", value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// CA certificate (PEM) to verify etcd's TLS certificate; enables TLS
    #[arg(long = "etcd-ca", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd mutual TLS; needs --etcd-key
    #[arg(long = "etcd-cert", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client key (PEM) for etcd mutual TLS; needs --etcd-cert
    #[arg(long = "etcd-key", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// etcd user name for password authentication [default: none]
    #[arg(long = "etcd-username", value_name = "USER")]
    pub username: Option<String>,
    /// File holding the etcd password (trailing newline ignored); else FEDPLANE_ETCD_PASSWORD
    #[arg(long = "etcd-password-file", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// TLS material for etcd, read from files.
#[derive(Clone)]
pub struct EtcdTls {
    /// CA certificate PEM.
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key PEM.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca", &self.ca.is_some())
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

/// How to reach etcd, resolved and checked.
#[derive(Clone)]
pub struct EtcdSettings {
    /// Endpoint URLs.
    pub endpoints: Vec<String>,
    /// Normalised key prefix (`/skydns`).
    pub prefix: String,
    /// TLS, if configured.
    pub tls: Option<EtcdTls>,
    /// User and password, if configured.
    pub auth: Option<(String, String)>,
}

impl std::fmt::Debug for EtcdSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSettings")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("tls", &self.tls)
            .field("user", &self.auth.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// `skydns/` → `/skydns`; `/` → `` (the whole keyspace).
pub fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

impl EtcdFlags {
    /// Each setting from `self`, else from `fallback` (flags over the config file).
    pub fn or(self, fallback: Self) -> Self {
        Self {
            endpoints: if self.endpoints.is_empty() {
                fallback.endpoints
            } else {
                self.endpoints
            },
            prefix: self.prefix.or(fallback.prefix),
            ca: self.ca.or(fallback.ca),
            cert: self.cert.or(fallback.cert),
            key: self.key.or(fallback.key),
            username: self.username.or(fallback.username),
            password_file: self.password_file.or(fallback.password_file),
        }
    }

    /// Reads the TLS files and the password and checks that they go together.
    /// `password_env` is the value of [`PASSWORD_ENV`], passed in so tests need no globals.
    pub fn resolve(self, password_env: Option<String>) -> Result<EtcdSettings, String> {
        let endpoints = if self.endpoints.is_empty() {
            vec!["http://127.0.0.1:2379".to_owned()]
        } else {
            self.endpoints
        };
        let tls = match (self.ca, self.cert, self.key) {
            (None, None, None) => None,
            (ca, cert, key) => {
                let identity = match (cert, key) {
                    (Some(c), Some(k)) => Some((
                        read(&c, "etcd client certificate")?,
                        read(&k, "etcd client key")?,
                    )),
                    (None, None) => None,
                    _ => return Err("etcd client TLS needs both --etcd-cert and --etcd-key".into()),
                };
                let ca = ca.map(|p| read(&p, "etcd CA certificate")).transpose()?;
                Some(EtcdTls { ca, identity })
            }
        };
        let password = match self.password_file {
            Some(p) => Some(
                String::from_utf8(read(&p, "etcd password file")?)
                    .map_err(|_| format!("etcd password file {} is not UTF-8", p.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
            None => password_env,
        };
        let auth = match (self.username, password) {
            (Some(u), Some(p)) => Some((u, p)),
            (Some(u), None) => {
                return Err(format!(
                    "etcd user {u:?} has no password: set {PASSWORD_ENV} or --etcd-password-file"
                ));
            }
            (None, _) => None,
        };
        Ok(EtcdSettings {
            endpoints,
            prefix: normalize_prefix(self.prefix.as_deref().unwrap_or("/skydns")),
            tls,
            auth,
        })
    }
}

impl EtcdSettings {
    /// Connect options: short connect timeout, keep-alives, TLS and credentials, and
    /// require-leader (a member cut off from the quorum must not serve a stale view).
    pub fn connect_options(&self) -> ConnectOptions {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some((user, password)) = &self.auth {
            opts = opts.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            let mut t = TlsOptions::new();
            if let Some(ca) = &tls.ca {
                t = t.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.identity {
                t = t.identity(Identity::from_pem(cert, key));
            }
            opts = opts.with_tls(t);
        }
        opts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(normalize_prefix("skydns/"), "/skydns");
        assert_eq!(normalize_prefix("/a/b/"), "/a/b");
        assert_eq!(normalize_prefix("/"), "");
    }

    #[test]
    fn flags_win_over_the_file_and_a_user_needs_a_password() {
        let flags = EtcdFlags {
            prefix: Some("/other/".into()),
            ..EtcdFlags::default()
        };
        let file = EtcdFlags {
            endpoints: vec!["http://10.0.0.5:2379".into()],
            prefix: Some("/skydns".into()),
            ..EtcdFlags::default()
        };
        let s = flags.or(file).resolve(None).expect("valid");
        assert_eq!(s.prefix, "/other");
        assert_eq!(s.endpoints, ["http://10.0.0.5:2379"]);
        let e = EtcdFlags {
            username: Some("u".into()),
            ..EtcdFlags::default()
        }
        .resolve(None)
        .expect_err("no password");
        assert!(e.contains(PASSWORD_ENV), "{e}");
        let e = EtcdFlags {
            cert: Some("/c.pem".into()),
            ..EtcdFlags::default()
        }
        .resolve(None)
        .expect_err("cert without key");
        assert!(e.contains("--etcd-key"), "{e}");
    }
}

//! Settings from the command line and an optional YAML file. The command line wins over the
//! file, and the file over the defaults; every flag is documented in `--help`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use hickory_proto::rr::Name;
use serde::Deserialize;

use crate::answer::DEFAULT_MAX_UDP_PAYLOAD;
use crate::key::normalize_prefix;

/// Environment variable that carries the etcd password (never a flag: argv is world-readable).
pub const PASSWORD_ENV: &str = "FEDPLANE_ETCD_PASSWORD";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid YAML of the expected shape.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (names the unknown or mistyped field).
        message: String,
    },
    /// A setting has a value that cannot work.
    #[error("{0}")]
    Invalid(String),
}

/// Authoritative DNS for the federation zone, answering from SkyDNS records in etcd.
///
/// Reads the records under the etcd prefix once, keeps them current with one etcd watch, and
/// answers from memory: queries never wait for etcd, and answers continue from the last
/// snapshot while etcd is unreachable. The etcd password is read from the environment variable
/// FEDPLANE_ETCD_PASSWORD or from --etcd-password-file, never from the command line.
#[derive(Debug, Parser)]
#[command(name = "fedplane-dns", version, about, long_about)]
pub struct Cli {
    /// Zone to serve authoritatively, e.g. example.com. (repeatable) [default: the zones of the
    /// config file; at least one is required]
    #[arg(long = "zone", value_name = "ZONE")]
    pub zones: Vec<String>,
    /// Address to serve DNS on, UDP and TCP (repeatable) [default: 0.0.0.0:53 and [::]:53]
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,
    /// etcd endpoints, comma separated; any reachable one is used [default: http://127.0.0.1:2379]
    #[arg(long, value_name = "URL[,URL]...", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// etcd key prefix of the SkyDNS records [default: /skydns]
    #[arg(long, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// CA certificate (PEM) to verify etcd's TLS certificate; enables TLS
    #[arg(long, value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd mutual TLS; needs --etcd-key
    #[arg(long, value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    /// Client key (PEM) for etcd mutual TLS; needs --etcd-cert
    #[arg(long, value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user name for password authentication [default: none]
    #[arg(long, value_name = "USER")]
    pub etcd_username: Option<String>,
    /// File holding the etcd password (trailing newline ignored); else FEDPLANE_ETCD_PASSWORD
    #[arg(long, value_name = "FILE")]
    pub etcd_password_file: Option<PathBuf>,
    /// Address for /metrics, /healthz and /readyz [default: 0.0.0.0:9153]
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// UDP receive loops per listen address, each on its own SO_REUSEPORT socket
    /// [default: number of CPUs]
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Largest UDP response we send and advertise in EDNS [default: 1232]
    #[arg(long, value_name = "BYTES")]
    pub max_udp_payload: Option<u16>,
    /// Close a TCP connection idle this long, e.g. 10s or 500ms [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub tcp_idle_timeout: Option<Duration>,
    /// On SIGTERM, how long open TCP connections may finish before exit [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_grace: Option<Duration>,
    /// Log format: text or json [default: text]
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// YAML file with the same settings (see dns/fedplane-dns.example.yaml); flags win
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The YAML config file. Unknown fields are errors, so a typo is not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Zones to serve.
    #[serde(default)]
    pub zones: Vec<String>,
    /// DNS listen addresses.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// /metrics, /healthz, /readyz address.
    pub http: Option<SocketAddr>,
    /// UDP workers per listen address.
    pub workers: Option<usize>,
    /// Largest UDP response.
    pub max_udp_payload: Option<u16>,
    /// TCP idle timeout, e.g. `10s`.
    pub tcp_idle_timeout: Option<String>,
    /// Shutdown grace, e.g. `5s`.
    pub shutdown_grace: Option<String>,
    /// Log format.
    pub log_format: Option<String>,
    /// etcd connection.
    #[serde(default)]
    pub etcd: FileEtcd,
}

/// The `etcd:` section of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEtcd {
    /// Endpoint URLs.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Key prefix.
    pub prefix: Option<String>,
    /// CA certificate file.
    pub ca: Option<PathBuf>,
    /// Client certificate file.
    pub cert: Option<PathBuf>,
    /// Client key file.
    pub key: Option<PathBuf>,
    /// User name.
    pub username: Option<String>,
    /// Password file.
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

/// How to reach etcd.
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

/// Everything the server needs, resolved and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Zones, lowercase and fully qualified.
    pub zones: Vec<Name>,
    /// DNS listen addresses.
    pub listen: Vec<SocketAddr>,
    /// HTTP address.
    pub http: SocketAddr,
    /// UDP workers per address.
    pub workers: usize,
    /// Largest UDP response.
    pub max_udp_payload: u16,
    /// TCP idle timeout.
    pub tcp_idle_timeout: Duration,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// `json` or `text`.
    pub log_format: String,
    /// etcd.
    pub etcd: EtcdSettings,
}

/// Parses `10s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("invalid duration {s:?}: use ms, s or m")),
    }
}

/// Reads a YAML config file.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError::Invalid(format!("cannot read {what} {}: {e}", path.display())))
}

impl Settings {
    /// Resolves the command line over the config file over the defaults.
    /// `password_env` is the value of [`PASSWORD_ENV`], passed in so tests need no globals.
    pub fn resolve(cli: Cli, password_env: Option<String>) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        let pick = |a: Vec<String>, b: Vec<String>| if a.is_empty() { b } else { a };

        let zone_strings = pick(cli.zones, file.zones);
        if zone_strings.is_empty() {
            return Err(ConfigError::Invalid(
                "no zone to serve: give --zone example.com. or zones: in --config".into(),
            ));
        }
        let zones = zone_strings
            .iter()
            .map(|z| {
                let mut n = Name::from_ascii(z)
                    .map_err(|e| {
                        ConfigError::Invalid(format!("zone {z:?} is not a domain name: {e}"))
                    })?
                    .to_lowercase();
                n.set_fqdn(true);
                Ok(n)
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;

        let listen = if !cli.listen.is_empty() {
            cli.listen
        } else if !file.listen.is_empty() {
            file.listen
        } else {
            vec![
                SocketAddr::from(([0, 0, 0, 0], 53)),
                SocketAddr::from(([0u16; 8], 53)),
            ]
        };
        let duration =
            |flag: Option<Duration>, file: Option<String>, name: &str, default: u64| match (
                flag, file,
            ) {
                (Some(d), _) => Ok(d),
                (None, Some(s)) => {
                    parse_duration(&s).map_err(|e| ConfigError::Invalid(format!("{name}: {e}")))
                }
                (None, None) => Ok(Duration::from_secs(default)),
            };
        let workers = cli
            .workers
            .or(file.workers)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        if workers == 0 {
            return Err(ConfigError::Invalid("workers must be at least 1".into()));
        }
        let max_udp_payload = cli
            .max_udp_payload
            .or(file.max_udp_payload)
            .unwrap_or(DEFAULT_MAX_UDP_PAYLOAD);
        if max_udp_payload < 512 {
            return Err(ConfigError::Invalid(format!(
                "max-udp-payload {max_udp_payload} is below the DNS minimum of 512"
            )));
        }

        let fe = file.etcd;
        let endpoints = pick(cli.etcd_endpoints, fe.endpoints);
        let endpoints = if endpoints.is_empty() {
            vec!["http://127.0.0.1:2379".to_owned()]
        } else {
            endpoints
        };
        let ca = cli.etcd_ca.or(fe.ca);
        let cert = cli.etcd_cert.or(fe.cert);
        let key = cli.etcd_key.or(fe.key);
        let tls = match (ca, cert, key) {
            (None, None, None) => None,
            (ca, cert, key) => {
                let identity = match (cert, key) {
                    (Some(c), Some(k)) => Some((
                        read(&c, "etcd client certificate")?,
                        read(&k, "etcd client key")?,
                    )),
                    (None, None) => None,
                    _ => {
                        return Err(ConfigError::Invalid(
                            "etcd client TLS needs both --etcd-cert and --etcd-key".into(),
                        ));
                    }
                };
                let ca = ca.map(|p| read(&p, "etcd CA certificate")).transpose()?;
                Some(EtcdTls { ca, identity })
            }
        };
        let username = cli.etcd_username.or(fe.username);
        let password = match cli.etcd_password_file.or(fe.password_file) {
            Some(p) => Some(
                String::from_utf8(read(&p, "etcd password file")?)
                    .map_err(|_| {
                        ConfigError::Invalid(format!(
                            "etcd password file {} is not UTF-8",
                            p.display()
                        ))
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
            None => password_env,
        };
        let auth = match (username, password) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            (Some(u), None) => {
                return Err(ConfigError::Invalid(format!(
                    "etcd user {u:?} has no password: set {PASSWORD_ENV} or --etcd-password-file"
                )));
            }
            (None, Some(_)) => None,
        };

        Ok(Self {
            zones,
            listen,
            http: cli
                .http
                .or(file.http)
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 9153))),
            workers,
            max_udp_payload,
            tcp_idle_timeout: duration(
                cli.tcp_idle_timeout,
                file.tcp_idle_timeout,
                "tcp_idle_timeout",
                10,
            )?,
            shutdown_grace: duration(cli.shutdown_grace, file.shutdown_grace, "shutdown_grace", 5)?,
            log_format: cli
                .log_format
                .or(file.log_format)
                .unwrap_or_else(|| "text".into()),
            etcd: EtcdSettings {
                endpoints,
                prefix: normalize_prefix(
                    cli.etcd_prefix
                        .or(fe.prefix)
                        .as_deref()
                        .unwrap_or("/skydns"),
                ),
                tls,
                auth,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("fedplane-dns").chain(args.iter().copied()))
            .expect("parses")
    }

    #[test]
    fn defaults_fit_a_pod() {
        let s = Settings::resolve(cli(&["--zone", "Example.com"]), None).expect("valid");
        assert_eq!(s.zones, [Name::from_ascii("example.com.").expect("name")]);
        assert_eq!(s.listen.len(), 2);
        assert_eq!(s.http.port(), 9153);
        assert_eq!(s.etcd.prefix, "/skydns");
        assert_eq!(s.etcd.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(s.max_udp_payload, 1232);
    }

    #[test]
    fn the_example_config_file_loads_and_flags_win() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fedplane-dns.example.yaml");
        let s = Settings::resolve(cli(&["--config", path, "--etcd-prefix", "/other/"]), None)
            .expect("valid");
        assert_eq!(s.zones.len(), 1);
        assert_eq!(s.etcd.prefix, "/other");
        assert_eq!(s.tcp_idle_timeout, Duration::from_secs(10));
    }

    #[test]
    fn unknown_fields_and_missing_zone_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, "zones: [example.com.]\nlisten_typo: []\n").expect("write");
        let err = Settings::resolve(cli(&["--config", p.to_str().expect("utf8")]), None)
            .expect_err("invalid");
        assert!(err.to_string().contains("listen_typo"), "{err}");
        let err = Settings::resolve(cli(&[]), None).expect_err("no zone");
        assert!(err.to_string().contains("--zone"), "{err}");
        let err = Settings::resolve(cli(&["--zone", "a.", "--etcd-username", "u"]), None)
            .expect_err("no pw");
        assert!(err.to_string().contains(PASSWORD_ENV), "{err}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("7h").is_err());
    }
}

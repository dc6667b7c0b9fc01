//! Settings from the command line and an optional YAML file. The command line wins over the
//! file, and the file over the defaults; every flag is documented in `--help`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use hickory_proto::rr::Name;
use serde::Deserialize;

use crate::answer::DEFAULT_MAX_UDP_PAYLOAD;

use fedplane_ops::etcd::EtcdFlags;
pub use fedplane_ops::etcd::{EtcdSettings, PASSWORD_ENV};
pub use fedplane_ops::parse_duration;

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
    #[command(flatten)]
    pub etcd: EtcdFlags,
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
    /// On SIGTERM, how long /readyz fails while every DNS socket keeps answering, so load
    /// balancers and kube-proxy stop sending first; 0 closes at once. A second SIGTERM or
    /// SIGINT ends it early. Lameduck plus --shutdown-grace must stay below the pod's
    /// terminationGracePeriodSeconds (15 s in deploy/) [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lameduck: Option<Duration>,
    /// After the lameduck, how long open TCP connections may finish before exit [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_grace: Option<Duration>,
    /// Log format: text or json [default: text]
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Directory for the last snapshot of the records (created if missing; one per instance).
    /// It is rewritten atomically at most every 30 s while records change; when etcd cannot be
    /// loaded within 3 s of start, the saved records are served (ready, with
    /// fedplane_dns_serving_from_disk 1 and their age in fedplane_dns_state_age_seconds) until
    /// etcd answers [default: none, nothing saved]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
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
    /// Lameduck, e.g. `5s`.
    pub lameduck: Option<String>,
    /// Shutdown grace, e.g. `5s`.
    pub shutdown_grace: Option<String>,
    /// Log format.
    pub log_format: Option<String>,
    /// Directory for the snapshot of the records on disk.
    pub state_dir: Option<PathBuf>,
    /// etcd connection.
    #[serde(default)]
    pub etcd: EtcdFlags,
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
    /// How long DNS keeps answering after SIGTERM, while /readyz fails.
    pub lameduck: Duration,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// `json` or `text`.
    pub log_format: String,
    /// Where the snapshot of the records is kept on disk, if anywhere.
    pub state_dir: Option<PathBuf>,
    /// etcd.
    pub etcd: EtcdSettings,
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
                if crate::key::name_to_key("", &n).is_none() {
                    return Err(ConfigError::Invalid(format!(
                        "zone {z:?} has a label no etcd key can hold (/ . \\ spaces, non-ASCII)"
                    )));
                }
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

        let etcd = cli
            .etcd
            .or(file.etcd)
            .resolve(password_env)
            .map_err(ConfigError::Invalid)?;

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
            lameduck: duration(cli.lameduck, file.lameduck, "lameduck", 5)?,
            shutdown_grace: duration(cli.shutdown_grace, file.shutdown_grace, "shutdown_grace", 5)?,
            log_format: cli
                .log_format
                .or(file.log_format)
                .unwrap_or_else(|| "text".into()),
            state_dir: cli.state_dir.or(file.state_dir),
            etcd,
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
        assert_eq!(s.lameduck, Duration::from_secs(5));
    }

    #[test]
    fn lameduck_comes_from_the_config_file_unless_the_flag_sets_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.yaml");
        let path = p.to_str().expect("utf8");
        std::fs::write(&p, "zones: [example.com.]\nlameduck: 2500ms\n").expect("write");
        let s = Settings::resolve(cli(&["--config", path]), None).expect("valid");
        assert_eq!(s.lameduck, Duration::from_millis(2500));
        let s =
            Settings::resolve(cli(&["--config", path, "--lameduck", "0"]), None).expect("valid");
        assert_eq!(
            s.lameduck,
            Duration::ZERO,
            "the flag wins, and 0 is allowed"
        );
        std::fs::write(&p, "zones: [example.com.]\nlameduck: soon\n").expect("write");
        let err = Settings::resolve(cli(&["--config", path]), None).expect_err("invalid");
        assert!(err.to_string().contains("lameduck"), "{err}");
    }

    #[test]
    fn the_example_config_file_loads_and_flags_win() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fedplane-dns.example.yaml");
        let s = Settings::resolve(cli(&["--config", path, "--etcd-prefix", "/other/"]), None)
            .expect("valid");
        assert_eq!(s.zones.len(), 1);
        assert_eq!(s.etcd.prefix, "/other");
        assert_eq!(s.tcp_idle_timeout, Duration::from_secs(10));
        assert_eq!(s.lameduck, Duration::from_secs(5));
    }

    #[test]
    fn state_dir_comes_from_the_flag_or_the_config_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.yaml");
        let path = p.to_str().expect("utf8");
        let s = Settings::resolve(cli(&["--zone", "a."]), None).expect("valid");
        assert_eq!(s.state_dir, None, "nothing saved by default");
        std::fs::write(&p, "zones: [example.com.]\nstate_dir: /var/lib/x\n").expect("write");
        let s = Settings::resolve(cli(&["--config", path]), None).expect("valid");
        assert_eq!(s.state_dir, Some(PathBuf::from("/var/lib/x")));
        let s =
            Settings::resolve(cli(&["--config", path, "--state-dir", "/y"]), None).expect("valid");
        assert_eq!(s.state_dir, Some(PathBuf::from("/y")), "the flag wins");
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
    fn a_zone_no_etcd_key_can_spell_is_refused() {
        // (hickory already refuses `/`, spaces and non-ASCII in a name.)
        let err = Settings::resolve(cli(&["--zone", r"a\.b.example."]), None).expect_err("refused");
        assert!(err.to_string().contains("no etcd key"), "{err}");
    }
}

//! Settings from the command line and an optional YAML file. The command line wins over the
//! file, and the file over the defaults; every flag is documented in `--help`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use hickory_proto::rr::Name;
use serde::Deserialize;

use crate::acl::Acl;
use crate::answer::DEFAULT_MAX_UDP_PAYLOAD;
use crate::catalog::Catalog;
use crate::cidr::Cidr;
use crate::federation::Federations;
use crate::index::Zones;
use crate::server::notify::{DEFAULT_NOTIFY_INTERVAL, NotifyTarget};
use crate::server::rrl::RrlConfig;
use crate::server::xfr::{DEFAULT_MAX_TRANSFERS, XfrSettings};
use crate::topology::Topology;
use crate::tsig::{Key, Keys};

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
    /// Close a TCP connection idle this long, e.g. 10s or 500ms; more than 0. Shortened to 1s
    /// while the open connections are at three quarters of --tcp-max-connections or more
    /// [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub tcp_idle_timeout: Option<Duration>,
    /// Open DNS TCP connections at most, over all listen addresses; at the cap a new
    /// connection closes the one idle longest. Never more than the open-file limit (raised at
    /// start to the hard limit) leaves after 128 descriptors for HTTP, etcd and UDP
    /// [default: 1024, within three quarters of that room, which leaves the rest for refused
    /// connections held open]
    #[arg(long, value_name = "N")]
    pub tcp_max_connections: Option<usize>,
    /// Open DNS TCP connections from one client address (an IPv6 /64) at most; a connection
    /// over it is held open unanswered for 2 s, then closed [default: a quarter of
    /// --tcp-max-connections]
    #[arg(long, value_name = "N")]
    pub tcp_max_connections_per_client: Option<usize>,
    /// Threads that answer the queries the compiled fast path cannot (CNAMEs, SRV/MX/TXT,
    /// leased records, the apex, large answers), over UDP and TCP, at a lower CPU priority
    /// than the receive loops. TCP queries go first (at most 64 at a time); at most 1024 UDP
    /// queries wait, and one that finds them full is dropped (counted as busy), as is one that
    /// waited more than 1 s (stale) [default: half of --workers, at least 1]
    #[arg(long, value_name = "N")]
    pub udp_general_threads: Option<usize>,
    /// Response rate limiting (RRL, as in NSD and Knot): UDP responses per second to one
    /// client prefix (see --rrl-ipv4-prefix-length); 0 turns it off. Over the rate, every
    /// --rrl-slip-th response goes out truncated (so real clients retry over TCP, which is
    /// never limited) and the others are dropped. Off by default because fedplane-dns usually
    /// answers a few CoreDNS forwarders that carry a whole cluster's queries, which RRL would
    /// throttle: turn it on only where clients query directly, and exempt the forwarders
    /// (--rrl-exempt) [default: 0]
    #[arg(long, value_name = "N")]
    pub rrl_responses_per_second: Option<u32>,
    /// RRL: every Nth limited response is sent truncated (TC), the rest dropped; 0 drops them
    /// all, 1 truncates them all (at most 100) [default: 2]
    #[arg(long, value_name = "N")]
    pub rrl_slip: Option<u32>,
    /// RRL: IPv4 clients in one prefix of this length share a rate [default: 24]
    #[arg(long, value_name = "BITS")]
    pub rrl_ipv4_prefix_length: Option<u8>,
    /// RRL: IPv6 clients in one prefix of this length share a rate [default: 56]
    #[arg(long, value_name = "BITS")]
    pub rrl_ipv6_prefix_length: Option<u8>,
    /// RRL: sources never limited, an address or CIDR such as 10.0.0.0/8 (repeatable)
    #[arg(long = "rrl-exempt", value_name = "CIDR")]
    pub rrl_exempt: Vec<String>,
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
    /// It is rewritten atomically at most every 30 s while records change, and every hour
    /// while etcd confirms them unchanged; when etcd cannot be loaded within 3 s of start (down
    /// or merely slow), the saved records are served (ready, with
    /// fedplane_dns_serving_from_disk 1 and their age in fedplane_dns_state_age_seconds) until
    /// etcd's load replaces them; unless older than --state-max-age, over 1 GiB or damaged
    /// [default: none, nothing saved]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// With --state-dir: a saved snapshot older than this is not served (logged with its age;
    /// SERVFAIL until etcd answers), e.g. 36h or 7d; at least 1s. The age counts from when
    /// etcd last confirmed the records: the file is rewritten within 30 s of a change and
    /// every hour while etcd confirms them unchanged [default: 7d]
    #[arg(long, value_name = "DURATION", value_parser = parse_age)]
    pub state_max_age: Option<Duration>,
    /// YAML list of client subnets and their localities ({cidr, region, zone} entries): a
    /// client's locality, from its EDNS Client Subnet option or else its address (longest
    /// prefix), picks the addresses of records whose "zone"/"region" match it (its zone's,
    /// else its region's, else all), and ECS is then read and echoed with its scope (RFC 7871)
    /// [default: none, every client gets every address]
    #[arg(long, value_name = "FILE")]
    pub topology: Option<PathBuf>,
    /// Federation short names, as kube-dns's --federations (repeatable): a query for
    /// <svc>.<ns>.<NAME>.svc.<cluster-domain> is answered with a CNAME to the zone-level name
    /// of this cluster, <svc>.<ns>.<NAME>.svc.<zone>.<region>.<DOMAIN> (--locality), and the
    /// rest of its chain; any other name below <NAME>.svc.<cluster-domain> is NXDOMAIN
    #[arg(long = "federation", value_name = "NAME=DOMAIN")]
    pub federations: Vec<String>,
    /// The cluster domain of the short names [default: cluster.local]
    #[arg(long, value_name = "DOMAIN")]
    pub cluster_domain: Option<String>,
    /// This instance's own cluster, for the short names' CNAME: zone=Z,region=R (in deploy/
    /// from the node's topology labels); without a zone the CNAME names the region level,
    /// without either the global name [default: none]
    #[arg(long, value_name = "zone=Z,region=R")]
    pub locality: Option<String>,
    /// A TSIG key (RFC 8945), NAME:ALGORITHM:SECRET-FILE (repeatable); ALGORITHM is
    /// hmac-sha256, hmac-sha512, hmac-sha384 or hmac-sha1; the file holds the base64 secret,
    /// alone or as a BIND key file (tsig-keygen's output); the secret is never on the command
    /// line. Signed queries are answered signed; a bad signature gets NOTAUTH
    #[arg(long = "tsig-key", value_name = "NAME:ALG:FILE")]
    pub tsig_keys: Vec<String>,
    /// Clients that may transfer the zones (AXFR, IXFR), a CIDR, optionally with the TSIG key
    /// their requests must be signed with: 10.0.0.0/8 or 192.0.2.53/32,key=xfr (repeatable).
    /// Others get REFUSED (NOTAUTH for a bad signature), counted in
    /// fedplane_dns_xfr_refused_total and logged once per client [default: nobody]
    #[arg(long = "allow-transfer", value_name = "CIDR[,key=NAME]")]
    pub allow_transfer: Vec<String>,
    /// Clients that may change the zones with RFC 2136 UPDATE (nsupdate, ExternalDNS's
    /// rfc2136 provider), a CIDR and the TSIG key their updates must be signed with:
    /// 10.0.0.0/8,key=ddns (repeatable; the key is required). Updates write SkyDNS keys marked
    /// "managed-by": "rfc2136/<key>" in one etcd transaction, and never change a key another
    /// writer (or another key) owns: such an update is REFUSED whole. Others get REFUSED,
    /// NOTAUTH for a bad signature [default: nobody]
    #[arg(long = "allow-update", value_name = "CIDR,key=NAME")]
    pub allow_update: Vec<String>,
    /// Zone transfers streamed at once; more get SERVFAIL (secondaries retry) [default: 8]
    #[arg(long, value_name = "N")]
    pub max_transfers: Option<usize>,
    /// IXFR: zone versions whose differences are kept in memory, over all zones; a client
    /// older than the oldest (or from before a restart) gets the whole zone; 0 keeps none
    /// [default: 1000]
    #[arg(long, value_name = "N")]
    pub ixfr_history_versions: Option<usize>,
    /// IXFR: memory the differences may take at most (counted per record: the record and its
    /// names and data); a change larger than this clears the history [default: 67108864,
    /// 64 MiB]
    #[arg(long, value_name = "BYTES")]
    pub ixfr_history_bytes: Option<usize>,
    /// A secondary to send NOTIFY (RFC 1996) when a zone's serial changes: ADDR, ADDR:PORT or
    /// [IPv6]:PORT (port 53 by default), optionally ,key=NAME to sign it with that TSIG key
    /// (repeatable). Sent again after 1 s, 2 s, 4 s … (at most 60 s apart) until answered
    /// [default: none]
    #[arg(long = "notify", value_name = "ADDR[:PORT][,key=NAME]")]
    pub notify: Vec<String>,
    /// The address NOTIFY is sent from (repeatable, one per family): secondaries take NOTIFY
    /// only from their primaries' addresses, so in Kubernetes give the address they transfer
    /// from when the route would pick another [default: the route's]
    #[arg(long = "notify-source", value_name = "IP")]
    pub notify_source: Vec<std::net::IpAddr>,
    /// At most one NOTIFY round per zone per this interval: changes within it are announced
    /// together when it ends, e.g. 1s or 200ms [default: 1s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub notify_interval: Option<Duration>,
    /// Produce a catalog zone (RFC 9432) of this name listing the served zones, e.g.
    /// catalog.invalid.: secondaries that read catalogs (Knot, BIND, NSD >= 4.9) then serve
    /// every zone without per-zone configuration. Transferred under --allow-transfer like the
    /// zones; its serial is the start time [default: none]
    #[arg(long, value_name = "NAME")]
    pub catalog_zone: Option<String>,
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
    /// TCP connection cap.
    pub tcp_max_connections: Option<usize>,
    /// TCP connections per client address.
    pub tcp_max_connections_per_client: Option<usize>,
    /// UDP general-path threads.
    pub udp_general_threads: Option<usize>,
    /// RRL responses per second per prefix (0 off).
    pub rrl_responses_per_second: Option<u32>,
    /// RRL slip.
    pub rrl_slip: Option<u32>,
    /// RRL IPv4 prefix length.
    pub rrl_ipv4_prefix_length: Option<u8>,
    /// RRL IPv6 prefix length.
    pub rrl_ipv6_prefix_length: Option<u8>,
    /// RRL exempt CIDRs.
    #[serde(default)]
    pub rrl_exempt: Vec<String>,
    /// Lameduck, e.g. `5s`.
    pub lameduck: Option<String>,
    /// Shutdown grace, e.g. `5s`.
    pub shutdown_grace: Option<String>,
    /// Log format.
    pub log_format: Option<String>,
    /// Directory for the snapshot of the records on disk.
    pub state_dir: Option<PathBuf>,
    /// Oldest snapshot served, e.g. `7d`.
    pub state_max_age: Option<String>,
    /// The client topology map file.
    pub topology: Option<PathBuf>,
    /// Federation short names, `NAME=DOMAIN`.
    #[serde(default)]
    pub federations: Vec<String>,
    /// Cluster domain of the short names.
    pub cluster_domain: Option<String>,
    /// This instance's locality, `zone=Z,region=R`.
    pub locality: Option<String>,
    /// TSIG keys, `NAME:ALGORITHM:SECRET-FILE`.
    #[serde(default)]
    pub tsig_keys: Vec<String>,
    /// Transfer clients, `CIDR[,key=NAME]`.
    #[serde(default)]
    pub allow_transfer: Vec<String>,
    /// Update clients, `CIDR,key=NAME`.
    #[serde(default)]
    pub allow_update: Vec<String>,
    /// Concurrent zone transfers at most.
    pub max_transfers: Option<usize>,
    /// IXFR history versions.
    pub ixfr_history_versions: Option<usize>,
    /// IXFR history bytes.
    pub ixfr_history_bytes: Option<usize>,
    /// Secondaries to notify, `ADDR[:PORT][,key=NAME]`.
    #[serde(default)]
    pub notify: Vec<String>,
    /// NOTIFY interval, e.g. `1s`.
    pub notify_interval: Option<String>,
    /// Catalog zone name.
    pub catalog_zone: Option<String>,
    /// NOTIFY source addresses.
    #[serde(default)]
    pub notify_source: Vec<std::net::IpAddr>,
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
    /// TCP idle timeout (not zero).
    pub tcp_idle_timeout: Duration,
    /// TCP connection cap asked for (the server lowers it to fit the open-file limit).
    pub tcp_max_connections: Option<usize>,
    /// TCP connections per client address asked for (default: a quarter of the cap).
    pub tcp_max_connections_per_client: Option<usize>,
    /// UDP general-path threads.
    pub udp_general_threads: usize,
    /// Response rate limiting; `None` is off.
    pub rrl: Option<RrlConfig>,
    /// How long DNS keeps answering after SIGTERM, while /readyz fails.
    pub lameduck: Duration,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// `json` or `text`.
    pub log_format: String,
    /// Where the snapshot of the records is kept on disk, if anywhere.
    pub state_dir: Option<PathBuf>,
    /// A snapshot saved longer ago is not served.
    pub state_max_age: Duration,
    /// Where clients are (`--topology`), read and checked.
    pub topology: Option<Arc<Topology>>,
    /// The federation short names (`--federation`), if any.
    pub federations: Option<Arc<Federations>>,
    /// TSIG keys and zone transfers.
    pub xfr: XfrSettings,
    /// Secondaries to notify.
    pub notify: Vec<NotifyTarget>,
    /// At most one NOTIFY round per zone per this.
    pub notify_interval: Duration,
    /// Where NOTIFY is sent from.
    pub notify_source: Vec<std::net::IpAddr>,
    /// etcd.
    pub etcd: EtcdSettings,
}

/// A duration as [`parse_duration`] reads it, or in hours (`36h`) or days (`7d`); at least
/// one second (for `--state-max-age`).
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let scaled = |n: &str, unit: u64| {
        let n: f64 = n
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a duration (e.g. 36h, 7d)"))?;
        #[allow(clippy::cast_precision_loss)]
        Duration::try_from_secs_f64(n * unit as f64).map_err(|_| format!("{s:?} is not a duration"))
    };
    let d = if let Some(n) = t.strip_suffix('d') {
        scaled(n, 86_400)?
    } else if let Some(n) = t.strip_suffix('h') {
        scaled(n, 3_600)?
    } else {
        parse_duration(t).map_err(|e| format!("{e}, h or d"))?
    };
    if d < Duration::from_secs(1) {
        return Err(format!("{s:?} is less than 1s"));
    }
    Ok(d)
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

/// Checks the federation short-name settings: none without `--federation`, and no served zone
/// at, above or below a federation suffix (a name there would have two answers).
fn federations(
    feds: Vec<String>,
    cluster_domain: Option<String>,
    locality: Option<String>,
    zones: &[Name],
) -> Result<Option<Arc<Federations>>, ConfigError> {
    if feds.is_empty() {
        return match (cluster_domain, locality) {
            (None, None) => Ok(None),
            _ => Err(ConfigError::Invalid(
                "--cluster-domain and --locality are for the federation short names: give --federation NAME=DOMAIN too".into(),
            )),
        };
    }
    let f = Federations::new(
        &feds,
        cluster_domain.as_deref().unwrap_or("cluster.local"),
        locality.as_deref().unwrap_or(""),
    )
    .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    for suffix in f.suffixes() {
        if let Some(zone) = zones
            .iter()
            .find(|z| z.zone_of(suffix) || suffix.zone_of(z))
        {
            return Err(ConfigError::Invalid(format!(
                "zone {zone} overlaps the federation short names under {suffix}: serve one or the other"
            )));
        }
    }
    Ok(Some(Arc::new(f)))
}

/// Reads the TSIG keys and checks the transfer access list against them.
fn xfr_settings(
    keys: Vec<String>,
    allow: Vec<String>,
    allow_update: Vec<String>,
    max_transfers: Option<usize>,
    (history_versions, history_bytes): (usize, usize),
) -> Result<XfrSettings, ConfigError> {
    let keys = keys
        .iter()
        .map(|k| Key::from_spec(k))
        .collect::<Result<Vec<_>, _>>()
        .and_then(Keys::new)
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let acls = |list: &[String], flag: &str| {
        list.iter()
            .map(|a| {
                let acl: Acl = a
                    .parse()
                    .map_err(|e| ConfigError::Invalid(format!("{flag} {e}")))?;
                if let Some(k) = &acl.key
                    && keys.get(k).is_none()
                {
                    return Err(ConfigError::Invalid(format!(
                        "{flag} {a:?} names key {k}, which no --tsig-key defines"
                    )));
                }
                Ok(acl)
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let allow_transfer = acls(&allow, "allow-transfer")?;
    let allow_update = acls(&allow_update, "allow-update")?;
    if let Some(a) = allow_update.iter().find(|a| a.key.is_none()) {
        return Err(ConfigError::Invalid(format!(
            "allow-update {}: updates must be signed: add ,key=NAME (a --tsig-key)",
            a.cidr
        )));
    }
    let max_transfers = match max_transfers {
        Some(0) => {
            return Err(ConfigError::Invalid(
                "max-transfers must be at least 1".into(),
            ));
        }
        n => n.unwrap_or(DEFAULT_MAX_TRANSFERS),
    };
    Ok(XfrSettings {
        keys,
        allow_transfer,
        allow_update,
        catalog: None,
        max_transfers,
        history_versions,
        history_bytes,
    })
}

/// Reads and checks a `--topology` file.
pub fn read_topology(path: &Path) -> Result<Topology, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    Topology::from_yaml(&text).map_err(|e| ConfigError::Parse {
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

        let tcp_idle_timeout = duration(
            cli.tcp_idle_timeout,
            file.tcp_idle_timeout,
            "tcp_idle_timeout",
            10,
        )?;
        // It also bounds reading a query's body and writing its answer: below 100 ms a
        // client a little way off could never finish one.
        if tcp_idle_timeout < std::time::Duration::from_millis(100) {
            return Err(ConfigError::Invalid(format!(
                "tcp-idle-timeout {tcp_idle_timeout:?} would close TCP connections before a query or its answer can cross; give at least 100ms (e.g. 10s)"
            )));
        }
        let positive = |v: Option<usize>, name: &str| match v {
            Some(0) => Err(ConfigError::Invalid(format!("{name} must be at least 1"))),
            v => Ok(v),
        };
        let tcp_max_connections = positive(
            cli.tcp_max_connections.or(file.tcp_max_connections),
            "tcp-max-connections",
        )?;
        let tcp_max_connections_per_client = positive(
            cli.tcp_max_connections_per_client
                .or(file.tcp_max_connections_per_client),
            "tcp-max-connections-per-client",
        )?;
        let udp_general_threads = positive(
            cli.udp_general_threads.or(file.udp_general_threads),
            "udp-general-threads",
        )?
        .unwrap_or((workers / 2).max(1));
        let rrl = match cli
            .rrl_responses_per_second
            .or(file.rrl_responses_per_second)
            .unwrap_or(0)
        {
            0 => None,
            rate => {
                let slip = cli.rrl_slip.or(file.rrl_slip).unwrap_or(2);
                if slip > 100 {
                    return Err(ConfigError::Invalid(format!(
                        "rrl-slip {slip} is over 100 (0 drops every limited response, 1 truncates each)"
                    )));
                }
                let exempt = pick(cli.rrl_exempt, file.rrl_exempt)
                    .iter()
                    .map(|c| {
                        c.parse::<Cidr>()
                            .map_err(|e| ConfigError::Invalid(format!("rrl-exempt: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let rrl = RrlConfig {
                    responses_per_second: rate,
                    slip,
                    ipv4_prefix: cli
                        .rrl_ipv4_prefix_length
                        .or(file.rrl_ipv4_prefix_length)
                        .unwrap_or(24),
                    ipv6_prefix: cli
                        .rrl_ipv6_prefix_length
                        .or(file.rrl_ipv6_prefix_length)
                        .unwrap_or(56),
                    exempt,
                };
                rrl.check()
                    .map_err(|e| ConfigError::Invalid(format!("rrl: {e}")))?;
                Some(rrl)
            }
        };

        let etcd = cli
            .etcd
            .or(file.etcd)
            .resolve(password_env)
            .map_err(ConfigError::Invalid)?;

        let federations = federations(
            pick(cli.federations, file.federations),
            cli.cluster_domain.or(file.cluster_domain),
            cli.locality.or(file.locality),
            &zones,
        )?;
        let xfr = xfr_settings(
            pick(cli.tsig_keys, file.tsig_keys),
            pick(cli.allow_transfer, file.allow_transfer),
            pick(cli.allow_update, file.allow_update),
            cli.max_transfers.or(file.max_transfers),
            (
                cli.ixfr_history_versions
                    .or(file.ixfr_history_versions)
                    .unwrap_or(crate::ixfr::DEFAULT_VERSIONS),
                cli.ixfr_history_bytes
                    .or(file.ixfr_history_bytes)
                    .unwrap_or(crate::ixfr::DEFAULT_BYTES),
            ),
        )?;
        let mut xfr = xfr;
        if let Some(c) = cli.catalog_zone.or(file.catalog_zone) {
            let name = Name::from_ascii(&c)
                .map_err(|e| ConfigError::Invalid(format!("catalog-zone {c:?}: {e}")))?;
            let zones_now = Zones::new("/", &zones);
            let serial = u32::try_from(crate::tsig::unix_now() & u64::from(u32::MAX)).unwrap_or(1);
            let catalog = Catalog::new(&name, &zones_now, serial)
                .map_err(|e| ConfigError::Invalid(format!("catalog-zone: {e}")))?;
            xfr.catalog = Some(Arc::new(catalog));
        }
        let notify = pick(cli.notify, file.notify)
            .iter()
            .map(|t| {
                let target: NotifyTarget = t
                    .parse()
                    .map_err(|e| ConfigError::Invalid(format!("notify {e}")))?;
                if let Some(k) = &target.key
                    && xfr.keys.get(k).is_none()
                {
                    return Err(ConfigError::Invalid(format!(
                        "notify {t:?} names key {k}, which no --tsig-key defines"
                    )));
                }
                Ok(target)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let notify_interval = match (cli.notify_interval, file.notify_interval) {
            (Some(d), _) => d,
            (None, Some(s)) => parse_duration(&s)
                .map_err(|e| ConfigError::Invalid(format!("notify_interval: {e}")))?,
            (None, None) => DEFAULT_NOTIFY_INTERVAL,
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
            tcp_idle_timeout,
            tcp_max_connections,
            tcp_max_connections_per_client,
            udp_general_threads,
            rrl,
            lameduck: duration(cli.lameduck, file.lameduck, "lameduck", 5)?,
            shutdown_grace: duration(cli.shutdown_grace, file.shutdown_grace, "shutdown_grace", 5)?,
            log_format: cli
                .log_format
                .or(file.log_format)
                .unwrap_or_else(|| "text".into()),
            state_dir: cli.state_dir.or(file.state_dir),
            state_max_age: match (cli.state_max_age, file.state_max_age) {
                (Some(d), _) => d,
                (None, Some(s)) => parse_age(&s)
                    .map_err(|e| ConfigError::Invalid(format!("state_max_age: {e}")))?,
                (None, None) => crate::state::DEFAULT_MAX_AGE,
            },
            topology: match cli.topology.or(file.topology) {
                None => None,
                Some(path) => Some(Arc::new(read_topology(&path)?)),
            },
            federations,
            xfr,
            notify,
            notify_interval,
            notify_source: if cli.notify_source.is_empty() {
                file.notify_source
            } else {
                cli.notify_source
            },
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
    fn zero_and_absurd_server_limits_are_clear_errors() {
        for (args, needle) in [
            (&["--tcp-idle-timeout", "0s"][..], "tcp-idle-timeout 0ns"),
            (&["--tcp-idle-timeout", "1ms"], "at least 100ms"),
            (&["--tcp-max-connections", "0"], "tcp-max-connections"),
            (&["--tcp-max-connections-per-client", "0"], "per-client"),
            (&["--udp-general-threads", "0"], "udp-general-threads"),
            (
                &["--rrl-responses-per-second", "5", "--rrl-slip", "101"],
                "rrl-slip",
            ),
            (
                &[
                    "--rrl-responses-per-second",
                    "5",
                    "--rrl-exempt",
                    "10.0.0.0/40",
                ],
                "rrl-exempt",
            ),
            (
                &[
                    "--rrl-responses-per-second",
                    "5",
                    "--rrl-ipv6-prefix-length",
                    "129",
                ],
                "IPv6",
            ),
        ] {
            let mut all = vec!["--zone", "example.com"];
            all.extend_from_slice(args);
            let err = Settings::resolve(cli(&all), None).expect_err("invalid");
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, "zones: [example.com.]\ntcp_idle_timeout: 0ms\n").expect("write");
        let err = Settings::resolve(cli(&["--config", p.to_str().expect("utf8")]), None)
            .expect_err("invalid");
        assert!(err.to_string().contains("tcp-idle-timeout"), "{err}");
    }

    #[test]
    fn rrl_is_off_by_default_and_configured_from_flags_or_file() {
        let s = Settings::resolve(cli(&["--zone", "example.com"]), None).expect("valid");
        assert_eq!(s.rrl, None);
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            "zones: [example.com.]\nrrl_responses_per_second: 20\nrrl_exempt: [10.0.0.0/8]\n",
        )
        .expect("write");
        let path = p.to_str().expect("utf8");
        let s =
            Settings::resolve(cli(&["--config", path, "--rrl-slip", "3"]), None).expect("valid");
        let rrl = s.rrl.expect("on");
        assert_eq!((rrl.responses_per_second, rrl.slip), (20, 3));
        assert_eq!((rrl.ipv4_prefix, rrl.ipv6_prefix), (24, 56));
        assert_eq!(rrl.exempt, ["10.0.0.0/8".parse().expect("cidr")]);
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
    fn state_max_age_defaults_to_a_week_and_takes_hours_and_days() {
        let s = Settings::resolve(cli(&["--zone", "a."]), None).expect("valid");
        assert_eq!(s.state_max_age, Duration::from_secs(7 * 24 * 3600));
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.yaml");
        let path = p.to_str().expect("utf8");
        std::fs::write(&p, "zones: [example.com.]\nstate_max_age: 36h\n").expect("write");
        let s = Settings::resolve(cli(&["--config", path]), None).expect("valid");
        assert_eq!(s.state_max_age, Duration::from_secs(36 * 3600));
        let s = Settings::resolve(cli(&["--config", path, "--state-max-age", "2d"]), None)
            .expect("valid");
        assert_eq!(
            s.state_max_age,
            Duration::from_secs(2 * 86_400),
            "the flag wins"
        );
        assert_eq!(parse_age("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_age("1s"), Ok(Duration::from_secs(1)));
        for bad in ["0", "0s", "500ms", "soon", "-1d", "d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
        std::fs::write(&p, "zones: [example.com.]\nstate_max_age: 0s\n").expect("write");
        let err = Settings::resolve(cli(&["--config", path]), None).expect_err("invalid");
        assert!(err.to_string().contains("state_max_age"), "{err}");
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
    fn transfer_settings_are_checked_against_the_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("xfr.secret");
        std::fs::write(&secret, "MDEyMzQ1Njc4OWFiY2RlZg==\n").expect("write");
        let key = format!("xfr:hmac-sha256:{}", secret.display());
        let s = Settings::resolve(
            cli(&[
                "--zone",
                "a.",
                "--tsig-key",
                &key,
                "--allow-transfer",
                "127.0.0.0/8,key=xfr",
                "--allow-transfer",
                "10.0.0.0/8",
            ]),
            None,
        )
        .expect("valid");
        assert_eq!(s.xfr.allow_transfer.len(), 2);
        assert_eq!(s.xfr.max_transfers, DEFAULT_MAX_TRANSFERS);
        let s = Settings::resolve(
            cli(&[
                "--zone",
                "a.",
                "--tsig-key",
                &key,
                "--notify",
                "127.0.0.1:5353,key=xfr",
                "--notify",
                "2001:db8::53",
                "--notify-interval",
                "200ms",
            ]),
            None,
        )
        .expect("valid");
        assert_eq!(s.notify[0].addr, "127.0.0.1:5353".parse().expect("addr"));
        assert_eq!(s.notify[1].addr, "[2001:db8::53]:53".parse().expect("addr"));
        assert_eq!(s.notify_interval, Duration::from_millis(200));
        let none = Settings::resolve(cli(&["--zone", "a."]), None).expect("valid");
        assert!(none.xfr.allow_transfer.is_empty(), "nobody by default");
        for (args, want) in [
            (
                vec!["--allow-transfer", "127.0.0.1,key=other"],
                "no --tsig-key defines",
            ),
            (vec!["--allow-transfer", "localhost"], "allow-transfer"),
            (vec!["--tsig-key", "xfr:hmac-sha256"], "SECRET-FILE"),
            (vec!["--max-transfers", "0"], "max-transfers"),
            (vec!["--notify", "127.0.0.1:53,key=other"], "no --tsig-key"),
            (vec!["--notify", "ns1.example.com"], "not an address"),
            (vec!["--allow-update", "127.0.0.1"], "must be signed"),
            (
                vec!["--allow-update", "127.0.0.1,key=other"],
                "no --tsig-key",
            ),
            (
                vec!["--catalog-zone", "cat.a."],
                "overlaps the served zone a.",
            ),
            (vec!["--catalog-zone", "."], "overlaps"),
        ] {
            let mut all = vec!["--zone", "a."];
            all.extend(args.iter().copied());
            let err = Settings::resolve(cli(&all), None)
                .expect_err("invalid")
                .to_string();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn a_zone_no_etcd_key_can_spell_is_refused() {
        // (hickory already refuses `/`, spaces and non-ASCII in a name.)
        let err = Settings::resolve(cli(&["--zone", r"a\.b.example."]), None).expect_err("refused");
        assert!(err.to_string().contains("no etcd key"), "{err}");
    }

    #[test]
    fn federation_short_names_are_checked_against_the_zones() {
        let ok = Settings::resolve(
            cli(&[
                "--zone",
                "example.com.",
                "--federation",
                "federation=example.com",
                "--locality",
                "zone=fr,region=europe",
            ]),
            None,
        )
        .expect("valid");
        assert!(ok.federations.is_some());
        for (args, want) in [
            (
                vec![
                    "--zone",
                    "example.com.",
                    "--zone",
                    "cluster.local.",
                    "--federation",
                    "f=example.com",
                ],
                "overlaps the federation short names",
            ),
            (
                vec![
                    "--zone",
                    "svc.cluster.local.",
                    "--federation",
                    "f=example.com",
                ],
                "overlaps",
            ),
            (
                vec!["--zone", "example.com.", "--locality", "zone=fr,region=eu"],
                "give --federation",
            ),
            (
                vec!["--zone", "example.com.", "--cluster-domain", "c.local"],
                "give --federation",
            ),
        ] {
            let err = Settings::resolve(cli(&args), None)
                .expect_err("invalid")
                .to_string();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}

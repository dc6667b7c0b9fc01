//! Command line of fedplane-controller; every flag is documented in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use fedplane_ops::etcd::{EtcdFlags, EtcdSettings};
use fedplane_ops::parse_duration;

use crate::health::Thresholds;
use crate::plan::Naming;
use crate::prober::ProbeTiming;
use crate::reconcile::Options;
use crate::selector::Selector;
use crate::view::{Sources, ViewSettings, dns_label};

/// Writes the zone, region and global records of every federated Service into etcd, from the
/// Services, EndpointSlices and Nodes of every member cluster.
///
/// Member clusters are contexts of one kubeconfig (--kubeconfig, --context) or snapshot files
/// (--snapshot); both kinds can be mixed. Records follow the SkyDNS layout that fedplane-dns
/// and CoreDNS's etcd plugin read; only keys marked "managed-by": "fedplane-controller/<fed>"
/// are ever changed. Several replicas elect one writer through etcd. The etcd password is
/// read from FEDPLANE_ETCD_PASSWORD or --etcd-password-file.
#[derive(Debug, Parser)]
#[command(name = "fedplane-controller", version, about, long_about)]
pub struct Cli {
    /// DNS zone of the federation, e.g. example.com.
    #[arg(long, value_name = "DOMAIN")]
    pub domain: String,
    /// Federation name, the label after the namespace in every name
    #[arg(long, value_name = "NAME")]
    pub federation: String,
    #[command(flatten)]
    pub etcd: EtcdFlags,
    /// kubeconfig holding the member clusters' contexts [default: $KUBECONFIG (merged as
    /// kubectl does), else ~/.kube/config]
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Member cluster from a kubeconfig context; NAME=CONTEXT when the context is not a DNS
    /// label (repeatable)
    #[arg(long = "context", value_name = "NAME[=CONTEXT]")]
    pub contexts: Vec<String>,
    /// Every context of the kubeconfig is a member cluster named after it, besides those given
    /// with --context (so the kubeconfig alone lists the members, as in the deploy manifests)
    #[arg(long)]
    pub all_contexts: bool,
    /// Member cluster read from a file of `kubectl get nodes,services,endpointslices -A -o
    /// yaml` (or -o json; add ingresses, gateways, httproutes, grpcroutes, tlsroutes,
    /// dnsendpoints for those sources) instead of a live API server (repeatable)
    #[arg(long = "snapshot", value_name = "NAME=FILE")]
    pub snapshots: Vec<String>,
    /// Region of every node of cluster NAME, over its node labels (repeatable)
    #[arg(long = "cluster-region", value_name = "NAME=REGION")]
    pub cluster_regions: Vec<String>,
    /// Zone of every node of cluster NAME, over its node labels (repeatable)
    #[arg(long = "cluster-zone", value_name = "NAME=ZONE")]
    pub cluster_zones: Vec<String>,
    /// Federate only the LoadBalancer Services (and the other sources' objects) whose labels match, e.g.
    /// 'tier=web,!canary' [default: all; the annotation fedplane.io/federate: "false" opts one
    /// out]
    #[arg(long, value_name = "SELECTOR")]
    pub service_selector: Option<Selector>,
    /// What gives names, comma-separated (repeatable): service (LoadBalancer Services'
    /// zone, region and global names); ingress (each Ingress rule's host inside --domain,
    /// with the Ingress's addresses from every cluster where it is healthy: a backend
    /// Service with a ready endpoint, every backend with fedplane.io/backend-health: all);
    /// gateway-httproute, gateway-grpcroute, gateway-tlsroute (each route hostname, with the
    /// addresses of the Gateways that accepted the route, healthy as Ingresses by its
    /// backendRefs); dnsendpoint (ExternalDNS's DNSEndpoints: their A, AAAA, CNAME, TXT, SRV
    /// and MX records as they are). Of two objects claiming a name the older keeps it
    #[arg(
        long = "source",
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "service"
    )]
    pub sources: Vec<String>,
    /// TTL of every record, in seconds (a DNSEndpoint's recordTTL overrides it for its names)
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub ttl: u32,
    /// How long the records of a cluster that cannot be reached are kept before they are
    /// withdrawn; also how long writing waits at start for a cluster never reached
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub unreachable_grace: Duration,
    /// Sync once (after every cluster is listed) and exit
    #[arg(long)]
    pub once: bool,
    /// Print the changes (+ create, ~ update, - delete) instead of writing them; no election
    #[arg(long)]
    pub dry_run: bool,
    /// Address of /metrics, /healthz and /readyz
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9103")]
    pub http: SocketAddr,
    /// etcd election name; replicas with the same name elect one writer
    /// [default: /fedplane/controller/<federation>]
    #[arg(long, value_name = "KEY")]
    pub election: Option<String>,
    /// Lease TTL of the leader: how soon a standby takes over from a leader that died without
    /// resigning
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub election_ttl: Duration,
    /// This replica's name in the election [default: $HOSTNAME, else fedplane-controller-<pid>]
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// The most a change waits to be batched with others: it is written once the last sync
    /// has been over for as long as it took (syncs of a few Services take milliseconds, so
    /// such changes are written at once), but never later than this after it
    #[arg(long, value_name = "DURATION", default_value = "50ms", value_parser = parse_duration)]
    pub debounce: Duration,
    /// Re-read our keys from etcd this often, to repair keys changed behind our back
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub resync: Duration,
    /// How often the ingress addresses of Services annotated fedplane.io/health-check
    /// (tcp:PORT or http:PORT/PATH) are probed
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub probe_interval: Duration,
    /// How long one probe may take (at most --probe-interval)
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub probe_timeout: Duration,
    /// Failed probes in a row that withdraw an address (its cluster counts as unhealthy for
    /// the Service once all its addresses are withdrawn)
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub probe_failures: u32,
    /// Successful probes in a row that bring a withdrawn address back
    #[arg(long, value_name = "M", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub probe_successes: u32,
    /// Log format: text or json
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where one member cluster's objects come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A kubeconfig context.
    Context(String),
    /// A snapshot file.
    Snapshot(PathBuf),
}

/// One member cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// How its objects are read.
    pub view: ViewSettings,
    /// Where they come from.
    pub source: Source,
}

/// Everything the controller needs, resolved and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// etcd.
    pub etcd: EtcdSettings,
    /// Member clusters in command-line order.
    pub clusters: Vec<ClusterConfig>,
    /// `--http`.
    pub http: SocketAddr,
    /// `text` or `json`.
    pub log_format: String,
    /// How the reconcile loop runs.
    pub reconcile: Options,
}

fn pair<'a>(flag: &str, s: &'a str) -> Result<(&'a str, &'a str), ConfigError> {
    s.split_once('=')
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .ok_or_else(|| ConfigError(format!("{flag} {s:?}: expected NAME=VALUE")))
}

impl Settings {
    /// Checks the command line. `password_env` is the value of FEDPLANE_ETCD_PASSWORD and
    /// `hostname` of HOSTNAME, passed in so tests need no globals.
    pub fn resolve(
        cli: Cli,
        password_env: Option<String>,
        hostname: Option<String>,
    ) -> Result<Self, ConfigError> {
        let domain = cli.domain.trim_end_matches('.').to_ascii_lowercase();
        if domain.is_empty() || domain.split('.').any(|l| dns_label(l).is_err()) {
            return Err(ConfigError(format!(
                "--domain {:?} is not a DNS name",
                cli.domain
            )));
        }
        dns_label(&cli.federation).map_err(|e| ConfigError(format!("--federation: {e}")))?;
        let etcd = cli.etcd.resolve(password_env).map_err(ConfigError)?;
        let mut sources = Sources::none();
        for s in &cli.sources {
            if !sources.enable(s.trim()) {
                return Err(ConfigError(format!(
                    "--source {s:?}: expected one or more of {}",
                    Sources::NAMES.join(", ")
                )));
            }
        }

        let mut clusters: Vec<ClusterConfig> = Vec::new();
        let mut add = |name: &str, source: Source| -> Result<(), ConfigError> {
            dns_label(name).map_err(|e| {
                ConfigError(format!(
                    "cluster name {e}; it is the leaf of its records (use NAME=CONTEXT)"
                ))
            })?;
            if clusters.iter().any(|c| c.view.cluster == name) {
                return Err(ConfigError(format!("cluster {name} is given twice")));
            }
            clusters.push(ClusterConfig {
                view: ViewSettings {
                    cluster: name.to_owned(),
                    selector: cli.service_selector.clone(),
                    sources,
                    domain: domain.clone(),
                    federation: cli.federation.clone(),
                    ..ViewSettings::default()
                },
                source,
            });
            Ok(())
        };
        for c in &cli.contexts {
            let (name, context) = c.split_once('=').unwrap_or((c, c));
            add(name, Source::Context(context.to_owned()))?;
        }
        for s in &cli.snapshots {
            let (name, file) = pair("--snapshot", s)?;
            add(name, Source::Snapshot(PathBuf::from(file)))?;
        }
        let members: Vec<String> = clusters.iter().map(|c| c.view.cluster.clone()).collect();
        for c in &mut clusters {
            c.view.members.clone_from(&members);
        }
        if clusters.is_empty() {
            return Err(ConfigError(
                "no member cluster: give --kubeconfig with --context NAME or --all-contexts, \
                 or --snapshot NAME=FILE"
                    .into(),
            ));
        }
        for (flag, list, is_region) in [
            ("--cluster-region", &cli.cluster_regions, true),
            ("--cluster-zone", &cli.cluster_zones, false),
        ] {
            for item in list {
                let (name, value) = pair(flag, item)?;
                let value = value.to_ascii_lowercase();
                dns_label(&value).map_err(|e| ConfigError(format!("{flag} {item:?}: {e}")))?;
                let c = clusters
                    .iter_mut()
                    .find(|c| c.view.cluster == name)
                    .ok_or_else(|| ConfigError(format!("{flag} names unknown cluster {name}")))?;
                if is_region {
                    c.view.region = Some(value);
                } else {
                    c.view.zone = Some(value);
                }
            }
        }
        let election = cli
            .election
            .unwrap_or_else(|| format!("/fedplane/controller/{}", cli.federation));
        if cli.probe_interval.is_zero() || cli.probe_timeout.is_zero() {
            return Err(ConfigError(
                "--probe-interval and --probe-timeout must be longer than zero".into(),
            ));
        }
        if cli.probe_timeout > cli.probe_interval {
            return Err(ConfigError(format!(
                "--probe-timeout {:?} is longer than --probe-interval {:?}",
                cli.probe_timeout, cli.probe_interval
            )));
        }
        if election == etcd.prefix || election.starts_with(&format!("{}/", etcd.prefix)) {
            return Err(ConfigError(format!(
                "--election {election} is under --etcd-prefix {}: fedplane-dns would serve it",
                etcd.prefix
            )));
        }
        Ok(Self {
            reconcile: Options {
                naming: Naming {
                    prefix: etcd.prefix.clone(),
                    domain,
                    federation: cli.federation,
                    ttl: cli.ttl,
                },
                grace: cli.unreachable_grace,
                debounce: cli.debounce,
                resync: cli.resync,
                once: cli.once,
                dry_run: cli.dry_run,
                election,
                election_ttl: cli.election_ttl,
                probe: ProbeTiming {
                    interval: cli.probe_interval,
                    timeout: cli.probe_timeout,
                },
                thresholds: Thresholds {
                    failures: cli.probe_failures,
                    successes: cli.probe_successes,
                },
                id: cli
                    .id
                    .or(hostname)
                    .unwrap_or_else(|| format!("fedplane-controller-{}", std::process::id())),
            },
            etcd,
            clusters,
            http: cli.http,
            log_format: cli.log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &[&str]) -> Result<Settings, ConfigError> {
        let cli = Cli::try_parse_from(
            [
                "fedplane-controller",
                "--domain",
                "Example.com.",
                "--federation",
                "federation",
            ]
            .iter()
            .chain(args),
        )
        .map_err(|e| ConfigError(e.to_string()))?;
        Settings::resolve(cli, None, Some("host-1".into()))
    }

    #[test]
    fn seed_topology_resolves_with_defaults() {
        let s = resolve(&[
            "--kubeconfig",
            "/k",
            "--context",
            "fcp",
            "--context",
            "usa=kubernetes-admin@usa",
            "--snapshot",
            "chn=/tmp/chn.yaml",
            "--cluster-region",
            "usa=America",
        ])
        .expect("valid");
        assert_eq!(s.reconcile.naming.domain, "example.com");
        assert_eq!(s.reconcile.naming.prefix, "/skydns");
        assert_eq!(s.reconcile.naming.ttl, 30);
        assert_eq!(s.reconcile.grace, Duration::from_secs(300));
        assert_eq!(s.reconcile.election, "/fedplane/controller/federation");
        assert_eq!(s.reconcile.id, "host-1");
        let names: Vec<_> = s.clusters.iter().map(|c| c.view.cluster.as_str()).collect();
        assert_eq!(names, ["fcp", "usa", "chn"]);
        assert_eq!(
            s.clusters[1].source,
            Source::Context("kubernetes-admin@usa".into())
        );
        assert_eq!(s.clusters[1].view.region.as_deref(), Some("america"));
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        for (args, want) in [
            (&[][..], "no member cluster"),
            (&["--snapshot", "fcp"][..], "NAME=VALUE"),
            (&["--snapshot", "Bad_Name=/f"][..], "NAME=CONTEXT"),
            (&["--snapshot", "a=/f", "--snapshot", "a=/g"][..], "twice"),
            (
                &["--snapshot", "a=/f", "--cluster-zone", "b=z"][..],
                "unknown cluster b",
            ),
            (
                &["--snapshot", "a=/f", "--cluster-zone", "a=z.y"][..],
                "DNS label",
            ),
            (
                &["--snapshot", "a=/f", "--election", "/skydns/x"][..],
                "fedplane-dns",
            ),
            (
                &["--snapshot", "a=/f", "--service-selector", "a in b"][..],
                "selector",
            ),
            (
                &["--snapshot", "a=/f", "--probe-timeout", "6s"][..],
                "longer than --probe-interval",
            ),
            (
                &["--snapshot", "a=/f", "--probe-interval", "0s"][..],
                "longer than zero",
            ),
            (&["--snapshot", "a=/f", "--probe-failures", "0"][..], "0"),
        ] {
            let e = resolve(args).expect_err(want);
            assert!(e.0.contains(want), "{args:?}: {e}");
        }
    }
}

//! A Service's traffic policy (or an Ingress's, route's or DNSEndpoint's, for its host names),
//! from its annotations: how the global and region names choose among the healthy clusters
//! (the strategy) and whether the controller probes its addresses (the health check). Pure.
//!
//! | annotation | values | default |
//! |---|---|---|
//! | [`STRATEGY`] | `all`, `closest`, `failover`, `weighted` | `all` |
//! | [`FAILOVER_ORDER`] | `fcp,usa,chn`: clusters, most preferred first (with `failover`) | `--cluster` order |
//! | [`WEIGHTS`] | `fcp=3,usa=1`: each 1–1000 (with `weighted`) | required by `weighted` |
//! | [`HEALTH_CHECK`] | `tcp:PORT` or `http:PORT/PATH` | none |
//!
//! A malformed annotation leaves the Service on the default of that annotation (`all`, no
//! probe) and is reported, never half applied: `weighted` without valid weights is `all`.

use std::collections::BTreeMap;
use std::fmt;

use crate::view::dns_label;

/// `all` | `closest` | `failover` | `weighted`.
pub const STRATEGY: &str = "fedplane.io/dns-strategy";
/// The clusters of `failover`, most preferred first.
pub const FAILOVER_ORDER: &str = "fedplane.io/failover-order";
/// The clusters' weights of `weighted`.
pub const WEIGHTS: &str = "fedplane.io/weights";
/// `tcp:PORT` or `http:PORT/PATH`.
pub const HEALTH_CHECK: &str = "fedplane.io/health-check";
/// The largest weight of one cluster.
pub const MAX_WEIGHT: u32 = 1000;
/// The most clusters a failover order or a weights list may name.
pub const MAX_NAMED: usize = 256;

/// How the global and region names of a Service choose among its healthy clusters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Every healthy cluster (the Federation v1 answer).
    #[default]
    All,
    /// Every healthy cluster, each address record carrying its cluster's zone and region so
    /// fedplane-dns answers a client the addresses of its own zone, else its region, else all.
    Closest,
    /// Only the first healthy cluster in this order; clusters not named come after, in
    /// `--cluster` order.
    Failover(Vec<String>),
    /// One address per answer, chosen by these cluster weights; clusters not named take part
    /// only while no named one is healthy.
    Weighted(BTreeMap<String, u32>),
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::All => "all",
            Self::Closest => "closest",
            Self::Failover(_) => "failover",
            Self::Weighted(_) => "weighted",
        })
    }
}

/// An active health check of a Service's ingress addresses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    /// A TCP connection to the port is accepted.
    Tcp {
        /// Port.
        port: u16,
    },
    /// `GET PATH` on the port answers a status from 200 to 399 (as the kubelet's probes).
    Http {
        /// Port.
        port: u16,
        /// Path, starting with `/`.
        path: String,
    },
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { port } => write!(f, "tcp:{port}"),
            Self::Http { port, path } => write!(f, "http:{port}{path}"),
        }
    }
}

/// A Service's traffic policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Its strategy.
    pub strategy: Strategy,
    /// Its health check, if any.
    pub check: Option<Check>,
}

/// The policy the annotations ask for, and what was wrong with them (each a sentence naming
/// the annotation). `members` are the federation's clusters (empty: not checked): a name that
/// is none of them is reported (a typo would otherwise sink to the end of a failover order).
pub fn parse(
    annotations: Option<&BTreeMap<String, String>>,
    members: &[String],
) -> (Policy, Vec<String>) {
    let mut problems = Vec::new();
    let get = |key: &str| annotations.and_then(|a| a.get(key)).map(|v| v.trim());
    let strategy = match get(STRATEGY) {
        None => Strategy::All,
        Some(s) => match strategy(s, get(FAILOVER_ORDER), get(WEIGHTS)) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{e}; the strategy stays all"));
                Strategy::All
            }
        },
    };
    let named: Vec<&String> = match &strategy {
        Strategy::Failover(order) => order.iter().collect(),
        Strategy::Weighted(weights) => weights.keys().collect(),
        Strategy::All | Strategy::Closest => Vec::new(),
    };
    let unknown: Vec<&str> = named
        .into_iter()
        .filter(|c| !members.is_empty() && !members.contains(c))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        problems.push(format!(
            "{} names no member cluster: {} (the members are {})",
            if matches!(strategy, Strategy::Failover(_)) {
                FAILOVER_ORDER
            } else {
                WEIGHTS
            },
            unknown.join(", "),
            members.join(", ")
        ));
    }
    for (key, needs) in [(FAILOVER_ORDER, "failover"), (WEIGHTS, "weighted")] {
        if get(key).is_some() && strategy.to_string() != needs && problems.is_empty() {
            problems.push(format!(
                "{key} is ignored: {STRATEGY} is {strategy}, not {needs}"
            ));
        }
    }
    let check = get(HEALTH_CHECK).and_then(|c| match check(c) {
        Ok(c) => Some(c),
        Err(e) => {
            problems.push(format!("{e}; the Service is not probed"));
            None
        }
    });
    (Policy { strategy, check }, problems)
}

fn strategy(s: &str, order: Option<&str>, weights: Option<&str>) -> Result<Strategy, String> {
    match s.to_ascii_lowercase().as_str() {
        "all" => Ok(Strategy::All),
        "closest" => Ok(Strategy::Closest),
        "failover" => {
            let order = order.unwrap_or_default();
            let mut clusters: Vec<String> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for c in order.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if clusters.len() == MAX_NAMED {
                    return Err(format!(
                        "{FAILOVER_ORDER} names more than {MAX_NAMED} clusters"
                    ));
                }
                let c = c.to_ascii_lowercase();
                dns_label(&c).map_err(|e| format!("{FAILOVER_ORDER}: cluster {e}"))?;
                if !seen.insert(c.clone()) {
                    return Err(format!("{FAILOVER_ORDER}: cluster {c} is named twice"));
                }
                clusters.push(c);
            }
            Ok(Strategy::Failover(clusters))
        }
        "weighted" => {
            let Some(weights) = weights else {
                return Err(format!(
                    "{STRATEGY} weighted needs {WEIGHTS} (e.g. fcp=3,usa=1)"
                ));
            };
            let mut map = BTreeMap::new();
            for item in weights.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if map.len() == MAX_NAMED {
                    return Err(format!("{WEIGHTS} names more than {MAX_NAMED} clusters"));
                }
                let (c, w) = item
                    .split_once('=')
                    .ok_or_else(|| format!("{WEIGHTS}: {item:?} is not CLUSTER=WEIGHT"))?;
                let c = c.trim().to_ascii_lowercase();
                dns_label(&c).map_err(|e| format!("{WEIGHTS}: cluster {e}"))?;
                let w: u32 = w
                    .trim()
                    .parse()
                    .ok()
                    .filter(|w| (1..=MAX_WEIGHT).contains(w))
                    .ok_or_else(|| {
                        format!("{WEIGHTS}: the weight of {c} must be 1 to {MAX_WEIGHT}")
                    })?;
                if map.insert(c.clone(), w).is_some() {
                    return Err(format!("{WEIGHTS}: cluster {c} is named twice"));
                }
            }
            if map.is_empty() {
                return Err(format!("{WEIGHTS} names no cluster"));
            }
            Ok(Strategy::Weighted(map))
        }
        _ => Err(format!(
            "{STRATEGY} {s:?} is not one of all, closest, failover, weighted"
        )),
    }
}

fn check(s: &str) -> Result<Check, String> {
    let bad = || format!("{HEALTH_CHECK} {s:?} is not tcp:PORT or http:PORT/PATH");
    let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
    let (port, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
    match kind.to_ascii_lowercase().as_str() {
        "tcp" if path.is_empty() => Ok(Check::Tcp { port }),
        "http" => {
            // The path goes into a request line as is: printable ASCII without spaces.
            if !path.bytes().all(|b| b.is_ascii_graphic()) || path.len() > 1024 {
                return Err(format!(
                    "{HEALTH_CHECK} {s:?}: the path must be printable ASCII without spaces"
                ));
            }
            Ok(Check::Http {
                port,
                path: if path.is_empty() {
                    "/".into()
                } else {
                    path.into()
                },
            })
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(pairs: &[(&str, &str)]) -> (Policy, Vec<String>) {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        parse(Some(&map), &[])
    }

    #[test]
    fn no_annotation_is_all_without_a_probe() {
        assert_eq!(parse(None, &[]), (Policy::default(), vec![]));
        assert_eq!(policy(&[("other", "x")]), (Policy::default(), vec![]));
    }

    #[test]
    fn every_strategy_and_check_parses() {
        let (p, e) = policy(&[(STRATEGY, "Closest"), (HEALTH_CHECK, "tcp:443")]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(p.strategy, Strategy::Closest);
        assert_eq!(p.check, Some(Check::Tcp { port: 443 }));
        let (p, e) = policy(&[
            (STRATEGY, "failover"),
            (FAILOVER_ORDER, " fcp, USA ,chn"),
            (HEALTH_CHECK, "http:8080/healthz?full=1"),
        ]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            p.strategy,
            Strategy::Failover(vec!["fcp".into(), "usa".into(), "chn".into()])
        );
        assert_eq!(
            p.check,
            Some(Check::Http {
                port: 8080,
                path: "/healthz?full=1".into()
            })
        );
        let (p, e) = policy(&[(STRATEGY, "weighted"), (WEIGHTS, "fcp=3,usa=1,chn=1")]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            p.strategy,
            Strategy::Weighted(BTreeMap::from([
                ("chn".into(), 1),
                ("fcp".into(), 3),
                ("usa".into(), 1)
            ]))
        );
        assert_eq!(
            policy(&[(HEALTH_CHECK, "http:80")]).0.check,
            Some(Check::Http {
                port: 80,
                path: "/".into()
            })
        );
        assert_eq!(
            policy(&[(STRATEGY, "failover")]).0.strategy,
            Strategy::Failover(vec![])
        );
    }

    #[test]
    fn a_bad_annotation_keeps_the_default_and_says_why() {
        for (pairs, want) in [
            (&[(STRATEGY, "nearest")][..], "not one of"),
            (&[(STRATEGY, "weighted")][..], "needs fedplane.io/weights"),
            (
                &[(STRATEGY, "weighted"), (WEIGHTS, "fcp")][..],
                "CLUSTER=WEIGHT",
            ),
            (
                &[(STRATEGY, "weighted"), (WEIGHTS, "fcp=0")][..],
                "1 to 1000",
            ),
            (
                &[(STRATEGY, "weighted"), (WEIGHTS, "fcp=1001")][..],
                "1 to 1000",
            ),
            (
                &[(STRATEGY, "weighted"), (WEIGHTS, "fcp=x")][..],
                "1 to 1000",
            ),
            (
                &[(STRATEGY, "weighted"), (WEIGHTS, "fcp=1,fcp=2")][..],
                "twice",
            ),
            (
                &[(STRATEGY, "weighted"), (WEIGHTS, " , ")][..],
                "names no cluster",
            ),
            (
                &[(STRATEGY, "weighted"), (WEIGHTS, "a_b=1")][..],
                "DNS label",
            ),
            (
                &[(STRATEGY, "failover"), (FAILOVER_ORDER, "a,a")][..],
                "twice",
            ),
            (
                &[(STRATEGY, "failover"), (FAILOVER_ORDER, "a.b")][..],
                "DNS label",
            ),
        ] {
            let (p, e) = policy(pairs);
            assert_eq!(p.strategy, Strategy::All, "{pairs:?}");
            assert_eq!(e.len(), 1, "{pairs:?}: {e:?}");
            assert!(
                e[0].contains(want) && e[0].contains("stays all"),
                "{pairs:?}: {e:?}"
            );
        }
        for c in [
            "tcp",
            "tcp:",
            "tcp:0",
            "tcp:65536",
            "tcp:80/x",
            "udp:53",
            "http:x/",
            "http:80/a b",
            "http:80/\u{e9}",
        ] {
            let (p, e) = policy(&[(HEALTH_CHECK, c)]);
            assert_eq!(p.check, None, "{c}");
            assert!(e.len() == 1 && e[0].contains("not probed"), "{c}: {e:?}");
        }
    }

    #[test]
    fn a_cluster_that_is_no_member_is_reported_and_a_huge_list_refused() {
        let members = ["fcp".to_owned(), "usa".to_owned()];
        let map = |v: &str| {
            BTreeMap::from([
                (STRATEGY.to_owned(), "failover".to_owned()),
                (FAILOVER_ORDER.to_owned(), v.to_owned()),
            ])
        };
        let (p, e) = parse(Some(&map("usaa,fcp")), &members);
        assert_eq!(
            p.strategy,
            Strategy::Failover(vec!["usaa".into(), "fcp".into()])
        );
        assert!(
            e.len() == 1 && e[0].contains("usaa") && e[0].contains("fcp, usa"),
            "{e:?}"
        );
        assert!(parse(Some(&map("usa,fcp")), &members).1.is_empty());
        let long: Vec<String> = (0..40_000).map(|i| format!("c{i}")).collect();
        let t = std::time::Instant::now();
        let (p, e) = parse(Some(&map(&long.join(","))), &members);
        assert_eq!(p.strategy, Strategy::All);
        assert!(e[0].contains("more than 256"), "{e:?}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn an_order_or_weights_without_their_strategy_is_reported() {
        let (p, e) = policy(&[(FAILOVER_ORDER, "fcp,usa")]);
        assert_eq!(p.strategy, Strategy::All);
        assert!(e.len() == 1 && e[0].contains("ignored"), "{e:?}");
        let (p, e) = policy(&[(STRATEGY, "failover"), (WEIGHTS, "fcp=1")]);
        assert_eq!(p.strategy, Strategy::Failover(vec![]));
        assert!(e.len() == 1 && e[0].contains("not weighted"), "{e:?}");
    }
}

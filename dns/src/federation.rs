//! The federation short names of Federation v1 (`--federation NAME=DOMAIN`, as kube-dns's
//! `--federations`), free of I/O.
//!
//! A pod asks `<svc>.<ns>.<NAME>.svc.<cluster-domain>` (its cluster's CoreDNS forwards
//! `<NAME>.svc.<cluster-domain>` to fedplane-dns); the answer is a CNAME to the zone-level name
//! of the pod's own cluster, `<svc>.<ns>.<NAME>.svc.<zone>.<region>.<DOMAIN>` (`--locality`),
//! followed by the rest of the chain that fedplane-controller's records make (the zone name
//! falls back to the region and the global name when the cluster has no healthy endpoint).
//! Without a zone the CNAME names the region level; without either, the global name. A
//! named port's SRV name, `_<port>._<proto>.<svc>.<ns>.<NAME>.svc.<cluster-domain>`, is an alias
//! of the same level's `_<port>._<proto>.…` name in the same way (kube-dns's SRV names). A
//! namespace's name (`<ns>.<NAME>.svc.<cluster-domain>`) and `_<proto>.<svc>.<ns>.…` exist and
//! hold nothing (NODATA: names are below them); any other name below
//! `<NAME>.svc.<cluster-domain>` does not exist; the suffix itself exists, holding only its SOA.

use hickory_proto::rr::Name;

/// Why a federation setting is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FederationError {
    /// `--federation` is not `NAME=DOMAIN`.
    #[error("--federation {0:?}: expected NAME=DOMAIN (e.g. federation=example.com)")]
    Pair(String),
    /// A name or domain that is not one.
    #[error("{what} {value:?} is not a DNS {kind}")]
    Name {
        /// What was given.
        what: &'static str,
        /// The value.
        value: String,
        /// `label` or `name`.
        kind: &'static str,
    },
    /// `--locality` is not `zone=Z,region=R`.
    #[error("--locality {0:?}: expected zone=Z,region=R (either may be left out)")]
    Locality(String),
    /// The same federation name twice.
    #[error("--federation {0} is given twice")]
    Twice(String),
}

/// One federation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Federation {
    /// `<NAME>.svc.<cluster-domain>.`, lower case: what pods ask below.
    suffix: Name,
    /// The federation's name, lower case.
    name: String,
    /// Its DNS zone, lower case, fully qualified.
    domain: Name,
}

/// Every `--federation`, with the cluster domain and this instance's locality.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Federations {
    all: Vec<Federation>,
    zone: Option<String>,
    region: Option<String>,
}

/// What a name below a federation suffix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Short {
    /// `<svc>.<ns>.<NAME>.svc.<cluster-domain>` (or its SRV name
    /// `_<port>._<proto>.<svc>.<ns>…`): an alias of this name.
    Alias(Name),
    /// The suffix itself: exists, holds only its SOA.
    Apex(Suffix),
    /// `<ns>.<NAME>.svc.<cluster-domain>` or `_<proto>.<svc>.<ns>…`: exists (names are below
    /// it), holds nothing: NODATA, as an empty non-terminal (RFC 8020: NXDOMAIN would deny
    /// every name below).
    Empty(Suffix),
    /// Any other name below the suffix: NXDOMAIN, with the suffix's SOA.
    NxDomain(Suffix),
}

/// A federation suffix and the federation's domain (whose SOA it borrows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suffix {
    /// `<NAME>.svc.<cluster-domain>.`
    pub name: Name,
    /// The federation's DNS zone.
    pub domain: Name,
}

fn label(what: &'static str, s: &str) -> Result<String, FederationError> {
    if crate::record::is_dns_label(s) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(FederationError::Name {
            what,
            value: s.to_owned(),
            kind: "label",
        })
    }
}

fn fqdn(what: &'static str, s: &str) -> Result<Name, FederationError> {
    let bad = || FederationError::Name {
        what,
        value: s.to_owned(),
        kind: "name",
    };
    let trimmed = s.trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(bad());
    }
    for l in trimmed.split('.') {
        label(what, l).map_err(|_| bad())?;
    }
    let mut n = Name::from_ascii(trimmed).map_err(|_| bad())?.to_lowercase();
    n.set_fqdn(true);
    Ok(n)
}

impl Federations {
    /// Checks `--federation` values (`NAME=DOMAIN`), `--cluster-domain` and `--locality`
    /// (`zone=Z,region=R`, either part optional; empty for none).
    pub fn new(
        federations: &[String],
        cluster_domain: &str,
        locality: &str,
    ) -> Result<Self, FederationError> {
        let cluster = fqdn("--cluster-domain", cluster_domain)?;
        let mut all: Vec<Federation> = Vec::new();
        for f in federations {
            let (name, domain) = f
                .split_once('=')
                .ok_or_else(|| FederationError::Pair(f.clone()))?;
            let name = label("federation name", name.trim())?;
            let domain = fqdn("federation domain", domain.trim())?;
            if all.iter().any(|x| x.name == name) {
                return Err(FederationError::Twice(name));
            }
            let suffix = Name::from_ascii(format!("{name}.svc"))
                .and_then(|n| n.append_domain(&cluster))
                .map_err(|_| FederationError::Pair(f.clone()))?;
            all.push(Federation {
                suffix,
                name,
                domain,
            });
        }
        let (mut zone, mut region) = (None, None);
        for part in locality.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            // An empty value is one not given (`zone=,region=` from unset deploy settings).
            match part.split_once('=').map(|(k, v)| (k, v.trim())) {
                Some(("zone" | "region", "")) => {}
                Some(("zone", z)) if zone.is_none() => zone = Some(label("zone", z)?),
                Some(("region", r)) if region.is_none() => region = Some(label("region", r)?),
                _ => return Err(FederationError::Locality(locality.to_owned())),
            }
        }
        if zone.is_some() && region.is_none() {
            // Zone names are the leaves of region names: a zone alone names nothing.
            return Err(FederationError::Locality(locality.to_owned()));
        }
        Ok(Self { all, zone, region })
    }

    /// Whether any federation is configured.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The suffixes, `<NAME>.svc.<cluster-domain>.`
    pub fn suffixes(&self) -> impl Iterator<Item = &Name> {
        self.all.iter().map(|f| &f.suffix)
    }

    /// What `lname` (lower case, fully qualified) is, when it is at or below a federation
    /// suffix; `None` otherwise.
    pub fn classify(&self, lname: &Name) -> Option<Short> {
        let f = self.all.iter().find(|f| f.suffix.zone_of(lname))?;
        let below = usize::from(lname.num_labels() - f.suffix.num_labels());
        let suffix = || Suffix {
            name: f.suffix.clone(),
            domain: f.domain.clone(),
        };
        let labels: Vec<&[u8]> = lname.iter().take(below.min(4)).collect();
        let underscored = |n: usize| labels.iter().take(n).all(|l| l.starts_with(b"_"));
        Some(match below {
            0 => Short::Apex(suffix()),
            1 => Short::Empty(suffix()),
            3 if underscored(1) => Short::Empty(suffix()),
            2 | 4 if below == 2 || underscored(2) => {
                let mut target = Name::from_labels(
                    labels
                        .iter()
                        .copied()
                        .chain([f.name.as_bytes(), b"svc".as_slice()]),
                )
                .ok()?;
                for level in [&self.zone, &self.region].into_iter().flatten() {
                    target = Name::from_labels(target.iter().chain([level.as_bytes()])).ok()?;
                }
                match target.append_domain(&f.domain) {
                    Ok(t) => Short::Alias(t),
                    Err(_) => Short::NxDomain(suffix()), // too long for a name
                }
            }
            _ => Short::NxDomain(suffix()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("name")
    }

    fn feds(locality: &str) -> Federations {
        Federations::new(
            &["federation=example.com".into(), "other=Other.Org.".into()],
            "cluster.local",
            locality,
        )
        .expect("valid")
    }

    #[test]
    fn a_service_name_is_an_alias_of_its_clusters_zone_level_name() {
        let f = feds("zone=fr,region=europe");
        assert_eq!(
            f.classify(&name("hello-world.default.federation.svc.cluster.local.")),
            Some(Short::Alias(name(
                "hello-world.default.federation.svc.fr.europe.example.com."
            )))
        );
        assert_eq!(
            f.classify(&name("a.b.other.svc.cluster.local.")),
            Some(Short::Alias(name("a.b.other.svc.fr.europe.other.org.")))
        );
        assert_eq!(
            feds("region=europe").classify(&name("a.b.federation.svc.cluster.local.")),
            Some(Short::Alias(name("a.b.federation.svc.europe.example.com.")))
        );
        assert_eq!(
            feds("").classify(&name("a.b.federation.svc.cluster.local.")),
            Some(Short::Alias(name("a.b.federation.svc.example.com.")))
        );
        // A named port's SRV name, and the protocol's empty non-terminal above it.
        assert_eq!(
            f.classify(&name(
                "_http._tcp.hello.default.federation.svc.cluster.local."
            )),
            Some(Short::Alias(name(
                "_http._tcp.hello.default.federation.svc.fr.europe.example.com."
            )))
        );
        assert!(matches!(
            f.classify(&name("_tcp.hello.default.federation.svc.cluster.local.")),
            Some(Short::Empty(_))
        ));
    }

    #[test]
    fn other_names_below_the_suffix_do_not_exist_and_others_are_not_ours() {
        let f = feds("zone=fr,region=europe");
        let suffix = Suffix {
            name: name("federation.svc.cluster.local."),
            domain: name("example.com."),
        };
        assert_eq!(
            f.classify(&name("federation.svc.cluster.local.")),
            Some(Short::Apex(suffix.clone()))
        );
        assert_eq!(
            f.classify(&name("default.federation.svc.cluster.local.")),
            Some(Short::Empty(suffix.clone()))
        );
        for n in [
            "x.hello.default.federation.svc.cluster.local.",
            "y.x.hello.default.federation.svc.cluster.local.",
            "_http.x.hello.default.federation.svc.cluster.local.",
            "z._http._tcp.hello.default.federation.svc.cluster.local.",
        ] {
            assert_eq!(
                f.classify(&name(n)),
                Some(Short::NxDomain(suffix.clone())),
                "{n}"
            );
        }
        for n in [
            "hello.default.svc.cluster.local.",
            "svc.cluster.local.",
            "hello.default.federation.svc.example.com.",
        ] {
            assert_eq!(f.classify(&name(n)), None, "{n}");
        }
        assert!(Federations::default().classify(&suffix.name).is_none());
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = |feds: &[&str], cd: &str, loc: &str| {
            let v: Vec<String> = feds.iter().map(ToString::to_string).collect();
            Federations::new(&v, cd, loc)
                .expect_err("invalid")
                .to_string()
        };
        assert!(bad(&["federation"], "cluster.local", "").contains("NAME=DOMAIN"));
        assert!(bad(&["fed.x=example.com"], "cluster.local", "").contains("federation name"));
        assert!(bad(&["f=exa mple.com"], "cluster.local", "").contains("federation domain"));
        assert!(bad(&["f=a.com", "f=b.com"], "cluster.local", "").contains("twice"));
        assert!(bad(&["f=a.com"], "", "").contains("--cluster-domain"));
        assert!(bad(&["f=a.com"], "cluster.local", "zone=fr").contains("--locality"));
        assert!(bad(&["f=a.com"], "cluster.local", "city=paris").contains("--locality"));
        assert!(bad(&["f=a.com"], "cluster.local", "zone=f r,region=eu").contains("zone"));
        assert!(bad(&["f=a.com"], "cluster.local", "zone=fr,region=").contains("--locality"));
    }

    #[test]
    fn empty_locality_values_are_values_not_given() {
        let v = vec!["federation=example.com".to_owned()];
        let f = Federations::new(&v, "cluster.local", "zone=,region=").expect("valid");
        assert_eq!((f.zone.as_ref(), f.region.as_ref()), (None, None));
        let f = Federations::new(&v, "cluster.local", "zone=,region=Europe").expect("valid");
        assert_eq!(f.zone, None);
        assert_eq!(f.region.as_deref(), Some("europe"));
    }
}

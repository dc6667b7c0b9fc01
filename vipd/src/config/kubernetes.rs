//! Kubernetes mode's settings: the flags (and the config file's pools) → a checked
//! [`KubeSettings`], with `NAMESPACE/NAME` flags as [`ObjectName`]s.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::{Cli, ConfigError, invalid};
use crate::bgp::config::BgpSpec;
use crate::bgp::engine::EngineSettings;
use crate::ipam::{Mode, PoolSpec, Pools};

/// A namespaced object's name, `NAMESPACE/NAME` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectName {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Kubernetes mode.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// Kubeconfig file, if not inferred.
    pub kubeconfig: Option<PathBuf>,
    /// Lease holder identity.
    pub node_name: String,
    /// The Lease.
    pub lease: ObjectName,
    /// Lease duration.
    pub lease_duration: Duration,
    /// The loadBalancerClass served.
    pub class: String,
    /// Pools from the config file.
    pub pools: Pools,
    /// Pool ConfigMap.
    pub pools_configmap: Option<ObjectName>,
    /// Legacy kube-keepalived-vip ConfigMap.
    pub legacy_configmap: Option<ObjectName>,
    /// Quarantine of released addresses.
    pub quarantine: Duration,
    /// BGP mode (`--bgp`): where BIRD is.
    pub bgp: Option<EngineSettings>,
}

fn namespaced(flag: &str, value: &str) -> Result<ObjectName, ConfigError> {
    match value.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(ObjectName {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            })
        }
        _ => Err(invalid(format!("{flag} {value:?}: use NAMESPACE/NAME"))),
    }
}

/// Kubernetes mode's settings, from the flags and the config file's `pools`.
pub(super) fn kube_settings(
    cli: &Cli,
    node: String,
    pools: &[PoolSpec],
    bgp: Option<&BgpSpec>,
) -> Result<KubeSettings, ConfigError> {
    let pools = Pools::with_bgp(pools, bgp).map_err(|e| invalid(e.to_string()))?;
    if let Some(p) = pools.iter().find(|p| p.mode == Mode::Bgp)
        && !cli.bgp
    {
        return Err(invalid(format!(
            "pools[{}].mode: bgp needs --bgp (BGP mode watches EndpointSlices and Nodes)",
            p.name
        )));
    }
    if node.is_empty() {
        return Err(invalid("--kubernetes needs --node-name (or $NODE_NAME)"));
    }
    if cli.lease_duration < Duration::from_secs(1) {
        return Err(invalid("--lease-duration must be at least 1s"));
    }
    Ok(KubeSettings {
        kubeconfig: cli.kubeconfig.clone(),
        node_name: node,
        lease: namespaced("--lease", &cli.lease)?,
        lease_duration: cli.lease_duration,
        class: cli.load_balancer_class.clone(),
        pools,
        pools_configmap: cli
            .pools_configmap
            .as_deref()
            .map(|v| namespaced("--pools-configmap", v))
            .transpose()?,
        legacy_configmap: cli
            .legacy_configmap
            .as_deref()
            .map(|v| namespaced("--legacy-configmap", v))
            .transpose()?,
        quarantine: cli.quarantine,
        bgp: cli.bgp.then(|| EngineSettings {
            bird: cli.bird.clone(),
            run_dir: cli.bgp_run_dir.clone(),
        }),
    })
}

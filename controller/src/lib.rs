//! fedplane-controller: watches Services, EndpointSlices and Nodes in every member cluster and
//! keeps the federated service records (zone, region and global names, with CNAME fallback)
//! true in etcd, where fedplane-dns serves them.
//!
//! Pure decision logic, no I/O:
//! - [`selector`]: Kubernetes label selectors (`--service-selector`);
//! - [`policy`]: a Service's annotations → its strategy and health check;
//! - [`view`]: one cluster's objects → which federated Services it has, where their ready
//!   endpoints are, and what it ignored;
//! - [`plan`]: the cluster views → the desired etcd keys and values, and the diff against the
//!   keys we own;
//! - [`reach`]: which clusters count, given when each was last reachable;
//! - [`health`]: the health checks' results (N failures down, M successes up).
//!
//! Edges: [`snapshot`] (YAML files), [`source`] (live clusters through kube watchers),
//! [`prober`] (the health checks' TCP and HTTP probes), [`store`] (etcd: owned keys and fenced transactions), [`election`] (one writer among
//! replicas), [`reconcile`] (the loop), [`config`] and [`probes`] (readiness and metric help
//! texts).

pub mod config;
pub mod election;
#[cfg(test)]
mod fixtures;
pub mod health;
pub mod kinds;
pub mod plan;
pub mod policy;
pub mod prober;
pub mod probes;
pub mod reach;
pub mod reconcile;
pub mod selector;
pub mod snapshot;
pub mod source;
pub mod store;
pub mod view;

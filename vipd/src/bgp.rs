//! BGP mode (`mode: bgp` pools): LoadBalancer addresses announced to routers through a real
//! BGP speaker (BIRD 2) beside fedplane-vipd, rather than held with VRRP on one node.
//!
//! - [`config`]: the `bgp:` section (speaker, peers, BFD, graceful restart, withdrawal
//!   policy) and each pool's `bgp:` (communities, aggregation, node selector), checked with
//!   errors that name the field. Free of I/O.
//! - [`bird`]: BIRD's configuration rendered (the peers this node's labels select, vipd's
//!   routes exported with their pools' communities) and its control socket's replies read.
//! - [`routes`]: the kernel table BIRD announces from, written through rtnetlink (only
//!   vipd's routes, protocol 102, are ever changed).
//! - [`engine`]: BIRD as vipd's child: configuration checked and reloaded in place, the
//!   daemon restarted if it exits, its control socket asked about the sessions.
//! - [`task`]: the BGP task: BIRD configured, the routes kept in the table, the sessions
//!   followed; on shutdown the routes are withdrawn before BIRD stops.
//! - [`publish`]: what Kubernetes mode hands the BGP task on each pass: BIRD's configuration
//!   for this node and the routes decided.
//! - [`views`]: Nodes, EndpointSlices and Services as the decision sees them.
//! - [`decide`]: which routes this node announces, and why each address it does not: pool
//!   mode, `externalTrafficPolicy`, ready endpoints on this node and elsewhere, the node
//!   cordoned, excluded or shutting down. Free of I/O, property-tested.

pub mod bird;
pub mod config;
pub mod decide;
pub mod engine;
pub mod publish;
pub mod routes;
pub mod task;
pub mod views;

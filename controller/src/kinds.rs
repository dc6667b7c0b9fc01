//! The custom kinds the controller reads, as much of them as it uses: Gateway API
//! (`gateway.networking.k8s.io`) Gateways and HTTPRoutes, GRPCRoutes and TLSRoutes, and
//! ExternalDNS's `DNSEndpoint` (`externaldns.k8s.io/v1alpha1`, which k8gb writes too). Fields
//! not listed are ignored; every listed field may be absent. Each implements
//! [`kube::Resource`] by hand (no CRD generation: the controller never creates these kinds).
//!
//! | kind | group/version | plural |
//! |---|---|---|
//! | Gateway | `gateway.networking.k8s.io/v1` | `gateways` |
//! | HTTPRoute | `gateway.networking.k8s.io/v1` | `httproutes` |
//! | GRPCRoute | `gateway.networking.k8s.io/v1` | `grpcroutes` |
//! | TLSRoute | `gateway.networking.k8s.io/v1alpha2` | `tlsroutes` |
//! | DNSEndpoint | `externaldns.k8s.io/v1alpha1` | `dnsendpoints` |

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::NamespaceResourceScope;
use serde::{Deserialize, Serialize};

macro_rules! resource {
    ($ty:ty, $kind:literal, $group:literal, $version:literal, $plural:literal) => {
        impl Resource for $ty {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind((): &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }

            fn group((): &()) -> Cow<'_, str> {
                Cow::Borrowed($group)
            }

            fn version((): &()) -> Cow<'_, str> {
                Cow::Borrowed($version)
            }

            fn plural((): &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }

            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// The Gateway API group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// A Gateway: its listeners' hostnames and the addresses it got.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gateway {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `spec`.
    #[serde(default)]
    pub spec: GatewaySpec,
    /// `status`.
    #[serde(default)]
    pub status: Option<GatewayStatus>,
}
resource!(
    Gateway,
    "Gateway",
    "gateway.networking.k8s.io",
    "v1",
    "gateways"
);

/// `Gateway.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// `listeners`.
    #[serde(default)]
    pub listeners: Vec<Listener>,
}

/// `Gateway.spec.listeners[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// `name` (what a route's `sectionName` names).
    #[serde(default)]
    pub name: String,
    /// `hostname`: the names its routes may have (a `*.` first label matches any below).
    #[serde(default)]
    pub hostname: Option<String>,
    /// `port`.
    #[serde(default)]
    pub port: Option<i32>,
    /// `protocol`: `HTTP`, `HTTPS`, `TLS`, `TCP`, `UDP` or an implementation's own.
    #[serde(default)]
    pub protocol: Option<String>,
    /// `allowedRoutes`: which routes may attach.
    #[serde(default)]
    pub allowed_routes: Option<AllowedRoutes>,
}

/// `Gateway.spec.listeners[].allowedRoutes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowedRoutes {
    /// `namespaces`.
    #[serde(default)]
    pub namespaces: Option<RouteNamespaces>,
    /// `kinds` (empty: those of the listener's protocol).
    #[serde(default)]
    pub kinds: Vec<RouteGroupKind>,
}

/// `allowedRoutes.namespaces`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteNamespaces {
    /// `from`: `Same` (the default), `All` or `Selector`.
    #[serde(default)]
    pub from: Option<String>,
}

/// `allowedRoutes.kinds[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteGroupKind {
    /// `group` (default `gateway.networking.k8s.io`).
    #[serde(default)]
    pub group: Option<String>,
    /// `kind`.
    #[serde(default)]
    pub kind: String,
}

/// `Gateway.status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    /// `addresses`: where the Gateway is reachable.
    #[serde(default)]
    pub addresses: Vec<GatewayAddress>,
}

/// `Gateway.status.addresses[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayAddress {
    /// `type`: `IPAddress` (the default), `Hostname`, or an implementation's own.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    /// `value`.
    #[serde(default)]
    pub value: String,
}

/// A route of the Gateway API: what HTTPRoute, GRPCRoute and TLSRoute share (their other
/// fields are ignored).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// `parentRefs`: the Gateways (or listeners of them) it attaches to.
    #[serde(default)]
    pub parent_refs: Vec<ParentRef>,
    /// `hostnames`; none: the hostnames of the listeners it attaches to.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// `rules`.
    #[serde(default)]
    pub rules: Vec<RouteRule>,
}

/// `spec.parentRefs[]` and `status.parents[].parentRef`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// `group` (default `gateway.networking.k8s.io`).
    #[serde(default)]
    pub group: Option<String>,
    /// `kind` (default `Gateway`).
    #[serde(default)]
    pub kind: Option<String>,
    /// `namespace` (default the route's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// `name`.
    #[serde(default)]
    pub name: String,
    /// `sectionName`: one listener by name.
    #[serde(default)]
    pub section_name: Option<String>,
    /// `port`: the listeners on this port.
    #[serde(default)]
    pub port: Option<i32>,
}

/// `spec.rules[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRule {
    /// `backendRefs`.
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
}

/// `spec.rules[].backendRefs[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// `group` (default `""`, the core group).
    #[serde(default)]
    pub group: Option<String>,
    /// `kind` (default `Service`).
    #[serde(default)]
    pub kind: Option<String>,
    /// `name`.
    #[serde(default)]
    pub name: String,
    /// `namespace` (default the route's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// `weight` (default 1; 0: no traffic).
    #[serde(default)]
    pub weight: Option<i32>,
}

/// A route's `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// `parents`: what each parent's controller says of the route.
    #[serde(default)]
    pub parents: Vec<RouteParentStatus>,
}

/// `status.parents[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    /// `parentRef`.
    #[serde(default)]
    pub parent_ref: ParentRef,
    /// `conditions` (`Accepted` is the one read).
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A status condition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `type`.
    #[serde(default, rename = "type")]
    pub type_: String,
    /// `status`: `True`, `False` or `Unknown`.
    #[serde(default)]
    pub status: String,
}

/// What the route kinds share.
pub trait Route {
    /// Its metadata, spec and status.
    fn parts(&self) -> (&ObjectMeta, &RouteSpec, Option<&RouteStatus>);
}

macro_rules! route {
    ($ty:ident, $kind:literal, $version:literal, $plural:literal) => {
        #[doc = concat!("A ", $kind, " (`gateway.networking.k8s.io/", $version, "`).")]
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        pub struct $ty {
            /// Metadata.
            #[serde(default)]
            pub metadata: ObjectMeta,
            /// `spec`.
            #[serde(default)]
            pub spec: RouteSpec,
            /// `status`.
            #[serde(default)]
            pub status: Option<RouteStatus>,
        }
        impl Route for $ty {
            fn parts(&self) -> (&ObjectMeta, &RouteSpec, Option<&RouteStatus>) {
                (&self.metadata, &self.spec, self.status.as_ref())
            }
        }
        resource!($ty, $kind, "gateway.networking.k8s.io", $version, $plural);
    };
}

route!(HttpRoute, "HTTPRoute", "v1", "httproutes");
route!(GrpcRoute, "GRPCRoute", "v1", "grpcroutes");
route!(TlsRoute, "TLSRoute", "v1alpha2", "tlsroutes");

/// ExternalDNS's DNSEndpoint: records to publish, as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsEndpoint {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `spec`.
    #[serde(default)]
    pub spec: DnsEndpointSpec,
}
resource!(
    DnsEndpoint,
    "DNSEndpoint",
    "externaldns.k8s.io",
    "v1alpha1",
    "dnsendpoints"
);

/// `DNSEndpoint.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsEndpointSpec {
    /// `endpoints`.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

/// `DNSEndpoint.spec.endpoints[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// `dnsName`.
    #[serde(default)]
    pub dns_name: String,
    /// `targets`, in the presentation format of `recordType`.
    #[serde(default)]
    pub targets: Vec<String>,
    /// `recordType`: `A`, `AAAA`, `CNAME`, `TXT`, `SRV`, `MX` (others are refused).
    #[serde(default)]
    pub record_type: String,
    /// `recordTTL` in seconds (0 or absent: the controller's `--ttl`).
    #[serde(default, rename = "recordTTL")]
    pub record_ttl: Option<i64>,
    /// `setIdentifier` (weighted and other routing policies of cloud providers; refused).
    #[serde(default)]
    pub set_identifier: Option<String>,
}

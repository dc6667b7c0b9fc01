//! fedplane-controller's Gateway API and DNSEndpoint sources end to end (`--source
//! gateway-httproute,gateway-grpcroute,gateway-tlsroute,dnsendpoint`): the seed's three member
//! clusters (test fakes of the Kubernetes API server, speaking the real list/watch protocol to
//! the real kube client), real etcd, the real fedplane-dns and dig.
//!
//! A route hostname answers the addresses of the Gateways that accepted the route, in every
//! cluster where a backend has a ready endpoint; it follows health and the Gateway's
//! addresses, survives an outage within the grace period, is withdrawn past it, and goes with
//! its route. A DNSEndpoint's records answer as they are (A, AAAA, CNAME, TXT, SRV, MX); one
//! claiming a host an older Ingress has gets a Warning Event and changes nothing. Snapshot
//! files with these kinds give the same records as the live clusters.

mod common;

use common::*;
use fedplane_testkit::dig;
use fedplane_testkit::kube_fake::FakeKubeApi;
use fedplane_testkit::wait_until;
use serde_json::{Value, json};

const SHOP: &str = "shop.example.com";
const GW: &str = "gateway.networking.k8s.io/v1";
const SOURCES: &str =
    "service,ingress,gateway-httproute,gateway-grpcroute,gateway-tlsroute,dnsendpoint";

/// Gateway `infra/gw` with a listener for `*.example.com` and these addresses.
fn gateway(ip: &str) -> Value {
    json!({"apiVersion": GW, "kind": "Gateway",
        "metadata": {"namespace": "infra", "name": "gw"},
        "spec": {"gatewayClassName": "example", "listeners": [
            {"name": "web", "port": 80, "protocol": "HTTP", "hostname": "*.example.com",
             "allowedRoutes": {"namespaces": {"from": "All"}}},
            {"name": "tls", "port": 443, "protocol": "TLS", "hostname": "*.example.com",
             "allowedRoutes": {"namespaces": {"from": "All"}}}]},
        "status": {"addresses": [{"type": "IPAddress", "value": ip}]}})
}

/// A route of `kind` (`apiVersion`) named `name` in `default` for `hostnames`, attached to
/// `infra/gw` and accepted by it, with backend `shop`.
fn route(api_version: &str, kind: &str, name: &str, hostnames: &[&str]) -> Value {
    let parent = json!({"group": "gateway.networking.k8s.io", "kind": "Gateway",
                        "namespace": "infra", "name": "gw"});
    json!({"apiVersion": api_version, "kind": kind,
        "metadata": {"namespace": "default", "name": name},
        "spec": {"parentRefs": [parent], "hostnames": hostnames,
                 "rules": [{"backendRefs": [{"name": "shop", "port": 80}]}]},
        "status": {"parents": [{"parentRef": parent, "controllerName": "example.com/gateway",
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted"}]}]}})
}

/// The Gateways' namespace.
fn namespaces(fake: &FakeKubeApi) {
    fake.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "infra"}}));
}

#[test]
fn route_hostnames_answer_their_gateways_follow_health_and_go_with_their_route() {
    let fed = Federation::start();
    for (cluster, ip, ready) in [
        ("fcp", "10.210.1.90", true),
        ("usa", "10.210.3.90", true),
        ("chn", "10.210.2.90", false),
    ] {
        let fake = fed.fake(cluster);
        namespaces(fake);
        backend(fake, ready);
        fake.apply(gateway(ip));
        fake.apply(route(GW, "HTTPRoute", "shop", &[SHOP, "shop.other.org"]));
    }
    fed.fake("fcp")
        .apply(route(GW, "GRPCRoute", "rpc", &["rpc.example.com"]));
    fed.fake("usa").apply(route(
        "gateway.networking.k8s.io/v1alpha2",
        "TLSRoute",
        "tls",
        &["tls.example.com"],
    ));
    let c = fed.controller(&["--source", SOURCES, "--unreachable-grace", "3s"]);
    // chn's backend has no ready endpoint: not answered.
    fed.await_a(SHOP, &["10.210.1.90", "10.210.3.90"]);
    fed.await_a("rpc.example.com", &["10.210.1.90"]);
    fed.await_a("tls.example.com", &["10.210.3.90"]);
    fed.await_a(GLOBAL, &all_ips());
    // A hostname no listener takes is left out, and said so.
    wait_until(WAIT, "the unmatched hostname in the log", || {
        c.daemon.output().contains("shop.other.org").then_some(())
    });

    // Health follows the backends; the answer follows the Gateway's address.
    backend(fed.fake("fcp"), false);
    fed.await_a(SHOP, &["10.210.3.90"]);
    backend(fed.fake("chn"), true);
    backend(fed.fake("fcp"), true);
    fed.fake("usa").apply(gateway("10.210.3.91"));
    fed.await_a(SHOP, &["10.210.1.90", "10.210.2.90", "10.210.3.91"]);

    // A Gateway that stops accepting the route: not through it.
    let mut refused = route(GW, "HTTPRoute", "shop", &[SHOP]);
    refused["status"]["parents"][0]["conditions"][0]["status"] = json!("False");
    fed.fake("chn").apply(refused);
    fed.await_a(SHOP, &["10.210.1.90", "10.210.3.91"]);
    fed.fake("chn")
        .apply(route(GW, "HTTPRoute", "shop", &[SHOP]));
    fed.await_a(SHOP, &["10.210.1.90", "10.210.2.90", "10.210.3.91"]);

    // An outage shorter than the grace period changes nothing; past it, withdrawn.
    fed.fake("chn").set_reachable(false);
    fed.await_a(SHOP, &["10.210.1.90", "10.210.3.91"]);
    fed.fake("chn").set_reachable(true);
    fed.await_a(SHOP, &["10.210.1.90", "10.210.2.90", "10.210.3.91"]);

    // Deleted everywhere: the name is gone; the others stay.
    for cluster in ["fcp", "usa", "chn"] {
        fed.fake(cluster)
            .delete(GW, "HTTPRoute", Some("default"), "shop");
    }
    fed.await_nxdomain(SHOP);
    fed.await_a("rpc.example.com", &["10.210.1.90"]);
}

/// Waits until `name` answers `rtype` with exactly `want` (sorted as dig prints them).
fn await_answers(fed: &Federation, name: &str, rtype: &str, want: &[&str]) {
    let q = || dig("127.0.0.1", fed.dns_port, &[name, rtype]);
    let found = fedplane_testkit::wait_until_or(WAIT, || {
        let d = q();
        (d.status == "NOERROR" && d.answers(rtype) == want).then_some(())
    });
    assert!(
        found.is_some(),
        "{name} {rtype} did not answer {want:?} within {WAIT:?}:\n{}",
        q().raw
    );
}

fn dns_endpoint(name: &str, endpoints: Value) -> Value {
    json!({"apiVersion": "externaldns.k8s.io/v1alpha1", "kind": "DNSEndpoint",
        "metadata": {"namespace": "default", "name": name},
        "spec": {"endpoints": endpoints}})
}

#[test]
fn dns_endpoints_answer_their_records_and_an_older_ingress_keeps_its_host() {
    let fed = Federation::start();
    // The Ingress is created first: it is the older claim on shop.example.com.
    let fcp = fed.fake("fcp");
    backend(fcp, true);
    fcp.apply(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"namespace": "default", "name": "shop"},
        "spec": {"rules": [{"host": SHOP}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "10.210.1.80"}]}}}),
    );
    // (The DNSEndpoint below is created no earlier; a tie goes to the Ingress, the kind first
    // in the claim order.)
    for (cluster, ip) in [("fcp", "10.210.1.70"), ("usa", "10.210.3.70")] {
        fed.fake(cluster).apply(dns_endpoint(
            "app",
            json!([
                {"dnsName": "app.example.com", "recordType": "A", "targets": [ip], "recordTTL": 45},
                {"dnsName": "app.example.com", "recordType": "AAAA", "targets": ["fd00::70"]},
                {"dnsName": "app.example.com", "recordType": "TXT", "targets": ["owner=team-a"]},
                {"dnsName": "app.example.com", "recordType": "MX", "targets": ["10 mx.example.net"]},
                {"dnsName": "_sip._tcp.app.example.com", "recordType": "SRV",
                 "targets": ["10 5 5060 sip.example.net"]},
                {"dnsName": "www.example.com", "recordType": "CNAME", "targets": ["app.example.com"]},
                {"dnsName": SHOP, "recordType": "A", "targets": ["10.210.1.99"]},
                {"dnsName": "ns.example.com", "recordType": "NS", "targets": ["ns1.example.net"]},
            ]),
        ));
    }
    let c = fed.controller(&["--source", SOURCES]);
    fed.await_a("app.example.com", &["10.210.1.70", "10.210.3.70"]);
    await_answers(&fed, "app.example.com", "AAAA", &["fd00::70"]);
    await_answers(&fed, "app.example.com", "TXT", &["\"owner=team-a\""]);
    await_answers(&fed, "app.example.com", "MX", &["10 mx.example.net."]);
    await_answers(
        &fed,
        "_sip._tcp.app.example.com",
        "SRV",
        // (Weights are shares of 100 within a priority, as CoreDNS answers SkyDNS records.)
        &["10 100 5060 sip.example.net."],
    );
    fed.await_cname("www.example.com", "app.example.com");
    let d = fed.q("app.example.com");
    assert!(d.answer.iter().all(|r| r.ttl == 45), "recordTTL: {}", d.raw);
    // The older Ingress keeps its host; the DNSEndpoint gets a Warning Event.
    fed.await_a(SHOP, &["10.210.1.80"]);
    wait_until(
        WAIT,
        "a HostConflict Warning Event on DNSEndpoint app",
        || {
            fcp.events().into_iter().find(|e| {
                e["reason"] == "HostConflict"
                    && e["regarding"]["kind"] == "DNSEndpoint"
                    && e["regarding"]["name"] == "app"
            })
        },
    );
    // The NS record is refused by name, in the log.
    wait_until(WAIT, "the NS endpoint in the log", || {
        c.daemon
            .output()
            .contains("only A, AAAA, CNAME, TXT, SRV and MX records are published")
            .then_some(())
    });

    // A change is followed; deleted where it was, its records go from there; everywhere: gone.
    fed.fake("usa").apply(dns_endpoint(
        "app",
        json!([{"dnsName": "app.example.com", "recordType": "A", "targets": ["10.210.3.71"]}]),
    ));
    fed.await_a("app.example.com", &["10.210.1.70", "10.210.3.71"]);
    fed.fake("fcp").delete(
        "externaldns.k8s.io/v1alpha1",
        "DNSEndpoint",
        Some("default"),
        "app",
    );
    fed.await_a("app.example.com", &["10.210.3.71"]);
    await_answers(&fed, "app.example.com", "TXT", &[]);
    fed.fake("usa").delete(
        "externaldns.k8s.io/v1alpha1",
        "DNSEndpoint",
        Some("default"),
        "app",
    );
    fed.await_nxdomain("app.example.com");
    fed.await_nxdomain("www.example.com");
    fed.await_a(SHOP, &["10.210.1.80"]);
}

#[test]
fn snapshot_files_with_gateway_routes_and_dns_endpoints_give_the_same_records_as_live() {
    let fed = Federation::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = vec!["--once".to_owned(), "--source".into(), SOURCES.into()];
    for (cluster, ip) in [
        ("fcp", "10.210.1.90"),
        ("usa", "10.210.3.90"),
        ("chn", "10.210.2.90"),
    ] {
        let fake = fed.fake(cluster);
        namespaces(fake);
        backend(fake, cluster != "chn");
        let objects = [
            gateway(ip),
            route(GW, "HTTPRoute", "shop", &[SHOP]),
            route(GW, "GRPCRoute", "rpc", &["rpc.example.com"]),
            dns_endpoint(
                "app",
                json!([{"dnsName": "app.example.com", "recordType": "A", "targets": [ip]},
                       {"dnsName": "app.example.com", "recordType": "TXT", "targets": ["x"]}]),
            ),
        ];
        for o in &objects {
            fake.apply(o.clone());
        }
        args.extend(snapshot_file(dir.path(), cluster, fake, objects));
    }
    let _c = fed.controller(&["--source", SOURCES]);
    fed.await_a(SHOP, &["10.210.1.90", "10.210.3.90"]);
    fed.await_a("rpc.example.com", &["10.210.1.90", "10.210.3.90"]);
    fed.await_a(
        "app.example.com",
        &["10.210.1.90", "10.210.2.90", "10.210.3.90"],
    );
    await_answers(&fed, "app.example.com", "TXT", &["\"x\""]);
    fed.await_a(GLOBAL, &all_ips());
    let live: Vec<(String, String)> = fed.records().into_iter().map(|(k, v, _)| (k, v)).collect();

    assert_eq!(live, once_records(&fedplane_testkit::Etcd::start(), args));
}

#[test]
fn a_health_checked_route_leaves_out_a_gateway_address_that_stops_answering() {
    let fed = Federation::start();
    let mut listeners = Vec::new();
    for (cluster, ip) in [("fcp", "127.0.7.1"), ("usa", "127.0.7.2")] {
        let fake = fed.fake(cluster);
        namespaces(fake);
        backend(fake, true);
        fake.apply(gateway(ip));
        let l = std::net::TcpListener::bind(format!("{ip}:0")).expect("listener");
        let mut r = route(GW, "HTTPRoute", "shop", &[SHOP]);
        r["metadata"]["annotations"] = json!({
            "fedplane.io/health-check": format!("tcp:{}", l.local_addr().expect("addr").port())
        });
        fake.apply(r);
        listeners.push(l);
    }
    let _c = fed.controller(&[
        "--source",
        SOURCES,
        "--probe-interval",
        "100ms",
        "--probe-timeout",
        "100ms",
        "--probe-failures",
        "2",
    ]);
    fed.await_a(SHOP, &["127.0.7.1", "127.0.7.2"]);
    drop(listeners.remove(0));
    fed.await_a(SHOP, &["127.0.7.2"]);
}

#[test]
fn a_kind_no_longer_readable_loses_its_names_after_the_grace_period_and_the_services_stay() {
    let fed = Federation::start();
    fed.fake("fcp").apply(dns_endpoint(
        "app",
        json!([{"dnsName": "app.example.com", "recordType": "A", "targets": ["10.210.1.70"]}]),
    ));
    let c = fed.controller(&["--source", SOURCES, "--unreachable-grace", "2s"]);
    fed.await_a("app.example.com", &["10.210.1.70"]);
    // RBAC on DNSEndpoints revoked in fcp (the CRD removed would do the same): the watch,
    // made again after a cut, is refused.
    let fcp = fed.fake("fcp");
    fcp.forbid("dnsendpoints", true);
    fcp.set_reachable(false);
    fcp.set_reachable(true);
    wait_until(WAIT, "the refused watch in the log", || {
        c.daemon
            .output()
            .contains("externaldns.k8s.io dnsendpoints")
            .then_some(())
    });
    fed.await_nxdomain("app.example.com");
    fed.await_a(GLOBAL, &all_ips());
    // Allowed again: back.
    fcp.forbid("dnsendpoints", false);
    fed.await_a("app.example.com", &["10.210.1.70"]);
}

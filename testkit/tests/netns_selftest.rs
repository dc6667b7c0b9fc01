//! Self-test of the network-namespace and keepalived harnesses (needs root).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use fedplane_testkit::keepalived::{Keepalived, KeepalivedOptions};
use fedplane_testkit::netns::{Lan, list_namespaces, require_root};
use fedplane_testkit::wait_until;

const PING: Duration = Duration::from_secs(2);

fn assert_gone(prefix: &str) {
    let left: Vec<String> = list_namespaces()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

#[test]
fn hosts_on_a_lan_reach_each_other_over_ipv4_and_ipv6() {
    require_root();
    let mut lan = Lan::new();
    let prefix = lan.prefix().to_owned();
    let a = lan.add_host("192.0.2.1/24", Some("fd00::1/64"));
    let b = lan.add_host("192.0.2.2/24", Some("fd00::2/64"));
    assert_ne!(a.mac, b.mac);
    assert!(a.has_address(IpAddr::V4(a.ipv4)), "{:?}", a.addresses());
    assert!(b.has_address(b.ipv6.expect("b has IPv6").into()));

    assert!(a.ping(b.ipv4.into(), PING), "a cannot ping b over IPv4");
    assert!(b.ping(a.ipv4.into(), PING), "b cannot ping a over IPv4");
    let a6 = a.ipv6.expect("a has IPv6");
    let b6 = b.ipv6.expect("b has IPv6");
    assert!(a.ping(b6.into(), PING), "a cannot ping b over IPv6");
    assert!(b.ping(a6.into(), PING), "b cannot ping a over IPv6");
    let b_ll = b.link_local_ipv6().expect("b has a link-local address");
    assert!(
        a.ping(b_ll.into(), PING),
        "a cannot ping b's link-local address"
    );
    assert_eq!(
        a.neigh_lladdr(b.ipv4.into()).as_deref(),
        Some(b.mac.as_str())
    );

    // Unplugging b's cable cuts it off; plugging it back restores it.
    lan.set_port(&b, false);
    assert!(!a.ping(b.ipv4.into(), Duration::from_millis(300)));
    lan.set_port(&b, true);
    wait_until(Duration::from_secs(5), "b to answer again", || {
        a.ping(b.ipv4.into(), Duration::from_millis(300))
            .then_some(())
    });
    // So does downing b's own eth0.
    b.set_link(false);
    assert!(!a.ping(b.ipv4.into(), Duration::from_millis(300)));
    b.set_link(true);
    wait_until(Duration::from_secs(5), "b to answer again", || {
        a.ping(b.ipv4.into(), Duration::from_millis(300))
            .then_some(())
    });

    let namespaces = lan.namespaces();
    assert_eq!(namespaces.len(), 3);
    assert!(list_namespaces().iter().any(|n| n == lan.ns()));
    drop(lan);
    assert_gone(&prefix);
}

#[test]
fn keepalived_fails_over_and_the_client_follows_the_gratuitous_arp() {
    require_root();
    let vip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100));
    let mut lan = Lan::new();
    let prefix = lan.prefix().to_owned();
    let h1 = lan.add_host("192.0.2.1/24", None);
    let h2 = lan.add_host("192.0.2.2/24", None);
    let client = lan.add_host("192.0.2.10/24", None);
    // A process started through a host is cleaned up with the lan.
    let _sleeper = client.spawn(std::path::Path::new("sleep"), &["600".to_owned()], &[]);

    let opts = |priority| KeepalivedOptions {
        version: 3,
        vrid: 51,
        priority,
        advert_int: 0.1,
        vips: vec!["192.0.2.100/24".to_owned()],
        ..KeepalivedOptions::default()
    };
    let mut k1 = Keepalived::start(&h1, &opts(150));
    let k2 = Keepalived::start(&h2, &opts(100));

    // Both start as BACKUP; the higher priority ends up master and the other backs off.
    wait_until(Duration::from_secs(5), "h1 alone to hold the VIP", || {
        (h1.has_address(vip) && !h2.has_address(vip)).then_some(())
    });
    k1.wait_state("MASTER", Duration::from_secs(2));
    k2.wait_state("BACKUP", Duration::from_secs(2));
    // … and it stays that way over several advertisement intervals.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        assert!(h1.has_address(vip) && !h2.has_address(vip), "the VIP moved");
        std::thread::sleep(Duration::from_millis(50));
    }

    assert!(client.ping(vip, PING), "client cannot ping the VIP");
    assert_eq!(client.neigh_lladdr(vip).as_deref(), Some(h1.mac.as_str()));
    let neigh = client.monitor_neigh();

    let crashed = Instant::now();
    k1.crash();
    let took_over = wait_until(Duration::from_secs(3), "h2 to take the VIP", || {
        h2.has_address(vip).then(Instant::now)
    });
    let (garp_at, line) = neigh
        .wait_for(Duration::from_secs(3), |l| {
            l.starts_with("192.0.2.100 ") && l.contains(&h2.mac)
        })
        .unwrap_or_else(|| {
            panic!(
                "the client's ARP entry for the VIP never moved to h2 ({}); saw {:?}",
                h2.mac,
                neigh.lines()
            )
        });
    eprintln!(
        "failover: VIP on h2 after {:?}, client ARP updated after {:?}: {line}",
        took_over - crashed,
        garp_at - crashed
    );
    k2.wait_state("MASTER", Duration::from_secs(2));
    // A crashed keepalived leaves its VIP behind (nobody removes it).
    assert!(h1.has_address(vip));
    assert!(client.ping(vip, PING), "client cannot ping the VIP on h2");
    assert_eq!(client.neigh_lladdr(vip).as_deref(), Some(h2.mac.as_str()));

    drop(neigh);
    drop(lan);
    assert_gone(&prefix);
    drop((k1, k2));
}

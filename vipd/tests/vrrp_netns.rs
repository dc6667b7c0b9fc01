//! fedplane-vipd end to end, as root, in network namespaces joined by a bridge: fedplane peers,
//! keepalived 2.2.7 peers (VRRP v3 and v2), a client whose ARP cache must follow the master, and
//! malformed adverts.
//!
//! Timers: adverts every 100 ms (v2: 1 s). For priority 100, Master_Down = 300 ms + skew
//! (60.9 ms) and Skew = 60.9 ms; the issue's bounds are master-down + 100 ms after SIGKILL and
//! skew + 100 ms after SIGTERM.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use fedplane_testkit::keepalived::{Keepalived, KeepalivedOptions};
use fedplane_testkit::netns::Host;
use fedplane_testkit::wait_until;

#[test]
fn two_nodes_preempt_crash_failover_and_rejoin_without_preempt() {
    let (_lan, hosts, client) = lan(2);
    let (a, b) = (&hosts[0], &hosts[1]);
    client.set_neigh_locktime(Duration::ZERO);
    let mut vb = vipd(b, 100, &[VIP_CIDR], &[]);
    wait_holder(&[a, b], b, vip(), SETTLE);
    // A higher priority preempts.
    let mut va = vipd(a, 150, &[VIP_CIDR], &[]);
    wait_holder(&[a, b], a, vip(), SETTLE);
    assert_one_holder(&[a, b], vip(), Duration::from_millis(500));
    let mon = client_watching(&client, vip(), &a.mac);

    // SIGKILL: b holds the VIP and has announced it within master-down + 100 ms.
    va.signal("KILL");
    let killed = Instant::now();
    let bound = master_down(100, Duration::from_millis(100)) + Duration::from_millis(100);
    let announced = wait_announced(&mon, vip(), &b.mac, Duration::from_secs(3));
    let took = announced.duration_since(killed);
    assert!(
        took <= bound,
        "GARP seen {took:?} after SIGKILL, bound {bound:?}"
    );
    assert!(b.has_address(vip()));
    assert!(
        client.ping(vip(), Duration::from_secs(1)),
        "client reaches the VIP after failover"
    );
    va.wait_exit(Duration::from_secs(5));

    // The killed node left its VIP behind; restarted with --no-preempt it removes it and stays
    // backup under the lower-priority master.
    assert!(a.has_address(vip()), "SIGKILL leaves the address");
    let va = vipd(a, 150, &[VIP_CIDR], &["--no-preempt"]);
    wait_until(
        SETTLE,
        "the restarted node to clean up and be backup",
        || {
            (!a.has_address(vip()) && metric(a, "fedplane_vipd_state", "vrid=\"51\"") == 1.0)
                .then_some(())
        },
    );
    assert!(
        va.output().contains("left by an earlier run"),
        "{}",
        va.output()
    );
    assert_one_holder(&[a, b], vip(), Duration::from_millis(800));
    assert!(b.has_address(vip()), "no preemption");
    vb.signal("TERM");
    vb.wait_exit(Duration::from_secs(5));
}

#[test]
fn sigterm_hands_over_within_skew_and_leaves_nothing() {
    let (_lan, hosts, client) = lan(2);
    let (a, b) = (&hosts[0], &hosts[1]);
    client.set_neigh_locktime(Duration::ZERO);
    let vips = [VIP_CIDR, "192.0.2.101/24"];
    let mut va = vipd(a, 150, &vips, &[]);
    wait_holder(&[a, b], a, vip(), SETTLE);
    let _vb = vipd(b, 100, &vips, &[]);
    wait_backup(b, SETTLE);
    let mon = client_watching(&client, vip(), &a.mac);

    va.signal("TERM");
    let stopped = Instant::now();
    let bound = skew(100, Duration::from_millis(100)) + Duration::from_millis(100);
    let announced = wait_announced(&mon, vip(), &b.mac, Duration::from_secs(3));
    let took = announced.duration_since(stopped);
    assert!(
        took <= bound,
        "handover announced {took:?} after SIGTERM, bound {bound:?}"
    );
    let status = va.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "clean exit: {status:?}\n{}", va.output());
    for v in ["192.0.2.100", "192.0.2.101"] {
        let ip: IpAddr = v.parse().expect("ip");
        assert!(!a.has_address(ip), "{ip} left on the stopped node");
        assert!(b.has_address(ip), "{ip} not on the new master");
    }

    // The old master rejoins as backup, then preempts after master-down.
    let va = vipd(a, 150, &vips, &[]);
    wait_holder(&[a, b], a, vip(), SETTLE);
    assert!(
        va.output().contains("from=\"backup\" to=\"master\""),
        "{}",
        va.output()
    );
}

#[test]
fn three_nodes_one_master_no_preempt_holds_and_a_higher_priority_preempts() {
    let (_lan, hosts, _client) = lan(3);
    let all: Vec<&Host> = hosts.iter().collect();
    let _v1 = vipd(&hosts[0], 100, &[VIP_CIDR], &[]);
    wait_holder(&all, &hosts[0], vip(), SETTLE);
    // 150 and 200 join without preemption: the 100 keeps it.
    let mut v2 = vipd(&hosts[1], 150, &[VIP_CIDR], &["--no-preempt"]);
    let _v3 = vipd(&hosts[2], 200, &[VIP_CIDR], &["--no-preempt"]);
    wait_backup(&hosts[1], SETTLE);
    wait_backup(&hosts[2], SETTLE);
    assert_one_holder(&all, vip(), Duration::from_millis(800));
    assert!(hosts[0].has_address(vip()));
    // The 150 restarts with preemption: it takes over.
    v2.signal("KILL");
    v2.wait_exit(Duration::from_secs(5));
    let _v2 = vipd(&hosts[1], 150, &[VIP_CIDR], &[]);
    wait_holder(&all, &hosts[1], vip(), SETTLE);
    assert_one_holder(&all, vip(), Duration::from_millis(500));
}

#[test]
fn link_down_gives_up_mastership() {
    let (lan, hosts, _client) = lan(2);
    let (a, b) = (&hosts[0], &hosts[1]);
    let _va = vipd(a, 150, &[VIP_CIDR], &[]);
    wait_holder(&[a, b], a, vip(), SETTLE);
    let _vb = vipd(b, 100, &[VIP_CIDR], &[]);
    wait_backup(b, SETTLE);
    lan.set_port(a, false);
    wait_holder(&[a, b], b, vip(), SETTLE);
    assert_eq!(metric(a, "fedplane_vipd_state", "vrid"), 3.0, "fault");
    lan.set_port(a, true);
    wait_holder(&[a, b], a, vip(), SETTLE);
}

#[test]
fn ipv6_failover_moves_the_neighbour_entry() {
    let (_lan, hosts, client) = lan(2);
    let (a, b) = (&hosts[0], &hosts[1]);
    let vip6: IpAddr = "fd00::100".parse().expect("ip");
    let va = vipd(a, 150, &["fd00::100/64"], &[]);
    let _vb = vipd(b, 100, &["fd00::100/64"], &[]);
    wait_holder(&[a, b], a, vip6, SETTLE);
    let mon = client_watching(&client, vip6, &a.mac);
    va.signal("KILL");
    wait_announced(&mon, vip6, &b.mac, Duration::from_secs(3));
    assert!(b.has_address(vip6));
    assert!(client.ping(vip6, Duration::from_secs(1)));
}

fn keepalived(host: &Host, version: u8, priority: u8) -> Keepalived {
    Keepalived::start(
        host,
        &KeepalivedOptions {
            version,
            vrid: 51,
            priority,
            advert_int: if version == 3 { 0.1 } else { 1.0 },
            vips: vec![VIP_CIDR.to_owned()],
            ..KeepalivedOptions::default()
        },
    )
}

/// keepalived and fedplane-vipd in one group, both ways round, with `version`.
fn keepalived_interop(version: u8) {
    let interval = if version == 3 {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(1)
    };
    let settle = interval * 4 + SETTLE;
    let (_lan, hosts, client) = lan(2);
    let (k, f) = (&hosts[0], &hosts[1]);
    client.set_neigh_locktime(Duration::ZERO);
    let flags = [
        "--vrrp-version".to_owned(),
        version.to_string(),
        "--advert-interval".to_owned(),
        format!("{}ms", interval.as_millis()),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();

    // keepalived master, fedplane backup.
    let mut ka = keepalived(k, version, 200);
    wait_holder(&[k, f], k, vip(), settle);
    let mut fv = vipd(f, 100, &[VIP_CIDR], &flags);
    wait_backup(f, settle);
    assert_one_holder(&[k, f], vip(), interval * 4);
    assert!(metric(f, "fedplane_vipd_adverts_received_total", "vrid") > 0.0);
    let mon = client_watching(&client, vip(), &k.mac);
    // keepalived crashes: fedplane takes over and announces.
    let kill = Instant::now();
    ka.crash();
    let announced = wait_announced(&mon, vip(), &f.mac, master_down(100, interval) * 2);
    let bound = master_down(100, interval) + Duration::from_millis(100);
    assert!(
        announced.duration_since(kill) <= bound,
        "took {:?}",
        announced.duration_since(kill)
    );
    drop(ka);
    // keepalived comes back with a lower priority as backup: fedplane stays master.
    let ka = keepalived(k, version, 50);
    ka.wait_state("BACKUP", settle);
    assert_one_holder(&[k, f], vip(), interval * 4);
    assert!(f.has_address(vip()));
    // fedplane resigns (priority 0): keepalived takes over quickly.
    fv.signal("TERM");
    wait_holder(&[k, f], k, vip(), settle);
    assert!(fv.wait_exit(Duration::from_secs(5)).success());
    // fedplane rejoins with a higher priority and preempts keepalived.
    let _fv = vipd(f, 150, &[VIP_CIDR], &flags);
    wait_holder(&[k, f], f, vip(), settle);
    ka.wait_state("BACKUP", settle);
    assert_one_holder(&[k, f], vip(), interval * 4);
}

#[test]
fn keepalived_v3_peer() {
    keepalived_interop(3);
}

#[test]
fn keepalived_v2_peer() {
    keepalived_interop(2);
}

#[test]
fn malformed_adverts_are_dropped_and_counted() {
    let (_lan, hosts, attacker) = lan(1);
    let a = &hosts[0];
    let va = vipd(a, 150, &[VIP_CIDR], &[]);
    wait_holder(&[a], a, vip(), SETTLE);
    // From the client namespace: targeted datagrams, then 300 random ones. Each hits
    // protocol 112 on 224.0.0.18; none may change the master. The targeted ones go
    // first: a flood can overrun the socket's receive buffer while the daemon is
    // busy, and the kernel drops the overflow before vipd can count it.
    let script = r#"
import random, socket, struct
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def advert(prio=200, vrid=51, ver=3, typ=1, addrs=(bytes([192,0,2,100]),), good=True):
    body = bytes([ver << 4 | typ, vrid, prio, len(addrs), 0, 10, 0, 0]) + b"".join(addrs)
    pseudo = socket.inet_aton("192.0.2.50") + socket.inet_aton("224.0.0.18") + struct.pack("!BBH", 0, 112, len(body))
    c = csum(pseudo + body) if good else 0x1234
    return body[:6] + struct.pack("!H", c) + body[8:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
s.sendto(advert(good=False), ("224.0.0.18", 0))
s.sendto(advert(ver=4), ("224.0.0.18", 0))
s.sendto(advert(typ=2), ("224.0.0.18", 0))
s.sendto(advert(addrs=(bytes([192,0,2,99]),)), ("224.0.0.18", 0))
s.sendto(advert(vrid=52), ("224.0.0.18", 0))
s.sendto(advert()[:5], ("224.0.0.18", 0))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 64)
s.sendto(advert(), ("224.0.0.18", 0))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
rnd = random.Random(7)
for _ in range(300):
    s.sendto(bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 64))), ("224.0.0.18", 0))
"#;
    attacker.run(&["python3", "-c", script]);
    for reason in [
        "checksum",
        "version",
        "type",
        "address_list",
        "other_vrid",
        "too_short",
        "ttl",
    ] {
        let label = format!("reason=\"{reason}\"");
        wait_until(SETTLE, &format!("a drop counted as {reason}"), || {
            (metric(a, "fedplane_vipd_adverts_dropped_total", &label) >= 1.0).then_some(())
        });
    }
    // Still running, still master: no advert was accepted.
    assert_eq!(metric(a, "fedplane_vipd_state", "vrid"), 2.0);
    assert_eq!(
        metric(a, "fedplane_vipd_adverts_received_total", "vrid"),
        0.0
    );
    assert!(a.has_address(vip()));
    assert!(va.output().contains("group started"));
}

#[test]
fn an_address_we_did_not_add_is_never_removed() {
    let (_lan, hosts, _client) = lan(1);
    let a = &hosts[0];
    // The operator configured the VIP by hand before vipd ran.
    a.run(&["ip", "addr", "add", VIP_CIDR, "dev", "eth0"]);
    let mut va = vipd(a, 150, &[VIP_CIDR, "192.0.2.101/24"], &[]);
    let second: IpAddr = "192.0.2.101".parse().expect("ip");
    wait_until(SETTLE, "vipd to be master", || {
        a.has_address(second).then_some(())
    });
    va.signal("TERM");
    assert!(va.wait_exit(Duration::from_secs(5)).success());
    assert!(a.has_address(vip()), "the operator's address was removed");
    assert!(!a.has_address(second), "our address was left behind");
    assert!(
        va.output().contains("configured by someone else"),
        "{}",
        va.output()
    );
}

#[test]
fn bad_settings_are_refused_with_a_reason() {
    let out = std::process::Command::new(binary())
        .args([
            "--interface",
            "eth0",
            "--vrid",
            "51",
            "--vip",
            "192.0.2.1/24",
            "--vrrp-version",
            "2",
        ])
        .output()
        .expect("run fedplane-vipd");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("whole seconds"));
    // A missing interface is a fault to wait out (it may appear later), not a reason to exit:
    // /readyz says why.
    let (_lan, hosts, _client) = lan(1);
    let v = vipd(&hosts[0], 100, &[VIP_CIDR], &["--interface", "nosuch0"]);
    wait_until(SETTLE, "/readyz to name the missing interface", || {
        let out = hosts[0].try_run(&[
            "curl",
            "-s",
            &format!("http://127.0.0.1:{HTTP_PORT}/readyz"),
        ]);
        out.ok()
            .filter(|o| o.contains("interface nosuch0 does not exist"))
            .map(|_| ())
    });
    assert_eq!(
        metric(&hosts[0], "fedplane_vipd_state", "vrid"),
        3.0,
        "fault"
    );
    assert!(v.output().contains("no such interface"), "{}", v.output());
}

#[test]
fn several_groups_spread_vips_and_unicast_peers_work() {
    let (_lan, hosts, _client) = lan(2);
    let (a, b) = (&hosts[0], &hosts[1]);
    // Each node is master of one group: a of VRID 51 (multicast), b of VRID 52 (unicast).
    let config = |mine: u8, peer: &Host| {
        format!(
            "groups:\n  - vrid: 51\n    priority: {}\n    vips: [192.0.2.100/24]\n  - vrid: 52\n    priority: {}\n    vips: [192.0.2.101/24]\n    unicast_peers: [{}]\n",
            if mine == 0 { 150 } else { 100 },
            if mine == 0 { 100 } else { 150 },
            peer.ipv4
        )
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let start = |i: u8, host: &Host, peer: &Host| {
        let path = dir.path().join(format!("vipd{i}.yaml"));
        std::fs::write(&path, config(i, peer)).expect("write config");
        host.spawn(
            binary(),
            &[
                "--interface".into(),
                "eth0".into(),
                "--advert-interval".into(),
                "100ms".into(),
                "--config".into(),
                path.display().to_string(),
                "--http".into(),
                format!("127.0.0.1:{HTTP_PORT}"),
            ],
            &[],
        )
    };
    let va = start(0, a, b);
    let _vb = start(1, b, a);
    let second: IpAddr = "192.0.2.101".parse().expect("ip");
    wait_holder(&[a, b], a, vip(), SETTLE);
    wait_holder(&[a, b], b, second, SETTLE);
    assert!(
        metric(a, "fedplane_vipd_adverts_received_total", "vrid=\"52\"") > 0.0,
        "unicast adverts arrive"
    );
    // a crashes: b holds both.
    va.signal("KILL");
    wait_until(SETTLE, "b to hold both addresses", || {
        (b.has_address(vip()) && b.has_address(second)).then_some(())
    });
}

#[test]
fn master_follows_a_new_primary_address_and_restores_a_removed_vip() {
    let (_lan, hosts, _client) = lan(2);
    let (a, b) = (&hosts[0], &hosts[1]);
    let va = vipd(a, 150, &[VIP_CIDR], &[]);
    wait_holder(&[a, b], a, vip(), SETTLE);
    let _vb = vipd(b, 100, &[VIP_CIDR], &[]);
    wait_backup(b, SETTLE);
    // Someone deletes the VIP on the master: it is put back.
    a.run(&["ip", "addr", "del", VIP_CIDR, "dev", "eth0"]);
    wait_until(SETTLE, "the VIP to be restored", || {
        a.has_address(vip()).then_some(())
    });
    // The master's primary address is replaced: adverts go on from the new one, so the backup
    // never takes over. (promote_secondaries, as systemd sets it: deleting the primary address
    // would otherwise delete the whole subnet's addresses.)
    a.sysctl("net.ipv4.conf.eth0.promote_secondaries", "1");
    a.run(&["ip", "addr", "add", "192.0.2.21/24", "dev", "eth0"]);
    a.run(&["ip", "addr", "del", "192.0.2.11/24", "dev", "eth0"]);
    wait_until(SETTLE, "a to follow its new primary address", || {
        va.output()
            .contains("primary address changed")
            .then_some(())
    });
    assert_one_holder(&[a, b], vip(), Duration::from_secs(1));
    assert!(a.has_address(vip()));
}

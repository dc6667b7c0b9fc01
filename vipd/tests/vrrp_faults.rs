//! fedplane-vipd under the faults an unlucky operator meets, as root in network namespaces: the
//! interface deleted and created again, its MAC changed, no carrier or a tentative IPv6
//! link-local address, addresses of the operator beside ours with `promote_secondaries` off,
//! the address owner, what a killed run left, SIGHUP and SIGUSR1, a full socket buffer, and
//! another host claiming a held address.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use fedplane_testkit::wait_until;

#[test]
fn a_deleted_and_recreated_interface_is_followed_by_name() {
    let (lan, hosts, client) = lan(2);
    let (a, b) = (&hosts[0], &hosts[1]);
    client.set_neigh_locktime(Duration::ZERO);
    let va = vipd(a, 150, &[VIP_CIDR], &[]);
    wait_holder(&[a, b], a, vip(), SETTLE);
    let _vb = vipd(b, 100, &[VIP_CIDR], &[]);
    wait_backup(b, SETTLE);

    a.run(&["ip", "link", "del", "eth0"]);
    wait_until(SETTLE, "b to take over", || {
        b.has_address(vip()).then_some(())
    });
    wait_until(SETTLE, "a's /readyz to say its interface is gone", || {
        let r = readyz(a);
        (r.ends_with("503") && r.contains("interface eth0 does not exist")).then_some(())
    });
    assert_eq!(metric(a, "fedplane_vipd_state", "vrid"), 3.0, "fault");

    // Created again (a new index and MAC): a binds to it, preempts and announces its new MAC.
    let mon = client_watching(&client, vip(), &b.mac);
    let new_mac = lan.replug(a, &format!("{}/24", a.ipv4), None);
    wait_holder(&[a, b], a, vip(), SETTLE);
    wait_announced(&mon, vip(), &new_mac, SETTLE);
    wait_until(SETTLE, "a ready again", || {
        readyz(a).ends_with("200").then_some(())
    });
    assert!(
        va.output().contains("interface appeared"),
        "{}",
        va.output()
    );
    assert_one_holder(&[a, b], vip(), Duration::from_millis(500));
}

#[test]
fn a_changed_mac_address_is_announced_at_once() {
    let (_lan, hosts, client) = lan(2);
    let (a, b) = (&hosts[0], &hosts[1]);
    client.set_neigh_locktime(Duration::ZERO);
    let _va = vipd(a, 150, &[VIP_CIDR], &[]);
    wait_holder(&[a, b], a, vip(), SETTLE);
    let _vb = vipd(b, 100, &[VIP_CIDR], &[]);
    wait_backup(b, SETTLE);
    let mon = client_watching(&client, vip(), &a.mac);
    let new_mac = "02:00:5e:00:aa:01";
    let changed = Instant::now();
    a.run(&["ip", "link", "set", "eth0", "address", new_mac]);
    let seen = wait_announced(&mon, vip(), new_mac, Duration::from_secs(2));
    assert!(
        seen.duration_since(changed) < Duration::from_millis(500),
        "announced {:?} after the change",
        seen.duration_since(changed)
    );
    assert!(client.ping(vip(), Duration::from_secs(1)));
    assert_one_holder(&[a, b], vip(), Duration::from_millis(300));
}

/// A config file with an IPv4 group (VRID 51) and an IPv6 group (VRID 52).
fn dual_stack_config(dir: &tempfile::TempDir, priority: u8) -> String {
    let path = dir.path().join("vipd.yaml");
    std::fs::write(
        &path,
        format!(
            "groups:\n  - vrid: 51\n    priority: {priority}\n    vips: [{VIP_CIDR}]\n  - vrid: 52\n    priority: {priority}\n    vips: [fd00::100/64]\n"
        ),
    )
    .expect("write config");
    path.display().to_string()
}

#[test]
fn an_ipv6_group_without_carrier_at_start_waits_in_fault_with_the_others() {
    let (lan, hosts, _client) = lan(1);
    let a = &hosts[0];
    // No carrier and no link-local address: set down (the kernel drops its IPv6 addresses)
    // and up again without carrier, it makes one only once carrier is there.
    lan.set_port(a, false);
    a.set_link(false);
    a.set_link(true);
    assert!(a.link_local_ipv6().is_none());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut va = vipd_config(a, &dual_stack_config(&dir, 150));
    wait_state(a, "vrid=\"51\"", 3.0);
    wait_state(a, "vrid=\"52\"", 3.0);
    let r = readyz(a);
    assert!(r.ends_with("503") && r.contains("no carrier"), "{r}");
    assert!(va.is_running(), "the daemon exited: {}", va.output());

    lan.set_port(a, true);
    wait_until(SETTLE, "both groups to be master", || {
        (a.has_address(vip()) && a.has_address(ip("fd00::100"))).then_some(())
    });
    let _ = &mut va;
    wait_until(SETTLE, "ready", || readyz(a).ends_with("200").then_some(()));
}

#[test]
fn a_tentative_link_local_address_is_not_used_to_advertise() {
    let (_lan, hosts, _client) = lan(2);
    let (a, b) = (&hosts[0], &hosts[1]);
    let vip6 = ip("fd00::100");
    // Duplicate address detection on a's eth0, one probe a second: after a link flap its
    // link-local address is tentative for about a second.
    a.sysctl("net.ipv6.conf.eth0.accept_dad", "1");
    a.sysctl("net.ipv6.conf.eth0.dad_transmits", "2");
    let va = vipd(a, 150, &["fd00::100/64"], &[]);
    wait_holder(&[a, b], a, vip6, SETTLE);
    let _vb = vipd(b, 100, &["fd00::100/64"], &[]);
    wait_backup(b, SETTLE);

    // Down and up: the kernel makes the link-local address again, tentative.
    a.set_link(false);
    wait_holder(&[a, b], b, vip6, SETTLE);
    a.set_link(true);
    // While a's link-local address is tentative, b alone holds the address.
    let end = Instant::now() + Duration::from_secs(6);
    let mut saw_tentative = false;
    while Instant::now() < end {
        let tentative = !a
            .run(&[
                "ip",
                "-6",
                "addr",
                "show",
                "dev",
                "eth0",
                "scope",
                "link",
                "tentative",
            ])
            .trim()
            .is_empty();
        saw_tentative |= tentative;
        if tentative {
            assert!(!a.has_address(vip6), "a took over with a tentative source");
        } else if saw_tentative {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(saw_tentative, "the link-local address never was tentative");
    wait_holder(&[a, b], a, vip6, SETTLE);
    assert!(!va.output().contains("advert not sent"), "{}", va.output());
}

#[test]
fn an_operators_address_in_the_subnet_of_a_vip_survives_its_removal() {
    let (_lan, hosts, _client) = lan(1);
    let a = &hosts[0];
    a.sysctl("net.ipv4.conf.eth0.promote_secondaries", "0");
    // The VIP is alone in its subnet (so primary there); the operator then adds an address
    // to that subnet, which the kernel makes a secondary of the VIP.
    let mut va = vipd(a, 150, &["198.51.100.100/24"], &[]);
    wait_until(SETTLE, "master", || {
        a.has_address(ip("198.51.100.100")).then_some(())
    });
    a.run(&["ip", "addr", "add", "198.51.100.7/24", "dev", "eth0"]);
    va.signal("TERM");
    assert!(va.wait_exit(Duration::from_secs(5)).success());
    assert!(!a.has_address(ip("198.51.100.100")));
    assert!(
        a.has_address(ip("198.51.100.7")),
        "the operator's address went with the VIP"
    );
}

#[test]
fn a_renumbered_node_keeps_its_new_address_when_the_vip_goes() {
    let (_lan, hosts, _client) = lan(1);
    let a = &hosts[0];
    a.sysctl("net.ipv4.conf.eth0.promote_secondaries", "0");
    let mut va = vipd(a, 150, &[VIP_CIDR], &[]);
    wait_until(SETTLE, "master", || a.has_address(vip()).then_some(()));
    // Renumbered: a new address, then the old primary removed (the VIP, the first
    // secondary, becomes the subnet's primary).
    a.run(&["ip", "addr", "add", "192.0.2.21/24", "dev", "eth0"]);
    a.run(&["ip", "addr", "del", "192.0.2.11/24", "dev", "eth0"]);
    assert!(
        a.has_address(ip("192.0.2.21")),
        "renumbering itself lost the address"
    );
    va.signal("TERM");
    assert!(va.wait_exit(Duration::from_secs(5)).success());
    assert!(!a.has_address(vip()));
    assert!(
        a.has_address(ip("192.0.2.21")),
        "the node's own address went with the VIP"
    );
}

#[test]
fn the_address_owner_starts_as_master_and_keeps_its_own_address() {
    let (_lan, hosts, _client) = lan(2);
    let (a, b) = (&hosts[0], &hosts[1]);
    let own = format!("{}/24", a.ipv4);
    let mut va = vipd(a, 255, &[&own], &[]);
    wait_state(a, "vrid", 2.0);
    let vb = vipd(b, 100, &[&own], &[]);
    wait_backup(b, SETTLE);
    wait_until(SETTLE, "b to hear the owner", || {
        (metric(b, "fedplane_vipd_adverts_received_total", "vrid") > 0.0).then_some(())
    });
    assert_eq!(
        metric(b, "fedplane_vipd_state", "vrid"),
        1.0,
        "{}",
        vb.output()
    );
    va.signal("TERM");
    assert!(va.wait_exit(Duration::from_secs(5)).success());
    assert!(
        a.has_address(IpAddr::V4(a.ipv4)),
        "the owner removed its own address"
    );
}

#[test]
fn addresses_a_killed_run_left_go_even_when_the_config_changed() {
    let (_lan, hosts, _client) = lan(1);
    let a = &hosts[0];
    let mut va = vipd(a, 150, &[VIP_CIDR], &[]);
    wait_until(SETTLE, "master", || a.has_address(vip()).then_some(()));
    va.signal("KILL");
    va.wait_exit(Duration::from_secs(5));
    assert!(a.has_address(vip()));
    let va = vipd(a, 150, &["192.0.2.101/24"], &[]);
    wait_until(SETTLE, "the new address held, the old one gone", || {
        (a.has_address(ip("192.0.2.101")) && !a.has_address(vip())).then_some(())
    });
    assert!(
        va.output().contains("left by an earlier run"),
        "{}",
        va.output()
    );
}

#[test]
fn sighup_reloads_the_groups_and_sigusr1_logs_their_state() {
    // One node: a peer would rightly refuse adverts whose address list differs from its own
    // while only this node's file changes.
    let (_lan, hosts, _client) = lan(1);
    let a = &hosts[0];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vipd.yaml");
    let write = |text: &str| std::fs::write(&path, text).expect("write config");
    write("groups:\n  - vrid: 51\n    priority: 150\n    vips: [192.0.2.100/24]\n");
    let mut va = vipd_config(a, &path.display().to_string());
    wait_holder(&[a], a, vip(), SETTLE);

    va.signal("USR1");
    wait_until(SETTLE, "the state dump", || {
        va.output()
            .lines()
            .any(|l| l.contains("group state") && l.contains("state=\"master\""))
            .then_some(())
    });

    // An address added to the group and a new group: taken in place, no state change.
    let transitions = |out: &str| out.matches("state changed").count();
    let before = transitions(&va.output());
    let vrid51 = |out: &str| {
        out.lines()
            .filter(|l| l.contains("state changed") && l.contains("vrid=51"))
            .count()
    };
    let before51 = vrid51(&va.output());
    write(
        "groups:\n  - vrid: 51\n    priority: 150\n    vips: [192.0.2.100/24, 192.0.2.101/24]\n  - vrid: 52\n    priority: 150\n    vips: [192.0.2.102/24]\n",
    );
    va.signal("HUP");
    wait_until(SETTLE, "the reloaded addresses held", || {
        (a.has_address(ip("192.0.2.101")) && a.has_address(ip("192.0.2.102"))).then_some(())
    });
    assert_eq!(
        vrid51(&va.output()),
        before51,
        "group 51 changed state: {}",
        va.output()
    );
    assert!(transitions(&va.output()) > before, "group 52 started");

    // A broken file: refused, everything stays.
    write("groups: [ {vrid: 0");
    va.signal("HUP");
    wait_until(SETTLE, "the reload refused", || {
        va.output().contains("reload refused").then_some(())
    });
    assert!(va.is_running(), "{}", va.output());
    assert!(a.has_address(ip("192.0.2.102")));

    // Group 52 removed: it resigns and its address goes; 51 stays master.
    write("groups:\n  - vrid: 51\n    priority: 150\n    vips: [192.0.2.100/24, 192.0.2.101/24]\n");
    va.signal("HUP");
    wait_until(SETTLE, "group 52's address gone", || {
        (!a.has_address(ip("192.0.2.102"))).then_some(())
    });
    assert!(a.has_address(vip()) && a.has_address(ip("192.0.2.101")));
    assert_eq!(metric(a, "fedplane_vipd_state", "vrid=\"51\""), 2.0);
}

#[test]
fn kernel_drops_on_a_full_socket_buffer_are_counted() {
    let (_lan, hosts, sender) = lan(1);
    let a = &hosts[0];
    let va = vipd(a, 150, &[VIP_CIDR], &[]);
    wait_until(SETTLE, "master", || a.has_address(vip()).then_some(()));
    assert_eq!(
        metric(a, "fedplane_vipd_socket_drops_total", "vrid"),
        0.0,
        "exported from the start"
    );
    // Stopped, vipd reads nothing: a burst of adverts overflows its socket buffer.
    va.signal("STOP");
    let script = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
for _ in range(20000):
    s.sendto(bytes([0x31, 51, 100, 0, 0, 10, 0, 0]), ("224.0.0.18", 0))
"#;
    sender.run(&["python3", "-c", script]);
    va.signal("CONT");
    // The kernel reports the count with the next datagram queued after the drops.
    let one_more = script.replace("range(20000)", "range(1)");
    wait_until(SETTLE, "drops counted", || {
        sender.run(&["python3", "-c", &one_more]);
        (metric(a, "fedplane_vipd_socket_drops_total", "vrid") > 0.0).then_some(())
    });
}

#[test]
fn another_host_claiming_a_held_address_is_counted_and_logged() {
    let (_lan, hosts, intruder) = lan(1);
    let a = &hosts[0];
    let va = vipd(a, 150, &[VIP_CIDR], &[]);
    wait_until(SETTLE, "master", || a.has_address(vip()).then_some(()));
    assert_eq!(
        metric(a, "fedplane_vipd_address_conflicts_total", "vrid"),
        0.0
    );
    // The intruder configures the VIP and talks from it: its ARP request carries the VIP as
    // sender address with its own MAC.
    intruder.run(&["ip", "addr", "add", VIP_CIDR, "dev", "eth0"]);
    let _ = intruder.try_run(&["ping", "-c", "1", "-W", "1", "-I", VIP, &a.ipv4.to_string()]);
    wait_until(SETTLE, "the conflict counted", || {
        (metric(a, "fedplane_vipd_address_conflicts_total", "vrid") >= 1.0).then_some(())
    });
    assert!(
        va.output()
            .contains("another host claims a virtual address"),
        "{}",
        va.output()
    );
    assert!(va.output().contains(&intruder.mac), "{}", va.output());
}

#[test]
fn the_probe_on_takeover_finds_a_host_that_already_has_the_address() {
    for (vip, cidr) in [(VIP, VIP_CIDR), ("fd00::100", "fd00::100/64")] {
        let (_lan, hosts, intruder) = lan(1);
        let a = &hosts[0];
        let mut add = vec!["ip", "addr", "add", cidr, "dev", "eth0"];
        if cidr.contains(':') {
            add.push("nodad");
        }
        intruder.run(&add);
        let va = vipd(a, 150, &[cidr], &[]);
        wait_until(SETTLE, &format!("the conflict on {vip} counted"), || {
            (metric(a, "fedplane_vipd_address_conflicts_total", "vrid") >= 1.0).then_some(())
        });
        assert!(va.output().contains(&intruder.mac), "{}", va.output());
    }
}

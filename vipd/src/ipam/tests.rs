use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn spec(name: &str, addresses: &[&str], reserved: &[&str]) -> PoolSpec {
    PoolSpec {
        name: name.into(),
        addresses: addresses.iter().map(ToString::to_string).collect(),
        reserved: reserved.iter().map(ToString::to_string).collect(),
        auto_assign: true,
        mode: crate::ipam::Mode::L2,
        bgp: None,
    }
}

fn svc(key: &str, families: &[Family]) -> Svc {
    Svc {
        key: key.into(),
        created: "2026-01-01T00:00:00Z".into(),
        kind: Kind::Ours,
        families: families.to_vec(),
        requested: Vec::new(),
        bad_request: None,
        pool: None,
        current: Vec::new(),
    }
}

fn run(pools: &Pools, svcs: &[Svc]) -> Plan {
    let q = Quarantine::new(Duration::from_secs(60));
    assign(pools, svcs, &BTreeMap::new(), &q, Instant::now())
}

#[test]
fn cidrs_leave_out_network_and_broadcast_ranges_and_addresses_do_not() {
    let pools = Pools::new(&[spec(
        "a",
        &[
            "10.0.0.0/30",
            "10.0.1.0/31",
            "fd00::/126",
            "10.0.2.7-10.0.2.8",
            "10.0.3.3",
        ],
        &[],
    )])
    .expect("valid");
    let p = pools.get("a").expect("pool a");
    for yes in [
        "10.0.0.1", "10.0.0.2", "10.0.1.0", "10.0.1.1", "fd00::1", "fd00::3",
    ] {
        assert!(p.covers(ip(yes)), "{yes}");
    }
    for yes in ["10.0.2.7", "10.0.2.8", "10.0.3.3"] {
        assert!(p.covers(ip(yes)), "{yes}");
    }
    for no in ["10.0.0.0", "10.0.0.3", "fd00::", "10.0.2.9", "10.0.3.4"] {
        assert!(!p.covers(ip(no)), "{no}");
    }
}

#[test]
fn bad_pools_are_refused_with_the_reason() {
    let cases: &[(&[PoolSpec], &str)] = &[
        (
            &[spec("a", &["10.0.0.1/24"], &[])],
            "host bits are set; the network is 10.0.0.0/24",
        ),
        (
            &[spec("a", &["10.0.0.9-10.0.0.1"], &[])],
            "ends before it starts",
        ),
        (
            &[spec("a", &["10.0.0.1-fd00::1"], &[])],
            "mixes IPv4 and IPv6",
        ),
        (
            &[spec("a", &["banana"], &[])],
            "not an address, range (a-b) or CIDR",
        ),
        (&[spec("a", &[], &[])], "pool a: no addresses"),
        (
            &[spec("a", &["10.0.0.5"], &[]), spec("a", &["10.0.0.6"], &[])],
            "two pools named a",
        ),
        (
            &[
                spec("a", &["10.0.0.0/24"], &[]),
                spec("b", &["10.0.0.10-10.0.0.20"], &[]),
            ],
            "10.0.0.10 is in pools a and b",
        ),
        (
            &[spec("a", &["10.0.0.0/24", "10.0.0.7"], &[])],
            "listed twice",
        ),
        (
            &[spec("a", &["10.0.0.0/24"], &["10.0.0.300"])],
            "10.0.0.300",
        ),
    ];
    for (specs, want) in cases {
        let err = Pools::new(specs).expect_err("invalid").to_string();
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
    let err = Pools::from_yaml("pools:\n  - name: a\n    adresses: [10.0.0.0/24]\n")
        .expect_err("unknown field");
    assert!(err.to_string().contains("adresses"), "{err}");
}

#[test]
fn lowest_free_skips_reserved_ranges_in_one_step() {
    let pools =
        Pools::new(&[spec("a", &["fd00::/48"], &["fd00::/64", "fd00:0:0:1::"])]).expect("valid");
    let plan = run(&pools, &[svc("ns/a", &[Family::V6])]);
    assert_eq!(plan.addresses["ns/a"], [ip("fd00:0:0:1::1")]);
}

#[test]
fn requests_are_honoured_or_refused_with_an_event() {
    let pools = Pools::new(&[
        spec("a", &["10.0.0.0/29"], &["10.0.0.1"]),
        PoolSpec {
            auto_assign: false,
            ..spec("b", &["10.0.1.0/29"], &[])
        },
    ])
    .expect("valid");
    let mut old = svc("ns/old", &[Family::V4]);
    old.current = vec![ip("10.0.0.4")];
    let ask = |key: &str, want: &str| Svc {
        requested: vec![ip(want)],
        ..svc(key, &[Family::V4])
    };
    let mut svcs = vec![
        old,
        ask("ns/ok", "10.0.1.3"),
        ask("ns/taken", "10.0.0.4"),
        ask("ns/reserved", "10.0.0.1"),
        ask("ns/outside", "192.0.2.1"),
        ask("ns/v6", "fd00::1"),
        Svc {
            pool: Some("a".into()),
            ..ask("ns/wrongpool", "10.0.1.4")
        },
        Svc {
            bad_request: Some("\"10.0.0.x\" is not an IP address".into()),
            ..svc("ns/bad", &[Family::V4])
        },
        Svc {
            pool: Some("nope".into()),
            ..svc("ns/nopool", &[Family::V4])
        },
        svc("ns/auto", &[Family::V4]),
    ];
    svcs[2].created = "2026-01-02T00:00:00Z".into();
    let plan = run(&pools, &svcs);
    let got = |k: &str| plan.addresses[k].clone();
    assert_eq!(got("ns/old"), [ip("10.0.0.4")]);
    assert_eq!(
        got("ns/ok"),
        [ip("10.0.1.3")],
        "a pool without auto-assign serves requests"
    );
    assert_eq!(
        got("ns/auto"),
        [ip("10.0.0.2")],
        "lowest free, the gateway reserved"
    );
    for k in [
        "ns/taken",
        "ns/reserved",
        "ns/outside",
        "ns/v6",
        "ns/wrongpool",
        "ns/bad",
        "ns/nopool",
    ] {
        assert!(got(k).is_empty(), "{k}: {:?}", got(k));
    }
    let why = |k: &str| {
        plan.notices
            .iter()
            .filter(|n| n.key == k)
            .map(|n| format!("{}: {}", n.reason.name(), n.message))
            .collect::<Vec<_>>()
            .join("; ")
    };
    assert_eq!(
        why("ns/taken"),
        "AddressRefused: 10.0.0.4 is in use by ns/old"
    );
    assert_eq!(
        why("ns/reserved"),
        "AddressRefused: 10.0.0.1 is reserved in pool a"
    );
    assert_eq!(
        why("ns/outside"),
        "AddressRefused: 192.0.2.1 is in no address pool"
    );
    assert_eq!(
        why("ns/v6"),
        "AddressRefused: addresses are requested, but no IPv4 address; \
         AddressRefused: fd00::1 is IPv6, which the Service does not use"
    );
    assert_eq!(
        why("ns/wrongpool"),
        "AddressRefused: 10.0.1.4 is in pool b, not in pool a"
    );
    assert_eq!(
        why("ns/bad"),
        "InvalidAddressRequest: \"10.0.0.x\" is not an IP address"
    );
    assert_eq!(why("ns/nopool"), "NoSuchPool: no pool named nope");
}

#[test]
fn exhaustion_is_a_notice_and_dual_stack_gets_one_of_each() {
    let pools =
        Pools::new(&[spec("a", &["10.0.0.1-10.0.0.2", "fd00::10-fd00::11"], &[])]).expect("valid");
    let mut svcs: Vec<Svc> = (0..3)
        .map(|i| svc(&format!("ns/s{i}"), &[Family::V6, Family::V4]))
        .collect();
    svcs[2].created = "2026-01-02T00:00:00Z".into();
    let plan = run(&pools, &svcs);
    assert_eq!(plan.addresses["ns/s0"], [ip("fd00::10"), ip("10.0.0.1")]);
    assert_eq!(plan.addresses["ns/s1"], [ip("fd00::11"), ip("10.0.0.2")]);
    assert!(plan.addresses["ns/s2"].is_empty());
    let reasons: Vec<String> = plan.notices.iter().map(|n| n.message.clone()).collect();
    assert_eq!(
        reasons,
        [
            "no free IPv4 address in pool a",
            "no free IPv6 address in pool a"
        ]
    );
}

#[test]
fn a_released_address_waits_out_the_quarantine_except_for_its_owner() {
    let pools = Pools::new(&[spec("a", &["10.0.0.1-10.0.0.3"], &[])]).expect("valid");
    let t0 = Instant::now();
    let mut q = Quarantine::new(Duration::from_secs(60));
    let mut gone = svc("ns/gone", &[Family::V4]);
    gone.current = vec![ip("10.0.0.1")];
    q.observe(&in_use(&[gone]), t0);
    q.observe(&BTreeMap::new(), t0 + Duration::from_secs(1));
    let new = [svc("ns/new", &[Family::V4])];
    let at = |secs| t0 + Duration::from_secs(secs);
    let legacy = BTreeMap::new();
    assert_eq!(
        assign(&pools, &new, &legacy, &q, at(30)).addresses["ns/new"],
        [ip("10.0.0.2")]
    );
    assert_eq!(
        assign(&pools, &new, &legacy, &q, at(61)).addresses["ns/new"],
        [ip("10.0.0.1")]
    );
    let back = [svc("ns/gone", &[Family::V4])];
    assert_eq!(
        assign(&pools, &back, &legacy, &q, at(2)).addresses["ns/gone"],
        [ip("10.0.0.1")]
    );
    let asks = [Svc {
        requested: vec![ip("10.0.0.1")],
        ..svc("ns/new", &[Family::V4])
    }];
    let plan = assign(&pools, &asks, &legacy, &q, at(31));
    assert!(plan.addresses["ns/new"].is_empty());
    assert_eq!(
        plan.notices[0].message,
        "10.0.0.1 was released by ns/gone and is still in quarantine"
    );
    assert_eq!(q.next_expiry(), Some(at(61)));
}

#[test]
fn legacy_addresses_are_kept_for_their_services_even_outside_the_pools() {
    let pools = Pools::new(&[spec("a", &["10.0.0.0/29"], &[])]).expect("valid");
    let legacy: BTreeMap<IpAddr, String> = [
        (ip("10.4.0.50"), "default/echoheaders".to_owned()),
        (ip("10.0.0.1"), "default/later".to_owned()),
    ]
    .into();
    let q = Quarantine::new(Duration::from_secs(60));
    let svcs = [
        svc("default/echoheaders", &[Family::V4]),
        svc("default/other", &[Family::V4]),
        Svc {
            requested: vec![ip("10.0.0.1")],
            ..svc("default/thief", &[Family::V4])
        },
    ];
    let plan = assign(&pools, &svcs, &legacy, &q, Instant::now());
    assert_eq!(plan.addresses["default/echoheaders"], [ip("10.4.0.50")]);
    assert_eq!(
        plan.addresses["default/other"],
        [ip("10.0.0.2")],
        "10.0.0.1 is kept for default/later"
    );
    assert!(plan.addresses["default/thief"].is_empty());
}

#[test]
fn services_that_stop_being_load_balancers_are_cleared_and_foreign_ones_left_alone() {
    let pools = Pools::new(&[spec("a", &["10.0.0.0/29"], &[])]).expect("valid");
    let svcs = [
        Svc {
            kind: Kind::NotLoadBalancer,
            current: vec![ip("10.0.0.1")],
            ..svc("ns/was", &[])
        },
        Svc {
            kind: Kind::Foreign,
            current: vec![ip("10.0.0.2")],
            ..svc("ns/metallb", &[Family::V4])
        },
        svc("ns/new", &[Family::V4]),
    ];
    let plan = run(&pools, &svcs);
    assert_eq!(plan.addresses["ns/was"], Vec::<IpAddr>::new());
    assert!(!plan.addresses.contains_key("ns/metallb"));
    assert_eq!(plan.addresses["ns/new"], [ip("10.0.0.3")]);
}

// Property tests over small pools, so that conflicts, exhaustion and quarantine all happen.

const CANDIDATES: &[&str] = &[
    "10.0.0.0",
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.3",
    "10.0.0.4",
    "10.0.0.5",
    "10.0.0.6",
    "10.0.0.7",
    "10.0.1.9",
    "10.0.1.10",
    "10.0.1.11",
    "10.0.1.12",
    "10.9.9.9",
    "fd00::",
    "fd00::1",
    "fd00::2",
    "fd00::3",
    "fd00::7",
    "fd00::8",
];

fn test_pools(b_auto: bool) -> Pools {
    Pools::new(&[
        spec("a", &["10.0.0.0/29", "fd00::/125"], &["10.0.0.1"]),
        PoolSpec {
            auto_assign: b_auto,
            ..spec("b", &["10.0.1.10-10.0.1.12"], &[])
        },
    ])
    .expect("valid")
}

fn candidate() -> impl Strategy<Value = IpAddr> {
    prop::sample::select(CANDIDATES).prop_map(ip)
}

fn families() -> impl Strategy<Value = Vec<Family>> {
    prop::sample::select(vec![
        vec![Family::V4],
        vec![Family::V6],
        vec![Family::V4, Family::V6],
        vec![Family::V6, Family::V4],
    ])
}

fn svc_strategy() -> impl Strategy<Value = Svc> {
    (
        0u8..3,
        prop::sample::select(vec![
            Kind::Ours,
            Kind::Ours,
            Kind::Ours,
            Kind::Foreign,
            Kind::NotLoadBalancer,
        ]),
        families(),
        prop::collection::vec(candidate(), 0..=2),
        prop::option::weighted(0.05, Just("bad".to_owned())),
        prop::sample::select(vec![None, None, Some("a"), Some("b"), Some("nope")]),
        prop::collection::vec(candidate(), 0..=2),
    )
        .prop_map(
            |(day, kind, families, requested, bad_request, pool, current)| Svc {
                key: String::new(),
                created: format!("2026-01-0{}T00:00:00Z", day + 1),
                kind,
                families,
                requested: if requested.len() == 2 && fastrand_skip(&requested) {
                    requested[..1].to_vec()
                } else {
                    requested
                },
                bad_request,
                pool: pool.map(str::to_owned),
                current,
            },
        )
}

/// Keeps some two-address requests (often invalid: the same family twice), drops others.
fn fastrand_skip(requested: &[IpAddr]) -> bool {
    requested[0] < requested[1]
}

#[derive(Debug, Clone)]
struct World {
    b_auto: bool,
    svcs: Vec<Svc>,
    legacy: BTreeMap<IpAddr, String>,
    /// Addresses released (by owner index) and seconds since.
    released: Vec<(IpAddr, usize)>,
    since: u64,
}

fn world() -> impl Strategy<Value = World> {
    (
        any::<bool>(),
        prop::collection::vec(svc_strategy(), 0..10),
        prop::collection::vec((candidate(), 0usize..12), 0..3),
        prop::collection::vec((candidate(), 0usize..12), 0..4),
        0u64..120,
    )
        .prop_map(|(b_auto, mut svcs, legacy, released, since)| {
            for (i, s) in svcs.iter_mut().enumerate() {
                s.key = format!("ns/s{i}");
            }
            let legacy = legacy
                .into_iter()
                .map(|(ip, i)| (ip, format!("ns/s{i}")))
                .collect();
            World {
                b_auto,
                svcs,
                legacy,
                released,
                since,
            }
        })
}

struct Run {
    pools: Pools,
    q: Quarantine,
    now: Instant,
    plan: Plan,
}

fn run_world(w: &World) -> Run {
    let pools = test_pools(w.b_auto);
    let t0 = Instant::now();
    let mut q = Quarantine::new(Duration::from_secs(60));
    let before: BTreeMap<IpAddr, String> = w
        .released
        .iter()
        .map(|(ip, i)| (*ip, format!("ns/s{i}")))
        .collect();
    q.observe(&before, t0);
    q.observe(&in_use(&w.svcs), t0);
    let now = t0 + Duration::from_secs(w.since);
    let plan = assign(&pools, &w.svcs, &w.legacy, &q, now);
    Run {
        pools,
        q,
        now,
        plan,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_address_is_assigned_twice_nor_one_a_foreign_service_has(w in world()) {
        let r = run_world(&w);
        let mut seen = BTreeSet::new();
        for ips in r.plan.addresses.values() {
            for ip in ips {
                prop_assert!(seen.insert(*ip), "{ip} assigned twice: {:?}", r.plan.addresses);
            }
        }
        for s in w.svcs.iter().filter(|s| s.kind == Kind::Foreign) {
            for ip in &s.current {
                prop_assert!(!seen.contains(ip), "{ip} of foreign {} reassigned", s.key);
            }
        }
    }

    #[test]
    fn one_address_per_wanted_family_in_family_order(w in world()) {
        let r = run_world(&w);
        for s in &w.svcs {
            let got = r.plan.addresses.get(&s.key);
            match s.kind {
                Kind::Foreign => prop_assert!(got.is_none()),
                Kind::NotLoadBalancer => prop_assert!(got.is_none_or(Vec::is_empty)),
                Kind::Ours => {
                    let fams: Vec<Family> = got.expect("planned").iter().map(|ip| Family::of(*ip)).collect();
                    let expect: Vec<Family> = s.families.iter().copied().filter(|f| fams.contains(f)).collect();
                    prop_assert_eq!(fams, expect);
                }
            }
        }
    }

    #[test]
    fn new_addresses_obey_pools_requests_legacy_and_quarantine(w in world()) {
        let r = run_world(&w);
        for s in w.svcs.iter().filter(|s| s.kind == Kind::Ours) {
            for ip in &r.plan.addresses[&s.key] {
                if s.current.contains(ip) {
                    continue;
                }
                let legacy_mine = w.legacy.get(ip) == Some(&s.key);
                let requested = s.requested.contains(ip);
                prop_assert!(s.bad_request.is_none());
                prop_assert!(r.q.blocks(*ip, &s.key, r.now).is_none() || legacy_mine,
                    "{ip} given to {} in quarantine", s.key);
                if let Some(other) = w.legacy.get(ip) {
                    prop_assert_eq!(other, &s.key, "legacy {} given to {}", ip, s.key);
                }
                if legacy_mine {
                    continue;
                }
                let pool = r.pools.pool_of(*ip);
                prop_assert!(pool.is_some_and(|p| !p.reserves(*ip)), "{ip} outside the pools or reserved");
                let pool = pool.expect("checked");
                if let Some(want) = &s.pool {
                    prop_assert_eq!(&pool.name, want);
                } else if !requested {
                    prop_assert!(pool.auto_assign, "{ip} auto-assigned from {}", pool.name);
                }
                // A Service that asks for addresses gets those or none.
                prop_assert!(s.requested.is_empty() || requested, "{} asked {:?}, got {ip}", s.key, s.requested);
            }
        }
    }

    #[test]
    fn what_a_service_does_not_get_is_explained(w in world()) {
        let r = run_world(&w);
        for s in w.svcs.iter().filter(|s| s.kind == Kind::Ours) {
            let got = &r.plan.addresses[&s.key];
            let explained = r.plan.notices.iter().any(|n| n.key == s.key);
            for f in &s.families {
                if !got.iter().any(|ip| Family::of(*ip) == *f) {
                    prop_assert!(explained, "{} has no {f} address and no notice: {:?}", s.key, r.plan);
                }
            }
            // An address lost to an older Service is a conflict notice.
            for ip in &s.current {
                let lost = !got.contains(ip);
                let others = w.svcs.iter().any(|o| o.key != s.key && o.current.contains(ip));
                if lost && others && s.families.contains(&Family::of(*ip))
                    && s.requested.is_empty() && s.pool.is_none()
                    && s.current.iter().filter(|c| Family::of(**c) == Family::of(*ip)).count() == 1
                {
                    prop_assert!(r.plan.notices.iter().any(|n| n.key == s.key && n.reason == Reason::AddressConflict));
                }
            }
        }
    }

    #[test]
    fn applying_plans_reaches_a_fixed_point_and_moves_nothing(w in world()) {
        let r = run_world(&w);
        // Cleared Services are listed until their status is empty.
        let assigned = |p: &Plan| -> BTreeMap<String, Vec<IpAddr>> {
            p.addresses.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let (mut state, mut q, mut plan) = (w.svcs.clone(), r.q.clone(), r.plan.clone());
        // Clearing a Service frees its addresses for the next round, so it may take two.
        let mut fixed = false;
        for _ in 0..3 {
            for s in &mut state {
                if let Some(ips) = plan.addresses.get(&s.key) {
                    s.current.clone_from(ips);
                }
            }
            q.observe(&in_use(&state), r.now);
            let next = assign(&r.pools, &state, &w.legacy, &q, r.now);
            for (k, ips) in &plan.addresses {
                for ip in ips {
                    prop_assert!(next.addresses[k].contains(ip), "{ip} of {k} moved");
                }
            }
            prop_assert!(!next.notices.iter().any(|n| n.reason == Reason::AddressConflict));
            // A fresh replica with an empty quarantine keeps every address too.
            let fresh = assign(&r.pools, &state, &w.legacy, &Quarantine::new(Duration::from_secs(60)), r.now);
            for (k, ips) in &plan.addresses {
                for ip in ips {
                    prop_assert!(fresh.addresses[k].contains(ip), "{ip} of {k} moved for a new leader");
                }
            }
            if assigned(&next) == assigned(&plan) {
                fixed = true;
                break;
            }
            plan = next;
        }
        prop_assert!(fixed, "no fixed point: {:?}", plan);
    }

    #[test]
    fn input_order_does_not_matter(w in world()) {
        let r = run_world(&w);
        let mut reversed = w.clone();
        reversed.svcs.reverse();
        let r2 = run_world(&reversed);
        prop_assert_eq!(r.plan, r2.plan);
    }
}

#[test]
fn a_pool_splits_into_the_fewest_cidrs_as_written() {
    let pools = Pools::new(&[spec(
        "p",
        &[
            "10.4.0.0/24",
            "10.4.1.3-10.4.1.9",
            "fd00::/127",
            "192.0.2.7",
        ],
        &[],
    )])
    .expect("valid");
    let cidrs: Vec<String> = pools
        .get("p")
        .expect("p")
        .cidrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        cidrs,
        [
            "10.4.0.0/24",
            "10.4.1.3/32",
            "10.4.1.4/30",
            "10.4.1.8/31",
            "192.0.2.7/32",
            "fd00::/127"
        ]
    );
}

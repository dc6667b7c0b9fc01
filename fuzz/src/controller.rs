//! The target of fedplane-controller: `--snapshot` files, through the view and the record
//! planner to the etcd records it would write.

use fedplane_controller::plan::{self, Naming};
use fedplane_controller::snapshot;
use fedplane_controller::view::{self, ViewSettings};
use fedplane_dns::key::{check_key, key_to_name};
use fedplane_dns::record::Record;
use hickory_proto::rr::Name;

/// A `--snapshot` file (`kubectl get nodes,services,endpointslices,ingresses -A -o yaml` or
/// `-o json`):
/// when it reads, the records planned from it (as the only cluster, with its own localities
/// and with overridden ones) are keys fedplane-dns accepts, inside the zone, whose values
/// parse as SkyDNS records and carry the controller's owner marker; and planning is
/// deterministic.
pub fn controller_snapshot(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(snap) = snapshot::parse(text, "fuzz") else {
        return;
    };
    let naming = Naming {
        prefix: "/skydns".into(),
        domain: "example.com".into(),
        federation: "federation".into(),
        ttl: 30,
    };
    let zone = Name::from_ascii("example.com.").expect("zone");
    // Every source.
    let mut sources = view::Sources::none();
    for name in view::Sources::NAMES {
        sources.enable(name);
    }
    let settings = [
        ViewSettings {
            cluster: "fcp".into(),
            sources,
            domain: "example.com".into(),
            federation: "federation".into(),
            ..ViewSettings::default()
        },
        ViewSettings {
            cluster: "usa".into(),
            region: Some("America".into()),
            zone: Some("us-1".into()),
            selector: None,
            members: vec!["fcp".into(), "usa".into()],
            sources,
            domain: "example.com".into(),
            federation: "federation".into(),
        },
    ];
    for s in &settings {
        let views = [view::build(s, &snap.objects).0];
        let desired = plan::plan(&naming, &views);
        assert_eq!(
            desired,
            plan::plan(&naming, &views),
            "planning is not deterministic"
        );
        for (key, value) in &desired {
            check_key(&naming.prefix, key.as_bytes())
                .unwrap_or_else(|e| panic!("fedplane-dns refuses the planned key {key}: {e:?}"));
            let name = key_to_name(&naming.prefix, key).expect("a checked key names something");
            assert!(zone.zone_of(&name), "{key} lies outside the zone");
            Record::parse(value.as_bytes())
                .unwrap_or_else(|e| panic!("{key}: fedplane-dns refuses the value {value}: {e}"));
            assert_eq!(
                plan::owner_of(value.as_bytes()),
                Some(naming.owner()),
                "{key}: no owner marker"
            );
        }
    }
}

//! The `--state-dir` snapshot end to end, with real etcd, the real binary and real dig: a
//! snapshot older than `--state-max-age` is not served, and one from an etcd that was rebuilt
//! meanwhile (another cluster) is served until the new etcd's records replace it whole, which
//! is reported as a diverged history.

use std::path::Path;
use std::time::{Duration, SystemTime};

use fedplane_testkit::{Daemon, Dig, Etcd, dig, free_port, http_get, wait_until};

const WAIT: Duration = Duration::from_secs(15);
const HW: &str = "/skydns/com/example/svc/federation/default/hello-world";
const HW_NAME: &str = "hello-world.default.federation.svc.example.com";

/// A fedplane-dns process serving example.com. from `etcd`, saving in `state`.
struct Dns {
    daemon: Daemon,
    port: u16,
    http: String,
}

impl Dns {
    fn start(etcd: &Etcd, state: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let http = format!("127.0.0.1:{}", free_port());
        let mut args: Vec<String> = [
            "--zone",
            "example.com.",
            "--workers",
            "1",
            "--lameduck",
            "0",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        args.extend([
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--http".into(),
            http.clone(),
            "--etcd-endpoints".into(),
            etcd.endpoint(),
            "--state-dir".into(),
            state.to_str().expect("UTF-8 path").into(),
        ]);
        args.extend(extra.iter().map(ToString::to_string));
        let daemon = Daemon::start(Path::new(env!("CARGO_BIN_EXE_fedplane-dns")), &args, &[]);
        Self { daemon, port, http }
    }

    fn await_ready(&self) {
        wait_until(WAIT, "fedplane-dns /readyz", || {
            http_get(&self.http, "/readyz").filter(|(c, _)| *c == 200)
        });
    }

    fn q(&self, args: &[&str]) -> Dig {
        dig("127.0.0.1", self.port, args)
    }

    /// The sum of the samples of metric `name` (any labels), 0 when not exported.
    fn metric(&self, name: &str) -> f64 {
        let Some((_, body)) = http_get(&self.http, "/metrics") else {
            return 0.0;
        };
        body.lines()
            .filter(|l| {
                !l.starts_with('#')
                    && l.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn await_log(&self, what: &str) {
        wait_until(WAIT, &format!("the log to say {what:?}"), || {
            self.daemon.output().contains(what).then_some(())
        });
    }
}

/// etcd with hello-world; fedplane-dns saves it in `state`; both stop. Returns etcd, stopped.
fn saved_then_stopped(state: &Path) -> Etcd {
    let mut etcd = Etcd::start();
    etcd.put(&format!("{HW}/fcp"), r#"{"host":"10.210.1.68"}"#);
    let revision = etcd.revision();
    let dns = Dns::start(&etcd, state, &[]);
    dns.await_ready();
    wait_until(WAIT, "the state to be saved", || {
        #[allow(clippy::cast_precision_loss)]
        (dns.metric("fedplane_dns_state_saved_revision") >= revision as f64).then_some(())
    });
    drop(dns);
    etcd.stop();
    etcd
}

#[test]
fn a_snapshot_older_than_the_max_age_is_not_served() {
    let state = tempfile::tempdir().expect("state dir");
    let mut etcd = saved_then_stopped(state.path());
    let file = state.path().join("fedplane-dns.state");
    wait_until(WAIT, "the saved state to be over 1 s old", || {
        let modified = std::fs::metadata(&file).ok()?.modified().ok()?;
        (SystemTime::now().duration_since(modified).ok()? > Duration::from_millis(1100))
            .then_some(())
    });
    let dns = Dns::start(&etcd, state.path(), &["--state-max-age", "1s"]);
    dns.await_log("too old to serve");
    assert_eq!(http_get(&dns.http, "/readyz").map(|r| r.0), Some(503));
    assert_eq!(dns.q(&[HW_NAME, "A"]).status, "SERVFAIL");
    assert!(dns.metric("fedplane_dns_state_load_errors_total") >= 1.0);
    etcd.restart();
    dns.await_ready();
    assert_eq!(dns.q(&[HW_NAME, "A"]).answers("A"), ["10.210.1.68"]);
}

#[test]
fn a_snapshot_from_an_etcd_rebuilt_since_is_replaced_whole_and_reported() {
    let state = tempfile::tempdir().expect("state dir");
    let mut etcd = saved_then_stopped(state.path());
    let dns = Dns::start(&etcd, state.path(), &[]);
    dns.await_ready();
    assert_eq!(dns.metric("fedplane_dns_serving_from_disk"), 1.0);
    assert_eq!(dns.q(&[HW_NAME, "A"]).answers("A"), ["10.210.1.68"]);
    // etcd comes back rebuilt from scratch: another cluster ID, revisions from 1
    etcd.wipe_and_restart();
    etcd.put("/skydns/com/example/new-cluster", r#"{"host":"10.0.0.12"}"#);
    wait_until(WAIT, "the new etcd's records to answer", || {
        (dns.q(&["new-cluster.example.com", "A"]).answers("A") == ["10.0.0.12"]).then_some(())
    });
    assert_eq!(
        dns.q(&[HW_NAME, "A"]).status,
        "NXDOMAIN",
        "the saved records are replaced whole"
    );
    assert_eq!(dns.metric("fedplane_dns_serving_from_disk"), 0.0);
    dns.await_log("does not continue the saved state");
    assert!(dns.metric("fedplane_dns_etcd_reloads_total") >= 1.0);
}

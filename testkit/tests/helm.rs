//! The offline check of the Helm chart `deploy/helm/fedplane`, which installs what the kustomize
//! tree of `deploy/` does:
//!
//! - it lints with `helm lint --strict` under Helm 3 and Helm 4, with its default values and
//!   those of every example;
//! - for every example, Helm 3 and Helm 4 render the same objects, which pass
//!   `kubernetes-validate --strict` against Kubernetes 1.33 and 1.37;
//! - for every example (the seeds' three clusters in `deploy/helm/examples/seeds`, the host and
//!   member overlays, one cluster with etcd over TLS, one serving the zone to secondaries, one
//!   announcing a pool over BGP, one publishing Ingress hosts), the chart renders the objects that
//!   kustomize renders for the matching kustomization, up to what legitimately differs and
//!   nothing else ([`from_helm`], [`from_kustomize`]): Helm's own labels, kustomize's hash
//!   suffixes on generated names, the chart's checksum annotations in their stead, the
//!   Namespace's `helm.sh/resource-policy: keep`, base64 line breaks in Secrets, and the
//!   layout and comments of the two embedded config files;
//! - the schema and the chart's own checks refuse bad values with a message naming them
//!   (addresses exactly, the namespace the release is kept in, the pods' values);
//! - a change of the groups, the settings or the kubeconfig rolls exactly the pods that use
//!   them, and a change of the pools (watched live) rolls nothing;
//! - odd but valid values (IPv6, every address form, bare-number durations, another namespace,
//!   an existing kubeconfig Secret, a digest and pull secrets, extra objects) render what they
//!   say and validate;
//! - the chart's Namespace is kept on uninstall, and `--namespace` never moves the objects;
//! - the pods' values (replicas, placement, priority, annotations, labels, extra arguments and
//!   variables, grace periods) render where they say, never in a selector, and validate;
//! - the values of fedplane-dns's transfers, NOTIFY, TSIG and UPDATE render the flags, the TSIG
//!   Secret's volume and the Service fedplane-dns-external, and validate; with none of them
//!   set, none of it renders;
//! - `controller.sources` renders `--source` on the host role and on the member role exactly
//!   the rules of fedplane-controller-reader its sources need (Ingresses; Gateways and the
//!   routes; DNSEndpoints), and validates; by default neither renders;
//! - every value is typed in the schema and documented in the chart's README.
//!
//! `scripts/install-deps --tools` installs Helm, kubectl and kubernetes-validate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use fedplane_testkit::manifests::{
    copy_tree, deploy_dir, kustomize, objects, repo_dir, run, sorted, tool, validate_strictly,
};
use serde_json::{Value, json};

/// The Helm majors the chart supports, as `scripts/install-deps --tools` names their binaries.
const HELMS: [&str; 2] = ["helm-3", "helm-4"];

/// The release name of every render.
const RELEASE: &str = "fedplane";

/// The chart, from the repository's root (where helm runs).
const CHART: &str = "deploy/helm/fedplane";

/// One example: the kustomization under `deploy/` and the chart's arguments (paths from the
/// repository's root) for the same cluster.
struct Example {
    kustomization: &'static str,
    helm: &'static [&'static str],
}

const EXAMPLES: [Example; 9] = [
    Example {
        kustomization: "examples/seeds/fcp",
        helm: &["-f", "deploy/helm/examples/seeds/fcp.yaml"],
    },
    Example {
        kustomization: "examples/seeds/usa",
        helm: &["-f", "deploy/helm/examples/seeds/usa.yaml"],
    },
    Example {
        kustomization: "examples/seeds/chn",
        helm: &["-f", "deploy/helm/examples/seeds/chn.yaml"],
    },
    Example {
        kustomization: "overlays/member",
        helm: &["--set", "namespace.create=true"],
    },
    Example {
        kustomization: "overlays/host",
        helm: &[
            "--set",
            "namespace.create=true,roles.host=true,roles.member=false",
            "--set-file",
            "controller.kubeconfig=deploy/overlays/host/members.kubeconfig",
        ],
    },
    Example {
        kustomization: "examples/etcd-tls",
        helm: &[
            "-f",
            "deploy/helm/examples/etcd-tls.yaml",
            "--set-file",
            "controller.kubeconfig=deploy/overlays/host/members.kubeconfig",
        ],
    },
    Example {
        kustomization: "examples/dns-transfer",
        helm: &["-f", "deploy/helm/examples/dns-transfer.yaml"],
    },
    Example {
        kustomization: "examples/vipd-bgp",
        helm: &["-f", "deploy/helm/examples/vipd-bgp.yaml"],
    },
    Example {
        kustomization: "examples/controller-ingress",
        helm: &[
            "-f",
            "deploy/helm/examples/controller-ingress.yaml",
            "--set-file",
            "controller.kubeconfig=deploy/overlays/host/members.kubeconfig",
        ],
    },
];

/// [`EXAMPLES`]' member cluster serving the zone to secondaries (transfers, NOTIFY, TSIG,
/// UPDATE, the Service fedplane-dns-external).
const DNS_TRANSFER: usize = 6;

/// [`EXAMPLES`]' member cluster whose fedplane-vipd announces a pool over BGP (the flag, the
/// run directory, the capability, the RBAC, the peers' Secret, the pools' bgp: section).
const VIPD_BGP: usize = 7;

/// [`EXAMPLES`]' cluster, host and member, whose controller publishes Ingress hosts (the flag,
/// the reader's rule on Ingresses).
const CONTROLLER_INGRESS: usize = 8;

/// The ConfigMaps and Secrets that kustomize's generators name with a hash of their content,
/// so that a change rolls the pods that use them. The chart names them plainly and gives those
/// pods the annotation `checksum/<name>` instead.
const HASHED: [&str; 3] = [
    "fedplane-settings",
    "fedplane-vipd-config",
    "fedplane-controller-kubeconfig",
];

/// The ConfigMaps whose `config.yaml` is a file: a hand-written one with comments in the
/// kustomize tree, the chart's `toYaml` of the values. Compared as the YAML documents they are.
const CONFIG_FILES: [&str; 2] = ["fedplane-vipd-config", "fedplane-vipd-pools"];

/// One Helm of [`HELMS`], run from the repository's root, with its cache, configuration and
/// data under `home` rather than the user's, and no kubeconfig: the release's namespace is
/// `default` unless the arguments say `--namespace`, whatever the user's context says.
fn helm(name: &str, home: &Path) -> Command {
    let mut cmd = Command::new(tool(name));
    cmd.current_dir(repo_dir())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env("KUBECONFIG", home.join("no-kubeconfig"))
        .env("HELM_NAMESPACE", "default")
        .env_remove("HELM_KUBECONTEXT");
    cmd
}

/// `helm template` of the chart with `args`.
fn template(name: &str, home: &Path, args: &[&str]) -> Result<String, String> {
    run(helm(name, home)
        .args(["template", RELEASE, CHART])
        .args(args))
}

/// Renders the chart with `args` under every Helm in [`HELMS`], which must render the same
/// objects; returns the first one's output.
fn render_yaml(home: &Path, args: &[&str]) -> String {
    let mut first: Option<(&str, String)> = None;
    for h in HELMS {
        let yaml = template(h, home, args).unwrap_or_else(|e| panic!("{e}"));
        match &first {
            Some((other, before)) => assert_eq!(
                sorted(before),
                sorted(&yaml),
                "{other} and {h} render different objects for {args:?}"
            ),
            None => first = Some((h, yaml)),
        }
    }
    first.expect("a Helm").1
}

/// [`render_yaml`]'s objects.
fn render(home: &Path, args: &[&str]) -> Vec<Value> {
    objects(&render_yaml(home, args))
}

/// `--set-json` arguments (`key=<json>`).
fn set_json(key: &str, value: &Value) -> String {
    format!("{key}={value}")
}

/// An object's identity: kind, namespace (empty when cluster-scoped), name.
type Key = (String, String, String);

fn key(o: &Value) -> Key {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        s(&o["kind"]),
        s(&o["metadata"]["namespace"]),
        s(&o["metadata"]["name"]),
    )
}

fn show((kind, namespace, name): &Key) -> String {
    if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    }
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", keys(objects)))
}

fn keys(objects: &[Value]) -> Vec<String> {
    objects.iter().map(|o| show(&key(o))).collect()
}

fn is_workload(o: &Value) -> bool {
    matches!(
        o["kind"].as_str(),
        Some("Deployment" | "DaemonSet" | "StatefulSet")
    )
}

/// Every string in `v`.
fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(m) => m.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// Replaces every string of `v` equal to a key of `names` by its value.
fn rename(v: &mut Value, names: &BTreeMap<String, String>) {
    match v {
        Value::String(s) => {
            if let Some(new) = names.get(s.as_str()) {
                new.clone_into(s);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| rename(v, names)),
        Value::Object(m) => m.values_mut().for_each(|v| rename(v, names)),
        _ => {}
    }
}

/// What both sides get: Secret data decoded from base64 (kustomize breaks its lines), and the
/// two config files parsed.
fn normalise_common(o: &mut Value) {
    if o["kind"] == "Secret"
        && let Some(data) = o.get_mut("data").and_then(Value::as_object_mut)
    {
        for (k, v) in data.iter_mut() {
            let text: String = v
                .as_str()
                .unwrap_or_else(|| panic!("Secret data {k} is not a string"))
                .split_whitespace()
                .collect();
            *v = Value::String(
                String::from_utf8(
                    base64_decode(&text)
                        .unwrap_or_else(|| panic!("Secret data {k} is not base64: {text:?}")),
                )
                .unwrap_or_else(|e| panic!("Secret data {k} is not UTF-8: {e}")),
            );
        }
    }
    if o["kind"] == "ConfigMap"
        && CONFIG_FILES.iter().any(|n| o["metadata"]["name"] == *n)
        && let Some(file) = o["data"]["config.yaml"].as_str()
    {
        let parsed: Value = serde_saphyr::from_str(file)
            .unwrap_or_else(|e| panic!("config.yaml is not YAML: {e}\n{file}"));
        o["data"]["config.yaml"] = parsed;
    }
}

/// Standard base64 with padding (Kubernetes' Secret data).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n: u32 = 0;
        for &b in &chunk[..4 - pad] {
            let i = ALPHABET.iter().position(|&a| a == b)?;
            n = n << 6 | u32::try_from(i).ok()?;
        }
        n <<= 6 * u32::try_from(pad).ok()?;
        let [_, a, b, c] = n.to_be_bytes();
        out.extend_from_slice(&[a, b, c][..3 - pad]);
    }
    Some(out)
}

/// Objects by identity, and for each workload the names of [`HASHED`] whose change rolls it.
struct Normalised {
    objects: BTreeMap<Key, Value>,
    rolls: BTreeMap<Key, BTreeSet<String>>,
}

/// kustomize's render, normalised: the generated names of [`HASHED`] (`<name>-<10 characters
/// of hash>`) lose their suffix, in the objects and wherever they are named; a workload that
/// names one is rolled by it.
fn from_kustomize(yaml: &str) -> Normalised {
    let mut all = objects(yaml);
    let mut names = BTreeMap::new();
    for o in &all {
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        if !matches!(o["kind"].as_str(), Some("ConfigMap" | "Secret")) {
            continue;
        }
        for base in HASHED {
            if let Some(hash) = name
                .strip_prefix(base)
                .and_then(|rest| rest.strip_prefix('-'))
                && hash.len() == 10
                && hash
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                names.insert(name.to_owned(), base.to_owned());
            }
        }
    }
    let mut rolls = BTreeMap::new();
    let mut objects = BTreeMap::new();
    for o in &mut all {
        if is_workload(o) {
            let mut found = Vec::new();
            strings(&o["spec"]["template"], &mut found);
            let by: BTreeSet<String> = found
                .iter()
                .filter_map(|s| names.get(*s).cloned())
                .collect();
            rolls.insert(key(o), by);
        }
        rename(o, &names);
        normalise_common(o);
        let k = key(o);
        assert!(
            objects.insert(k.clone(), o.clone()).is_none(),
            "kustomize renders {} twice",
            show(&k)
        );
    }
    Normalised { objects, rolls }
}

/// The labels the chart adds to every object's metadata, beside the kustomize tree's
/// `app.kubernetes.io/part-of`, with the values they must have.
fn helm_labels() -> Vec<(&'static str, String)> {
    let chart: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo_dir().join(CHART).join("Chart.yaml"))
            .expect("read Chart.yaml"),
    )
    .expect("Chart.yaml is YAML");
    let field = |k: &str| {
        chart[k]
            .as_str()
            .unwrap_or_else(|| panic!("Chart.yaml has no {k}"))
            .to_owned()
    };
    vec![
        (
            "helm.sh/chart",
            format!("{}-{}", field("name"), field("version")),
        ),
        ("app.kubernetes.io/managed-by", "Helm".to_owned()),
        ("app.kubernetes.io/instance", RELEASE.to_owned()),
        ("app.kubernetes.io/version", field("appVersion")),
    ]
}

/// The annotation that keeps the chart's Namespace when the release is uninstalled (or stops
/// rendering it), with its value; kustomize's Namespace has none.
const KEEP: (&str, &str) = ("helm.sh/resource-policy", "keep");

/// The chart's render, normalised: every object must carry [`helm_labels`] (else a problem),
/// which are then removed; the Namespace must carry [`KEEP`] (else a problem), which is then
/// removed, with its annotations if they are left empty; a workload's pod template annotations
/// `checksum/<name>` (a SHA-256) are removed, and the workload is rolled by those names.
fn from_helm(all: &[Value], problems: &mut Vec<String>) -> Normalised {
    let labels = helm_labels();
    let mut rolls = BTreeMap::new();
    let mut objects = BTreeMap::new();
    for o in all {
        let mut o = o.clone();
        let k = key(&o);
        for (label, want) in &labels {
            let have = o["metadata"]["labels"]
                .as_object_mut()
                .and_then(|l| l.remove(*label));
            if have.as_ref().and_then(Value::as_str) != Some(want.as_str()) {
                problems.push(format!(
                    "{}: the label {label} is {have:?}, not {want:?}",
                    show(&k)
                ));
            }
        }
        if o["kind"] == "Namespace" {
            let (annotation, want) = KEEP;
            let have = o["metadata"]["annotations"]
                .as_object_mut()
                .and_then(|a| a.remove(annotation));
            if have.as_ref().and_then(Value::as_str) != Some(want) {
                problems.push(format!(
                    "{}: the annotation {annotation} is {have:?}, not {want:?}",
                    show(&k)
                ));
            }
            if o["metadata"]["annotations"]
                .as_object()
                .is_some_and(serde_json::Map::is_empty)
            {
                o["metadata"]
                    .as_object_mut()
                    .expect("metadata")
                    .remove("annotations");
            }
        }
        if is_workload(&o) {
            let mut by = BTreeSet::new();
            if let Some(annotations) =
                o["spec"]["template"]["metadata"]["annotations"].as_object_mut()
            {
                let checksums: Vec<String> = annotations
                    .keys()
                    .filter(|a| a.starts_with("checksum/"))
                    .cloned()
                    .collect();
                for a in checksums {
                    let sum = annotations.remove(&a).expect("listed");
                    if !sum
                        .as_str()
                        .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
                    {
                        problems.push(format!("{}: {a} is {sum}, not a SHA-256", show(&k)));
                    }
                    by.insert(a["checksum/".len()..].to_owned());
                }
            }
            rolls.insert(k.clone(), by);
        }
        normalise_common(&mut o);
        assert!(
            objects.insert(k.clone(), o).is_none(),
            "the chart renders {} twice",
            show(&k)
        );
    }
    Normalised { objects, rolls }
}

/// Where `a` (kustomize's) and `b` (the chart's) differ, one line per path.
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let at = format!("{path}.{k}");
                match (x.get(k.as_str()), y.get(k.as_str())) {
                    (Some(l), Some(r)) => differences(l, r, &at, out),
                    (Some(l), None) => out.push(format!("  {at}: kustomize {l}, Helm absent")),
                    (None, Some(r)) => out.push(format!("  {at}: kustomize absent, Helm {r}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (l, r)) in x.iter().zip(y).enumerate() {
                differences(l, r, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(format!("  {path}: kustomize {a}, Helm {b}")),
        _ => {}
    }
}

/// Compares the chart's render of `example` under `h` with kustomize's.
fn compare(example: &Example, kustomized: &Normalised, h: &str, yaml: &str) -> Vec<String> {
    let what = format!("{} ({h} {:?})", example.kustomization, example.helm);
    let mut problems = Vec::new();
    let helm = from_helm(&objects(yaml), &mut problems);
    for p in &mut problems {
        *p = format!("{what}: {p}");
    }
    let k: BTreeSet<&Key> = kustomized.objects.keys().collect();
    let c: BTreeSet<&Key> = helm.objects.keys().collect();
    for missing in k.difference(&c) {
        problems.push(format!("{what}: the chart lacks {}", show(missing)));
    }
    for extra in c.difference(&k) {
        problems.push(format!("{what}: the chart adds {}", show(extra)));
    }
    for id in k.intersection(&c) {
        let mut lines = Vec::new();
        differences(&kustomized.objects[*id], &helm.objects[*id], "", &mut lines);
        if !lines.is_empty() {
            problems.push(format!(
                "{what}: {} differs:\n{}",
                show(id),
                lines.join("\n")
            ));
        }
    }
    if kustomized.rolls != helm.rolls {
        problems.push(format!(
            "{what}: what rolls the workloads differs: kustomize's hashed names {:?}, the chart's checksums {:?}",
            kustomized.rolls, helm.rolls
        ));
    }
    problems
}

#[test]
fn the_chart_lints_strictly_with_helm_3_and_helm_4() {
    let home = tempfile::tempdir().expect("temp dir");
    let defaults: &[&str] = &[];
    for h in HELMS {
        for args in std::iter::once(defaults).chain(EXAMPLES.iter().map(|e| e.helm)) {
            let out = run(helm(h, home.path())
                .args(["lint", "--strict", CHART])
                .args(args))
            .unwrap_or_else(|e| panic!("{h} lint --strict {args:?}: {e}"));
            assert!(
                out.contains("1 chart(s) linted, 0 chart(s) failed"),
                "{h} lint --strict {args:?}:\n{out}"
            );
        }
    }
}

#[test]
fn both_helms_render_every_example_alike_and_valid_for_kubernetes_1_33_and_1_37() {
    let home = tempfile::tempdir().expect("temp dir");
    let defaults: &[&str] = &[];
    let mut files = Vec::new();
    for (i, args) in std::iter::once(defaults)
        .chain(EXAMPLES.iter().map(|e| e.helm))
        .enumerate()
    {
        let mut renders = Vec::new();
        for h in HELMS {
            let yaml = template(h, home.path(), args).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                !objects(&yaml).is_empty(),
                "{h} renders nothing for {args:?}"
            );
            let file = home.path().join(format!("example-{i}-{h}.yaml"));
            std::fs::write(&file, &yaml).expect("write the render");
            files.push(file);
            renders.push((h, yaml));
        }
        for pair in renders.windows(2) {
            let [(a, x), (b, y)] = pair else { continue };
            assert_eq!(
                sorted(x),
                sorted(y),
                "{a} and {b} render different objects for {args:?}"
            );
        }
    }
    validate_strictly(&files);
}

#[test]
fn every_example_renders_the_objects_kustomize_renders() {
    let home = tempfile::tempdir().expect("temp dir");
    let mut problems = Vec::new();
    for example in &EXAMPLES {
        let kustomized = from_kustomize(&kustomize(&deploy_dir().join(example.kustomization)));
        assert!(
            kustomized.rolls.values().any(|by| !by.is_empty()),
            "{}: no workload is rolled by a hashed ConfigMap or Secret",
            example.kustomization
        );
        for h in HELMS {
            let yaml = template(h, home.path(), example.helm).unwrap_or_else(|e| panic!("{e}"));
            problems.extend(compare(example, &kustomized, h, &yaml));
        }
    }
    assert!(
        problems.is_empty(),
        "the chart and the kustomize tree differ (change both, or the normalisation in helm.rs \
         if the difference is legitimate):\n{}",
        problems.join("\n")
    );
}

/// The comparison finds real drift: each of these edits of the chart (a flag, a port, a
/// resource, a probe, an RBAC rule, a label, an annotation, a name, a capability, a group
/// setting, what rolls a workload, the Namespace's keep policy, the default affinity, replicas
/// and grace period) makes it fail.
#[test]
fn the_comparison_finds_real_drift() {
    let home = tempfile::tempdir().expect("temp dir");
    let example = &EXAMPLES[0];
    let kustomized = from_kustomize(&kustomize(&deploy_dir().join(example.kustomization)));
    let edits: [(&str, &str, &str); 17] = [
        (
            "templates/dns.yaml",
            "--listen=0.0.0.0:1053",
            "--listen=0.0.0.0:1054",
        ),
        (
            "templates/vipd.yaml",
            "containerPort: 9102",
            "containerPort: 9112",
        ),
        (
            "templates/dns.yaml",
            "toYaml .Values.dns.resources",
            "toYaml .Values.vipd.resources",
        ),
        ("templates/dns.yaml", "path: /readyz", "path: /ready"),
        (
            "templates/controller-access.yaml",
            "verbs: [list, watch]",
            "verbs: [get, list, watch]",
        ),
        (
            "templates/vipd.yaml",
            "resourceNames: [fedplane-vipd]",
            "resourceNames: [fedplane-vipd, x]",
        ),
        (
            "templates/_helpers.tpl",
            "app.kubernetes.io/part-of: fedplane",
            "app.kubernetes.io/part-of: fedplan",
        ),
        (
            "templates/_helpers.tpl",
            "app.kubernetes.io/managed-by: {{ .Release.Service }}",
            "app.kubernetes.io/managed-by: Tiller",
        ),
        (
            "templates/controller.yaml",
            "\"prometheus.io/port\" \"9103\"",
            "\"prometheus.io/port\" \"9104\"",
        ),
        (
            "templates/vipd-config.yaml",
            "name: fedplane-vipd-pools",
            "name: fedplane-vipd-pool",
        ),
        (
            "templates/vipd.yaml",
            "add: [\"NET_ADMIN\", \"NET_RAW\"",
            "add: [\"NET_ADMIN\"",
        ),
        (
            "templates/_helpers.tpl",
            "toYaml (dict \"groups\" .Values.vipd.groups)",
            "toYaml (dict \"groups\" (list))",
        ),
        (
            "templates/vipd.yaml",
            "checksum/fedplane-vipd-config:",
            "checksum/fedplane-vipd-pools:",
        ),
        (
            "templates/namespace.yaml",
            "helm.sh/resource-policy: keep",
            "helm.sh/resource-policy: retain",
        ),
        ("templates/dns.yaml", "weight: 100", "weight: 50"),
        ("values.yaml", "  replicas: 2\n", "  replicas: 3\n"),
        (
            "values.yaml",
            "terminationGracePeriodSeconds: 10",
            "terminationGracePeriodSeconds: 11",
        ),
    ];
    for (file, from, to) in edits {
        let copy = tempfile::tempdir().expect("temp dir");
        copy_tree(&repo_dir().join(CHART), copy.path());
        let path = copy.path().join(file);
        let text = std::fs::read_to_string(&path).expect("read the chart");
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("edit the copy");
        let yaml = run(helm(HELMS[0], home.path())
            .args(["template", RELEASE])
            .arg(copy.path())
            .args(example.helm))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !compare(example, &kustomized, HELMS[0], &yaml).is_empty(),
            "the comparison misses {from:?} → {to:?} in {file}"
        );
    }
    // The same for what the dns-transfer example adds (a flag, the Secret's mount, the
    // external Service's policy), what the vipd-bgp one adds (the flag, the run directory,
    // the capability, the RBAC, the peers' Secret, the bgp: section) and what the
    // controller-ingress one adds (the flag, the reader's rule).
    let bgp_edits = [
        ("templates/vipd.yaml", "- --bgp\n", "- --bgp=true\n"),
        (
            "templates/vipd.yaml",
            "--bgp-run-dir=/run/fedplane-vipd/bird",
            "--bgp-run-dir=/run/fedplane-vipd",
        ),
        (
            "templates/vipd.yaml",
            "mountPath: /run/fedplane-vipd",
            "mountPath: /run/vipd",
        ),
        ("templates/vipd.yaml", "sizeLimit: 16Mi", "sizeLimit: 32Mi"),
        (
            "templates/vipd.yaml",
            ", \"NET_BIND_SERVICE\"",
            ", \"NET_BIND_SERVICE\", \"SYS_ADMIN\"",
        ),
        (
            "templates/vipd.yaml",
            "resources: [endpointslices]\n    verbs: [list, watch]",
            "resources: [endpointslices]\n    verbs: [get, list, watch]",
        ),
        (
            "templates/vipd.yaml",
            "resources: [nodes]",
            "resources: [nodes, nodes/status]",
        ),
        (
            "templates/vipd.yaml",
            "mountPath: /etc/fedplane/bgp",
            "mountPath: /etc/fedplane/peers",
        ),
        (
            "templates/vipd-config.yaml",
            "\"bgp\" .Values.vipd.bgp.settings",
            "\"bgp\" (omit .Values.vipd.bgp.settings \"peers\")",
        ),
    ];
    let ingress_edits = [
        (
            "templates/controller.yaml",
            "join \",\" .Values.controller.sources",
            "join \";\" .Values.controller.sources",
        ),
        (
            "templates/controller-access.yaml",
            "resources: [ingresses]",
            "resources: [ingresses, ingresses/status]",
        ),
        (
            "templates/controller-access.yaml",
            "apiGroups: [networking.k8s.io]",
            "apiGroups: [extensions, networking.k8s.io]",
        ),
    ];
    for (example, (file, from, to)) in [
        (
            DNS_TRANSFER,
            (
                "templates/dns.yaml",
                "\"--notify=%s\"",
                "\"--notify=%s,key=xfr\"",
            ),
        ),
        (
            DNS_TRANSFER,
            (
                "templates/dns.yaml",
                "mountPath: /etc/fedplane/tsig",
                "mountPath: /etc/fedplane/keys",
            ),
        ),
        (
            DNS_TRANSFER,
            (
                "templates/dns.yaml",
                "externalTrafficPolicy: {{ .externalTrafficPolicy }}",
                "externalTrafficPolicy: Cluster",
            ),
        ),
    ]
    .into_iter()
    .chain(bgp_edits.into_iter().map(|e| (VIPD_BGP, e)))
    .chain(ingress_edits.into_iter().map(|e| (CONTROLLER_INGRESS, e)))
    {
        let example = &EXAMPLES[example];
        let kustomized = from_kustomize(&kustomize(&deploy_dir().join(example.kustomization)));
        let copy = tempfile::tempdir().expect("temp dir");
        copy_tree(&repo_dir().join(CHART), copy.path());
        let path = copy.path().join(file);
        let text = std::fs::read_to_string(&path).expect("read the chart");
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("edit the copy");
        let yaml = run(helm(HELMS[0], home.path())
            .args(["template", RELEASE])
            .arg(copy.path())
            .args(example.helm))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !compare(example, &kustomized, HELMS[0], &yaml).is_empty(),
            "the comparison misses {from:?} → {to:?} in {file}"
        );
    }
}

/// Values that must fail, and what the message must say: each inner list holds the ways Helm 3
/// and Helm 4 put one thing, of which the message must contain one.
struct Bad {
    what: &'static str,
    values: &'static str,
    set: &'static [&'static str],
    says: &'static [&'static [&'static str]],
}

const SCHEMA: &[&str] = &["values don't meet the specifications of the schema"];

const BAD: &[Bad] = &[
    Bad {
        what: "a zone without its region",
        values: "cluster: {domain: cluster.local, zone: fr, region: \"\"}\n",
        set: &[],
        says: &[SCHEMA, &["cluster.region", "/cluster/region"]],
    },
    Bad {
        what: "a misspelt top-level key",
        values: "domian: example.org\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "Additional property domian is not allowed",
                "additional properties 'domian' not allowed",
            ],
        ],
    },
    Bad {
        what: "a misspelt key of a group",
        values: "vipd:\n  groups:\n    - {vrid: 61, interface: eth0, family: ipv4, prority: 100}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "Additional property prority is not allowed",
                "additional properties 'prority' not allowed",
            ],
        ],
    },
    Bad {
        what: "a misspelt section",
        values: "vipd:\n  pool:\n    - {name: default, addresses: [10.4.0.0/24]}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "Additional property pool is not allowed",
                "additional properties 'pool' not allowed",
            ],
        ],
    },
    Bad {
        what: "a missing required value",
        values: "",
        set: &["--set", "domain=null"],
        says: &[SCHEMA, &["domain is required", "missing property 'domain'"]],
    },
    Bad {
        what: "a group without its interface",
        values: "vipd:\n  groups:\n    - {vrid: 61, family: ipv4}\n",
        set: &[],
        says: &[
            SCHEMA,
            &["interface is required", "missing property 'interface'"],
        ],
    },
    Bad {
        what: "a family that is not ipv4 or ipv6",
        values: "vipd:\n  groups:\n    - {vrid: 61, interface: eth0, family: inet}\n",
        set: &[],
        says: &[
            SCHEMA,
            &["family must be one of", "/family': value must be one of"],
        ],
    },
    Bad {
        what: "a VRID out of range",
        values: "vipd:\n  groups:\n    - {vrid: 256, interface: eth0, family: ipv4}\n",
        set: &[],
        says: &[
            SCHEMA,
            &["vrid: Must be less than or equal to 255", "/vrid': maximum"],
        ],
    },
    Bad {
        what: "a priority that is neither a number nor auto",
        values: "vipd:\n  groups:\n    - {vrid: 61, interface: eth0, family: ipv4, priority: high}\n",
        set: &[],
        says: &[SCHEMA, &["priority", "/priority'"]],
    },
    Bad {
        what: "an advert interval in hours",
        values: "vipd:\n  groups:\n    - {vrid: 61, interface: eth0, family: ipv4, advert_interval: 1h}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "advert_interval: Does not match pattern",
                "'1h' does not match pattern",
            ],
        ],
    },
    Bad {
        what: "a domain with capitals and a trailing dot",
        values: "domain: Example.COM.\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "domain: Does not match pattern",
                "'Example.COM.' does not match pattern",
            ],
        ],
    },
    Bad {
        what: "a pool address that is not one",
        values: "vipd:\n  pools:\n    - {name: default, addresses: [10.4.0.0/24, lan]}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "addresses.1: Does not match pattern",
                "'lan' does not match pattern",
            ],
        ],
    },
    Bad {
        what: "no group",
        values: "vipd:\n  groups: []\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "vipd.groups: Array must have at least 1 items",
                "at '/vipd/groups': minItems",
            ],
        ],
    },
    Bad {
        what: "no pool",
        values: "vipd:\n  pools: []\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "vipd.pools: Array must have at least 1 items",
                "at '/vipd/pools': minItems",
            ],
        ],
    },
    Bad {
        what: "no etcd endpoint",
        values: "etcd:\n  endpoints: []\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "etcd.endpoints: Array must have at least 1 items",
                "at '/etcd/endpoints': minItems",
            ],
        ],
    },
    Bad {
        what: "an etcd endpoint that is not a URL",
        values: "etcd:\n  endpoints: [10.210.1.10:2379]\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "endpoints.0: Does not match pattern",
                "'10.210.1.10:2379' does not match pattern",
            ],
        ],
    },
    Bad {
        what: "a ClusterIP that is not an address",
        values: "dns:\n  service:\n    clusterIP: 10.96.0.x\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "clusterIP: Does not match pattern",
                "'10.96.0.x' does not match pattern",
            ],
        ],
    },
    Bad {
        what: "a pull policy that does not exist",
        values: "image:\n  pullPolicy: Sometimes\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "pullPolicy must be one of",
                "/pullPolicy': value must be one of",
            ],
        ],
    },
    Bad {
        what: "neither role",
        values: "roles: {host: false, member: false}\n",
        set: &[],
        says: &[&[
            "fedplane: nothing to install: set roles.host (fedplane-controller) and/or roles.member",
        ]],
    },
    Bad {
        what: "the host role without the members' kubeconfig",
        values: "roles: {host: true}\n",
        set: &[],
        says: &[&[
            "fedplane: roles.host needs the members' kubeconfig: write it with deploy/member-kubeconfig and pass --set-file controller.kubeconfig=members.kubeconfig",
        ]],
    },
    Bad {
        what: "both a kubeconfig and an existing Secret",
        values: "roles: {host: true}\ncontroller: {kubeconfig: 'kind: Config', existingSecret: mine}\n",
        set: &[],
        says: &[&["fedplane: set controller.kubeconfig or controller.existingSecret, not both"]],
    },
    Bad {
        what: "the kubeconfig's file name instead of its content",
        values: "roles: {host: true}\n",
        set: &["--set", "controller.kubeconfig=members.kubeconfig"],
        says: &[&[
            "fedplane: controller.kubeconfig is not a kubeconfig (kind: Config): pass the file's content with --set-file",
        ]],
    },
    Bad {
        what: "a kubeconfig context that is not a DNS label",
        values: "roles: {host: true}\ncontroller:\n  kubeconfig: |\n    apiVersion: v1\n    kind: Config\n    contexts:\n      - {name: usa, context: {cluster: usa, user: usa}}\n      - {name: kubernetes-admin@chn, context: {cluster: chn, user: chn}}\n",
        set: &[],
        says: &[&[
            "fedplane: controller.kubeconfig has the context \"kubernetes-admin@chn\", which is not a DNS label",
        ]],
    },
    Bad {
        what: "TLS to an http:// endpoint",
        values: "etcd: {tls: {enabled: true}}\n",
        set: &[],
        says: &[&[
            "fedplane: etcd.tls.enabled needs https:// endpoints, but etcd.endpoints has http://etcd.fedplane.example:2379",
        ]],
    },
    Bad {
        what: "an https:// endpoint without TLS",
        values: "etcd: {endpoints: ['https://etcd-0.example:2379']}\n",
        set: &[],
        says: &[&[
            "fedplane: etcd.endpoints has https://etcd-0.example:2379: https:// needs etcd.tls.enabled",
        ]],
    },
    Bad {
        what: "two groups with one VRID on one interface",
        values: "vipd:\n  groups:\n    - {vrid: 61, interface: eth0, family: ipv4}\n    - {vrid: 61, interface: eth0, family: ipv4, priority: 100}\n",
        set: &[],
        says: &[&["fedplane: vipd.groups has two groups with VRID 61 on eth0 (ipv4)"]],
    },
    Bad {
        what: "two pools of one name",
        values: "vipd:\n  pools:\n    - {name: default, addresses: [10.4.0.0/25]}\n    - {name: default, addresses: [10.4.0.128/25]}\n",
        set: &[],
        says: &[&["fedplane: vipd.pools has two pools named default"]],
    },
    // The namespace.
    Bad {
        what: "namespace.create with the release in that namespace (--create-namespace)",
        values: "namespace: {create: true}\n",
        set: &["--namespace", "fedplane-system"],
        says: &[
            &[
                "fedplane: namespace.create is true, but the release is installed into that namespace (--namespace fedplane-system)",
            ],
            &[
                "Either install the release into another, existing namespace (helm install --namespace default ...) or set namespace.create to false",
            ],
        ],
    },
    // Addresses: the schema checks their shape, the chart each exactly.
    Bad {
        what: "a ClusterIP with octets past 255",
        values: "dns: {service: {clusterIP: 999.999.999.999}}\n",
        set: &[],
        says: &[&[
            "fedplane: dns.service.clusterIP is \"999.999.999.999\", which is not an IPv4 or IPv6 address",
        ]],
    },
    Bad {
        what: "a headless fedplane-dns",
        values: "dns: {service: {clusterIP: None}}\n",
        set: &[],
        says: &[&[
            "fedplane: dns.service.clusterIP is None, a headless Service, but CoreDNS forwards the zone to one address, the Service's ClusterIP",
        ]],
    },
    Bad {
        what: "an IPv6 ClusterIP with two ::",
        values: "dns: {service: {clusterIP: 'fd00::96::53'}}\n",
        set: &[],
        says: &[&[
            "fedplane: dns.service.clusterIP is \"fd00::96::53\", which is not an IPv4 or IPv6 address",
        ]],
    },
    Bad {
        what: "a pool CIDR with a bad address and prefix length",
        values: "vipd: {pools: [{name: default, addresses: [300.1.1.1/33]}]}\n",
        set: &[],
        says: &[&[
            "fedplane: vipd.pools[0].addresses (pool default) has \"300.1.1.1/33\", which is not a CIDR: an IPv4 address with a prefix length of 0-32",
        ]],
    },
    Bad {
        what: "an IPv4 pool CIDR with a prefix length past 32",
        values: "vipd: {pools: [{name: default, addresses: [10.4.0.0/33]}]}\n",
        set: &[],
        says: &[&["has \"10.4.0.0/33\", which is not a CIDR"]],
    },
    Bad {
        what: "an IPv6 pool CIDR with a prefix length past 128",
        values: "vipd: {pools: [{name: default, addresses: ['fd00:4::/129']}]}\n",
        set: &[],
        says: &[&["has \"fd00:4::/129\", which is not a CIDR"]],
    },
    Bad {
        what: "a pool address that is only a colon",
        values: "vipd: {pools: [{name: default, addresses: [':']}]}\n",
        set: &[],
        says: &[&[
            "fedplane: vipd.pools[0].addresses (pool default) has \":\", which is not an IPv4 or IPv6 address, a CIDR (10.4.0.0/24) or a range (10.4.1.10-10.4.1.20)",
        ]],
    },
    Bad {
        what: "a range from an IPv4 to an IPv6 address",
        values: "vipd: {pools: [{name: default, addresses: ['10.0.0.5-fd00::1']}]}\n",
        set: &[],
        says: &[&[
            "fedplane: vipd.pools[0].addresses (pool default) has \"10.0.0.5-fd00::1\", which is not a range: two IPv4 or two IPv6 addresses",
        ]],
    },
    Bad {
        what: "a reserved range that ends before it starts",
        values: "vipd: {pools: [{name: default, addresses: [10.4.0.0/24], reserved: [10.4.0.20-10.4.0.10]}]}\n",
        set: &[],
        says: &[&[
            "fedplane: vipd.pools[0].reserved (pool default) has \"10.4.0.20-10.4.0.10\", a range that ends before it starts",
        ]],
    },
    Bad {
        what: "an IPv4 CIDR with host bits set",
        values: "vipd: {pools: [{name: default, addresses: [10.4.0.0/24]}, {name: infra, addresses: [10.210.1.65/26]}]}\n",
        set: &[],
        says: &[&[
            "fedplane: vipd.pools[1].addresses (pool infra) has \"10.210.1.65/26\", whose host bits are set: the network is 10.210.1.64/26",
        ]],
    },
    Bad {
        what: "an IPv4 address with a leading zero (fedplane-vipd refuses it)",
        values: "vipd: {pools: [{name: default, addresses: [10.4.0.010]}]}\n",
        set: &[],
        says: &[&["has \"10.4.0.010\", which is not an IPv4 or IPv6 address"]],
    },
    Bad {
        what: "an IPv4 unicast peer of an IPv6 group",
        values: "vipd: {groups: [{vrid: 61, interface: eth0, family: ipv6, unicast_peers: [10.0.0.2]}]}\n",
        set: &[],
        says: &[&[
            "fedplane: vipd.groups[0] (VRID 61, ipv6) has the unicast peer \"10.0.0.2\", which is not an IPv6 address",
        ]],
    },
    Bad {
        what: "a unicast peer that is not an address",
        values: "vipd: {groups: [{vrid: 61, interface: eth0, family: ipv4, unicast_peers: [10.0.0.256]}]}\n",
        set: &[],
        says: &[&["has the unicast peer \"10.0.0.256\", which is not an IPv4 address"]],
    },
    Bad {
        what: "an IPv6 unicast peer that is not link-local",
        values: "vipd: {groups: [{vrid: 61, interface: eth0, family: ipv6, unicast_peers: ['fd00::2']}]}\n",
        set: &[],
        says: &[&[
            "fedplane: vipd.groups[0] (VRID 61) has the unicast peer \"fd00::2\": IPv6 peers are the nodes' link-local addresses (fe80::/10)",
        ]],
    },
    Bad {
        what: "VRRP v2 for IPv6",
        values: "vipd: {groups: [{vrid: 61, interface: eth0, family: ipv6, vrrp_version: 2}]}\n",
        set: &[],
        says: &[&[
            "fedplane: vipd.groups[0] (VRID 61) is ipv6 with vrrp_version 2, which is IPv4 only: use 3",
        ]],
    },
    // Durations: a bare number is seconds, but not a negative one.
    Bad {
        what: "a negative advert interval",
        values: "vipd: {groups: [{vrid: 61, interface: eth0, family: ipv4, advert_interval: -1}]}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "advert_interval: Must be greater than or equal to 0",
                "/advert_interval': minimum: got -1, want 0",
            ],
        ],
    },
    // The pods' values.
    Bad {
        what: "no dns replica",
        values: "dns: {replicas: 0}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "dns.replicas: Must be greater than or equal to 1",
                "at '/dns/replicas': minimum: got 0, want 1",
            ],
        ],
    },
    Bad {
        what: "replicas as a string",
        values: "controller: {replicas: '2'}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "controller.replicas: Invalid type. Expected: integer, given: string",
                "at '/controller/replicas': got string, want integer",
            ],
        ],
    },
    Bad {
        what: "a pod label that would change the selector's",
        values: "dns: {podLabels: {app.kubernetes.io/name: mine}}\n",
        set: &[],
        says: &[&[
            "fedplane: dns.podLabels sets app.kubernetes.io/name, the label the chart selects the pods of fedplane-dns by",
        ]],
    },
    Bad {
        what: "a pod label that is not a label",
        values: "controller: {podLabels: {'team name': net}}\n",
        set: &[],
        says: &[SCHEMA, &["controller.podLabels", "'team name'"]],
    },
    Bad {
        what: "a pod annotation that is the chart's checksum",
        values: "vipd: {podAnnotations: {checksum/fedplane-vipd-config: x}}\n",
        set: &[],
        says: &[&[
            "fedplane: vipd.podAnnotations sets checksum/fedplane-vipd-config: checksum/fedplane-* annotations are the chart's own",
        ]],
    },
    Bad {
        what: "an annotation that is not a string",
        values: "dns: {service: {annotations: {example.com/enabled: true}}}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "dns.service.annotations.example.com/enabled: Invalid type. Expected: string, given: boolean",
                "at '/dns/service/annotations/example.com~1enabled': got boolean, want string",
            ],
        ],
    },
    Bad {
        what: "an extra argument repeating a flag the chart passes",
        values: "dns: {extraArgs: ['--http=0.0.0.0:9999']}\n",
        set: &[],
        says: &[&[
            "fedplane: dns.extraArgs has \"--http=0.0.0.0:9999\", a flag the chart passes itself (--http=0.0.0.0:9153), and fedplane-dns stops on a flag given twice",
        ]],
    },
    Bad {
        what: "an extra argument repeating a flag the chart passes, in two items",
        values: "vipd: {extraArgs: ['--lease', 'kube-system/vipd']}\n",
        set: &[],
        says: &[&[
            "fedplane: vipd.extraArgs has \"--lease\", a flag the chart passes itself (--lease=fedplane-system/fedplane-vipd)",
        ]],
    },
    Bad {
        what: "an extra argument repeating a TLS flag the chart passes",
        values: "roles: {host: true}\ncontroller: {existingSecret: members, extraArgs: ['--etcd-ca=/ca.crt']}\netcd: {endpoints: ['https://etcd:2379'], tls: {enabled: true}}\n",
        set: &[],
        says: &[&[
            "fedplane: controller.extraArgs has \"--etcd-ca=/ca.crt\", a flag the chart passes itself (--etcd-ca=/etc/fedplane/etcd/ca.crt)",
        ]],
    },
    Bad {
        what: "--source in extraArgs (the members' RBAC follows controller.sources)",
        values: "roles: {host: true}\ncontroller: {existingSecret: members, extraArgs: ['--source=service,ingress']}\n",
        set: &[],
        says: &[&[
            "fedplane: controller.extraArgs has \"--source=service,ingress\": set controller.sources instead (now [\"service\"])",
        ]],
    },
    Bad {
        what: "--source in extraArgs as two items, with controller.sources set",
        values: "roles: {host: true}\ncontroller: {existingSecret: members, sources: [service, ingress], extraArgs: ['--source', 'ingress']}\n",
        set: &[],
        says: &[&[
            "fedplane: controller.extraArgs has \"--source\": set controller.sources instead (now [\"service\",\"ingress\"])",
        ]],
    },
    Bad {
        what: "a source the controller does not have",
        values: "controller: {sources: [service, gateway]}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "controller.sources.1 must be one of the following: \"service\", \"ingress\", \"gateway-httproute\", \"gateway-grpcroute\", \"gateway-tlsroute\", \"dnsendpoint\"",
                "at '/controller/sources/1': value must be one of 'service', 'ingress', 'gateway-httproute', 'gateway-grpcroute', 'gateway-tlsroute', 'dnsendpoint'",
            ],
        ],
    },
    Bad {
        what: "a source given twice",
        values: "controller: {sources: [ingress, ingress]}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "controller.sources: array items[0,1] must be unique",
                "at '/controller/sources': items at 0 and 1 are equal",
            ],
        ],
    },
    Bad {
        what: "no source",
        values: "controller: {sources: []}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "controller.sources: Array must have at least 1 items",
                "at '/controller/sources': minItems: got 0, want 1",
            ],
        ],
    },
    Bad {
        what: "an empty extra argument",
        values: "vipd: {extraArgs: ['']}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "vipd.extraArgs.0: String length must be greater than or equal to 1",
                "at '/vipd/extraArgs/0': minLength: got 0, want 1",
            ],
        ],
    },
    Bad {
        what: "an extra variable that overrides the settings",
        values: "dns: {extraEnv: [{name: FEDPLANE_DOMAIN, value: example.org}]}\n",
        set: &[],
        says: &[&[
            "fedplane: dns.extraEnv sets FEDPLANE_DOMAIN, which the chart sets from the ConfigMap fedplane-settings: set domain, federation, etcd.endpoints, etcd.prefix or cluster instead",
        ]],
    },
    Bad {
        what: "an extra variable that overrides NODE_NAME",
        values: "vipd: {extraEnv: [{name: NODE_NAME, value: node-1}]}\n",
        set: &[],
        says: &[&[
            "fedplane: vipd.extraEnv sets NODE_NAME, which the chart sets to the node's name",
        ]],
    },
    Bad {
        what: "an extra variable given twice",
        values: "roles: {host: true}\ncontroller: {existingSecret: members, extraEnv: [{name: RUST_LOG, value: info}, {name: RUST_LOG, value: debug}]}\n",
        set: &[],
        says: &[&["fedplane: controller.extraEnv sets RUST_LOG twice"]],
    },
    Bad {
        what: "an extra variable with both a value and a valueFrom",
        values: "dns: {extraEnv: [{name: POD_IP, value: x, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]}\n",
        set: &[],
        says: &[&[
            "fedplane: dns.extraEnv sets POD_IP with both value and valueFrom: give it one of them",
        ]],
    },
    Bad {
        what: "an extra variable without a name",
        values: "dns: {extraEnv: [{value: x}]}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "dns.extraEnv.0: name is required",
                "at '/dns/extraEnv/0': missing property 'name'",
            ],
        ],
    },
    Bad {
        what: "an extra variable with a number for its value",
        values: "dns: {extraEnv: [{name: WORKERS, value: 2}]}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "dns.extraEnv.0.value: Invalid type. Expected: string, given: integer",
                "at '/dns/extraEnv/0/value': got number, want string",
            ],
        ],
    },
    Bad {
        what: "a toleration with a misspelt operator",
        values: "vipd: {tolerations: [{key: node-role.kubernetes.io/control-plane, operator: exists}]}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "vipd.tolerations.0.operator must be one of the following",
                "at '/vipd/tolerations/0/operator': value must be one of 'Exists', 'Equal'",
            ],
        ],
    },
    Bad {
        what: "tolerations as a map",
        values: "dns: {tolerations: {key: a}}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "dns.tolerations: Invalid type. Expected: array, given: object",
                "at '/dns/tolerations': got object, want array",
            ],
        ],
    },
    Bad {
        what: "a misspelt affinity",
        values: "dns: {affinity: {nodeAfinity: {}}}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "Additional property nodeAfinity is not allowed",
                "additional properties 'nodeAfinity' not allowed",
            ],
        ],
    },
    Bad {
        what: "an affinity removed with null",
        values: "dns: {affinity: null}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "dns: affinity is required",
                "at '/dns': missing property 'affinity'",
            ],
        ],
    },
    Bad {
        what: "a node selector with a number",
        values: "vipd: {nodeSelector: {example.com/vrrp: 1}}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "vipd.nodeSelector.example.com/vrrp: Invalid type. Expected: string, given: integer",
                "at '/vipd/nodeSelector/example.com~1vrrp': got number, want string",
            ],
        ],
    },
    Bad {
        what: "a priority class that is not a name",
        values: "dns: {priorityClassName: High}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "dns.priorityClassName: Does not match pattern",
                "'High' does not match pattern",
            ],
        ],
    },
    Bad {
        what: "a negative grace period",
        values: "vipd: {terminationGracePeriodSeconds: -1}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "vipd.terminationGracePeriodSeconds: Must be greater than or equal to 0",
                "at '/vipd/terminationGracePeriodSeconds': minimum: got -1, want 0",
            ],
        ],
    },
    // fedplane-dns's transfers, NOTIFY, TSIG and UPDATE.
    Bad {
        what: "an UPDATE entry without a key",
        values: "dns: {tsig: {keys: [{name: ddns, algorithm: hmac-sha256}]}, allowUpdate: ['10.0.0.0/8']}\n",
        set: &[],
        says: &[&[
            "fedplane: dns.allowUpdate[0] has \"10.0.0.0/8\" without a key: UPDATE needs one, CIDR,key=NAME with NAME a key of dns.tsig.keys",
        ]],
    },
    Bad {
        what: "a transfer entry naming a key that is not in the keys",
        values: "dns: {tsig: {keys: [{name: xfr, algorithm: hmac-sha256}]}, allowTransfer: ['192.0.2.53/32,key=xrf']}\n",
        set: &[],
        says: &[&[
            "fedplane: dns.allowTransfer[0] has \"192.0.2.53/32,key=xrf\", which names the TSIG key xrf, not one of dns.tsig.keys (xfr)",
        ]],
    },
    Bad {
        what: "a NOTIFY target naming a key when there is none",
        values: "dns: {notify: ['[2001:db8::53]:53,key=xfr']}\n",
        set: &[],
        says: &[&[
            "fedplane: dns.notify[0] has \"[2001:db8::53]:53,key=xfr\", which names the TSIG key xfr, not one of dns.tsig.keys (none)",
        ]],
    },
    Bad {
        what: "an UPDATE entry naming a key that is not in the keys",
        values: "dns: {tsig: {keys: [{name: xfr, algorithm: hmac-sha256}]}, allowUpdate: ['10.0.0.0/8,key=ddns']}\n",
        set: &[],
        says: &[&[
            "fedplane: dns.allowUpdate[0] has \"10.0.0.0/8,key=ddns\", which names the TSIG key ddns, not one of dns.tsig.keys (xfr)",
        ]],
    },
    Bad {
        what: "something else than key=NAME after the comma",
        values: "dns: {allowTransfer: ['10.0.0.0/8,tsig=xfr']}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "dns.allowTransfer.0: Does not match pattern",
                "'10.0.0.0/8,tsig=xfr' does not match pattern",
            ],
        ],
    },
    Bad {
        what: "a transfer CIDR with a prefix length past 32",
        values: "dns: {allowTransfer: ['10.0.0.0/33']}\n",
        set: &[],
        says: &[&[
            "fedplane: dns.allowTransfer[0] has \"10.0.0.0/33\", which is not an address or a CIDR",
        ]],
    },
    Bad {
        what: "a NOTIFY target that is not an address",
        values: "dns: {notify: ['192.0.2.300:53']}\n",
        set: &[],
        says: &[&[
            "fedplane: dns.notify[0] has \"192.0.2.300:53\", which is not an address: give ADDR, ADDR:PORT or [IPv6]:PORT",
        ]],
    },
    Bad {
        what: "two TSIG keys of one name (names are case-insensitive, the trailing dot optional)",
        values: "dns: {tsig: {keys: [{name: xfr, algorithm: hmac-sha256}, {name: XFR., algorithm: hmac-sha512}]}}\n",
        set: &[],
        says: &[&["fedplane: dns.tsig.keys has two keys named XFR."]],
    },
    Bad {
        what: "a TSIG algorithm fedplane-dns does not have",
        values: "dns: {tsig: {keys: [{name: xfr, algorithm: hmac-md5}]}}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "algorithm must be one of",
                "/algorithm': value must be one of",
            ],
        ],
    },
    Bad {
        what: "TSIG keys without their Secret",
        values: "dns: {tsig: {secretName: '', keys: [{name: xfr, algorithm: hmac-sha256}]}}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "dns.tsig.secretName: Does not match pattern",
                "at '/dns/tsig/secretName'",
            ],
        ],
    },
    Bad {
        what: "two NOTIFY sources of one family",
        values: "dns: {notifySource: [10.0.0.1, 10.0.0.2]}\n",
        set: &[],
        says: &[&[
            "fedplane: dns.notifySource has two IPv4 addresses: give at most one per family",
        ]],
    },
    Bad {
        what: "a catalog zone and the flag in extraArgs too",
        values: "dns: {catalogZone: catalog.invalid., extraArgs: ['--catalog-zone=cat.invalid.']}\n",
        set: &[],
        says: &[&[
            "fedplane: dns.extraArgs has \"--catalog-zone=cat.invalid.\", a flag the chart passes itself (--catalog-zone=catalog.invalid.)",
        ]],
    },
    Bad {
        what: "a load balancer address on a NodePort Service",
        values: "dns: {externalService: {enabled: true, type: NodePort, loadBalancerIP: 10.4.0.53}}\n",
        set: &[],
        says: &[&[
            "fedplane: dns.externalService.loadBalancerIP is set, but its type is NodePort: it needs LoadBalancer",
        ]],
    },
    Bad {
        what: "a load balancer address past 255",
        values: "dns: {externalService: {enabled: true, loadBalancerIP: 10.4.0.256}}\n",
        set: &[],
        says: &[&[
            "fedplane: dns.externalService.loadBalancerIP is \"10.4.0.256\", which is not an IPv4 or IPv6 address",
        ]],
    },
    Bad {
        what: "a misspelt traffic policy",
        values: "dns: {externalService: {externalTrafficPolicy: local}}\n",
        set: &[],
        says: &[
            SCHEMA,
            &[
                "externalTrafficPolicy must be one of",
                "/externalTrafficPolicy': value must be one of",
            ],
        ],
    },
    Bad {
        what: "a bgp pool without BGP mode",
        values: "vipd: {pools: [{name: rack, addresses: [10.9.0.0/24], mode: bgp}]}\n",
        set: &[],
        says: &[&[
            "fedplane: vipd.pools[0] (pool rack) is mode: bgp, which fedplane-vipd refuses without --bgp: set vipd.bgp.enabled",
        ]],
    },
    Bad {
        what: "BGP mode without its settings",
        values: "vipd: {bgp: {enabled: true}}\n",
        set: &[],
        says: &[&["fedplane: vipd.bgp.enabled is true but vipd.bgp.settings is empty"]],
    },
    Bad {
        what: "BGP settings without BGP mode",
        values: "vipd: {bgp: {settings: {asn: 65001}}}\n",
        set: &[],
        says: &[&["fedplane: vipd.bgp.settings is set but vipd.bgp.enabled is false"]],
    },
    Bad {
        what: "a misspelt peer key",
        values: "vipd: {bgp: {enabled: true, settings: {asn: 65001, peers: [{name: tor, address: 10.0.0.1, asn: 65000, passwd_file: /x}]}}}\n",
        set: &[],
        says: &[SCHEMA, &["passwd_file"]],
    },
    Bad {
        what: "a misspelt pool mode",
        values: "vipd: {bgp: {enabled: true, settings: {asn: 65001}}, pools: [{name: rack, addresses: [10.9.0.0/24], mode: BGP}]}\n",
        set: &[],
        says: &[SCHEMA, &["mode"]],
    },
];

#[test]
fn the_chart_refuses_bad_values_with_a_message_naming_them() {
    let home = tempfile::tempdir().expect("temp dir");
    let mut problems = Vec::new();
    for (i, bad) in BAD.iter().enumerate() {
        let file = home.path().join(format!("bad-{i}.yaml"));
        std::fs::write(&file, bad.values).expect("write values");
        let mut args = vec!["-f", file.to_str().expect("UTF-8 path")];
        args.extend(bad.set);
        for h in HELMS {
            match template(h, home.path(), &args) {
                Ok(_) => problems.push(format!("{h} renders {}", bad.what)),
                Err(e) => {
                    for ways in bad.says {
                        if !ways.iter().any(|w| e.contains(w)) {
                            problems.push(format!(
                                "{h}, {}: the message does not say {ways:?}:\n{e}",
                                bad.what
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// The pod templates of the three workloads, by name.
fn pod_templates(all: &[Value]) -> BTreeMap<String, Value> {
    all.iter()
        .filter(|o| is_workload(o))
        .map(|o| {
            (
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                o["spec"]["template"].clone(),
            )
        })
        .collect()
}

/// A change of values: the arguments that make it, the object it changes (kind, name), and the
/// workloads whose pods it must roll.
struct Change<'a> {
    what: &'a str,
    args: Vec<&'a str>,
    object: (&'a str, &'a str),
    rolls: &'a [&'a str],
}

#[test]
fn a_change_of_groups_settings_or_kubeconfig_rolls_the_pods_using_them_and_of_pools_none() {
    let home = tempfile::tempdir().expect("temp dir");
    let fcp = EXAMPLES[0].helm;
    let base = render(home.path(), fcp);
    let groups = set_json(
        "vipd.groups",
        &json!([{"vrid": 71, "interface": "eth1", "family": "ipv4", "priority": "auto"}]),
    );
    let pools = set_json(
        "vipd.pools",
        &json!([{"name": "default", "addresses": ["10.210.1.128/26"]}]),
    );
    let changes = [
        Change {
            what: "the groups",
            args: vec!["--set-json", &groups],
            object: ("ConfigMap", "fedplane-vipd-config"),
            rolls: &["fedplane-vipd"],
        },
        Change {
            what: "the pools",
            args: vec!["--set-json", &pools],
            object: ("ConfigMap", "fedplane-vipd-pools"),
            rolls: &[],
        },
        Change {
            what: "the domain",
            args: vec!["--set", "domain=example.org"],
            object: ("ConfigMap", "fedplane-settings"),
            rolls: &["fedplane-controller", "fedplane-dns"],
        },
        Change {
            what: "the kubeconfig",
            args: vec![
                "--set-file",
                "controller.kubeconfig=deploy/overlays/host/members.kubeconfig",
            ],
            object: ("Secret", "fedplane-controller-kubeconfig"),
            rolls: &["fedplane-controller"],
        },
    ];
    for Change {
        what,
        args: extra,
        object: (kind, name),
        rolls: rolled,
    } in changes
    {
        let mut args = fcp.to_vec();
        args.extend(extra);
        let changed = render(home.path(), &args);
        assert_ne!(
            find(&base, kind, name),
            find(&changed, kind, name),
            "a change of {what} changes {kind} {name}"
        );
        let (before, after) = (pod_templates(&base), pod_templates(&changed));
        let differ: Vec<&str> = before
            .keys()
            .filter(|w| before[*w] != after[*w])
            .map(String::as_str)
            .collect();
        assert_eq!(differ, rolled, "the pods a change of {what} rolls");
    }
}

/// Writes `objects` as a YAML stream (JSON is YAML) for kubernetes-validate.
fn write_objects(dir: &Path, name: &str, objects: &[Value]) -> PathBuf {
    let file = dir.join(format!("{name}.yaml"));
    let text: Vec<String> = objects.iter().map(Value::to_string).collect();
    std::fs::write(&file, text.join("\n---\n")).expect("write rendered objects");
    file
}

#[test]
fn odd_but_valid_values_render_what_they_say_and_validate() {
    let home = tempfile::tempdir().expect("temp dir");
    let mut files = Vec::new();

    // IPv6 and dual stack: groups of both families, IPv6 pools, an IPv6 ClusterIP and etcd.
    let v6 = home.path().join("ipv6.yaml");
    std::fs::write(
        &v6,
        "etcd:\n  endpoints: ['http://[fd00:10::10]:2379']\n\
         dns:\n  service:\n    clusterIP: 'fd00:96::53'\n\
         vipd:\n  groups:\n\
         \x20   - {vrid: 61, interface: eth0, family: ipv4, priority: auto}\n\
         \x20   - {vrid: 61, interface: eth0, family: ipv6, priority: 200, advert_interval: 1s, unicast_peers: ['fe80::1']}\n\
         \x20 pools:\n\
         \x20   - {name: default, addresses: ['10.4.0.0/24', 'fd00:4::/120'], reserved: ['fd00:4::1']}\n\
         \x20   - {name: v6-range, addresses: ['fd00:5::10-fd00:5::20'], auto_assign: false}\n",
    )
    .expect("write values");
    let all = render(home.path(), &["-f", v6.to_str().expect("UTF-8")]);
    assert_eq!(
        find(&all, "Service", "fedplane-dns")["spec"]["clusterIP"],
        "fd00:96::53"
    );
    assert_eq!(
        find(&all, "ConfigMap", "fedplane-settings")["data"]["FEDPLANE_ETCD_ENDPOINTS"],
        "http://[fd00:10::10]:2379"
    );
    let parsed = |o: &Value| -> Value {
        serde_saphyr::from_str(o["data"]["config.yaml"].as_str().expect("config.yaml"))
            .expect("config.yaml is YAML")
    };
    assert_eq!(
        parsed(find(&all, "ConfigMap", "fedplane-vipd-pools")),
        json!({"pools": [
            {"name": "default", "addresses": ["10.4.0.0/24", "fd00:4::/120"], "reserved": ["fd00:4::1"]},
            {"name": "v6-range", "addresses": ["fd00:5::10-fd00:5::20"], "auto_assign": false},
        ]})
    );
    assert_eq!(
        parsed(find(&all, "ConfigMap", "fedplane-vipd-config"))["groups"][1],
        json!({"vrid": 61, "interface": "eth0", "family": "ipv6", "priority": 200,
               "advert_interval": "1s", "unicast_peers": ["fe80::1"]})
    );
    files.push(write_objects(home.path(), "ipv6", &all));

    // Another namespace: nothing names fedplane-system any more.
    let all = render(
        home.path(),
        &[
            "--set",
            "namespace.name=fed,namespace.create=true,roles.host=true,controller.existingSecret=members",
        ],
    );
    let text: String = all.iter().map(Value::to_string).collect();
    assert!(
        !text.contains("fedplane-system"),
        "with namespace.name=fed, the objects still name fedplane-system:\n{text}"
    );
    for o in &all {
        let cluster_wide = matches!(
            o["kind"].as_str(),
            Some("Namespace" | "ClusterRole" | "ClusterRoleBinding")
        );
        assert_eq!(
            o["metadata"]["namespace"].as_str(),
            (!cluster_wide).then_some("fed"),
            "{}",
            show(&key(o))
        );
    }
    let vipd_args = &find(&all, "DaemonSet", "fedplane-vipd")["spec"]["template"]["spec"]["containers"]
        [0]["args"];
    for arg in [
        "--pools-configmap=fed/fedplane-vipd-pools",
        "--lease=fed/fedplane-vipd",
    ] {
        assert!(
            vipd_args
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == arg)),
            "fedplane-vipd's args {vipd_args} lack {arg}"
        );
    }
    // The existing kubeconfig Secret: none made, the controller mounts it, no checksum of it.
    assert!(
        !all.iter()
            .any(|o| o["kind"] == "Secret"
                && o["metadata"]["name"] == "fedplane-controller-kubeconfig"),
        "with controller.existingSecret the chart makes a kubeconfig Secret"
    );
    let controller = &find(&all, "Deployment", "fedplane-controller")["spec"]["template"];
    assert_eq!(
        controller["spec"]["volumes"],
        json!([{"name": "kubeconfig", "secret": {"secretName": "members"}}])
    );
    assert!(
        controller["metadata"]["annotations"]
            .get("checksum/fedplane-controller-kubeconfig")
            .is_none()
    );
    files.push(write_objects(home.path(), "namespace", &all));

    // A digest, a pull policy and pull secrets, in every pod; extra objects keep their labels
    // and get the chart's.
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let extra = set_json(
        "extraObjects",
        &json!([{"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "site", "namespace": "fedplane-system", "labels": {"team": "net"}},
                 "data": {"k": "v"}}]),
    );
    let image = format!(
        "image.digest={digest},image.pullPolicy=Always,imagePullSecrets[0].name=regcred,roles.host=true"
    );
    let all = render(
        home.path(),
        &[
            "--set",
            &image,
            "--set-json",
            &extra,
            "--set-file",
            "controller.kubeconfig=deploy/overlays/host/members.kubeconfig",
        ],
    );
    for kind_name in [
        ("Deployment", "fedplane-controller"),
        ("Deployment", "fedplane-dns"),
        ("DaemonSet", "fedplane-vipd"),
    ] {
        let pod = &find(&all, kind_name.0, kind_name.1)["spec"]["template"]["spec"];
        assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
        assert_eq!(
            pod["containers"][0]["image"],
            format!("registry.example.com/fedplane@{digest}")
        );
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "Always");
    }
    let site = find(&all, "ConfigMap", "site");
    assert_eq!(site["metadata"]["labels"]["team"], "net");
    assert_eq!(
        site["metadata"]["labels"]["app.kubernetes.io/part-of"],
        "fedplane"
    );
    assert_eq!(site["data"], json!({"k": "v"}));
    files.push(write_objects(home.path(), "image", &all));

    // Every form of address fedplane-vipd takes (IPv6 compressed, with an IPv4 tail, in any
    // case; whole families; single-address ranges), and durations as bare numbers of seconds,
    // which fedplane-vipd reads as it reads "1s".
    let forms = home.path().join("forms.yaml");
    std::fs::write(
        &forms,
        "dns:\n  service: {clusterIP: '::1'}\n\
         vipd:\n  groups:\n\
         \x20   - {vrid: 61, interface: eth0, family: ipv4, advert_interval: 1, preempt_delay: 0.5, garp_interval: '2'}\n\
         \x20   - {vrid: 62, interface: eth0, family: ipv6, unicast_peers: ['FE80::1', 'febf::2']}\n\
         \x20 pools:\n\
         \x20   - name: forms\n\
         \x20     addresses: ['fd00:4::/125', 'fd00::1-fd00::9', '::1', '::ffff:10.0.0.1', '10.0.0.0/32',\n\
         \x20                 '1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7::', '::2:3:4:5:6:7:8', 'FD00:6::A',\n\
         \x20                 '10.4.0.7-10.4.0.7', '192.168.0.0/16', '0.0.0.0/0', '::/0']\n\
         \x20     reserved: ['10.4.0.7', '::ffff:10.0.0.1']\n",
    )
    .expect("write values");
    let all = render(home.path(), &["-f", forms.to_str().expect("UTF-8")]);
    assert_eq!(
        parsed(find(&all, "ConfigMap", "fedplane-vipd-config"))["groups"][0],
        json!({"vrid": 61, "interface": "eth0", "family": "ipv4", "advert_interval": 1,
               "preempt_delay": 0.5, "garp_interval": "2"})
    );
    assert_eq!(
        parsed(find(&all, "ConfigMap", "fedplane-vipd-pools"))["pools"][0]["addresses"][12],
        "::/0"
    );
    files.push(write_objects(home.path(), "forms", &all));

    validate_strictly(&files);
}

/// The namespace: the chart's Namespace is kept on uninstall; the release may be kept anywhere
/// but in the namespace the chart makes; `--namespace` never moves the objects.
#[test]
fn the_namespace_is_kept_and_apart_from_the_release_record() {
    let home = tempfile::tempdir().expect("temp dir");
    for args in [
        EXAMPLES[0].helm,
        &["--namespace", "other", "--set", "namespace.create=true"],
    ] {
        let all = render(home.path(), args);
        let ns = find(&all, "Namespace", "fedplane-system");
        assert_eq!(
            ns["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{args:?}"
        );
        assert_eq!(
            ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            "privileged"
        );
    }
    // With the release in fedplane-system and create false, the objects are where they were
    // and there is no Namespace; with the release elsewhere, still in fedplane-system.
    for release in ["fedplane-system", "kube-system"] {
        let all = render(home.path(), &["--namespace", release]);
        assert!(
            !all.iter().any(|o| o["kind"] == "Namespace"),
            "--namespace {release} renders a Namespace"
        );
        for o in &all {
            let cluster_wide = matches!(
                o["kind"].as_str(),
                Some("ClusterRole" | "ClusterRoleBinding")
            );
            assert_eq!(
                o["metadata"]["namespace"].as_str(),
                (!cluster_wide).then_some("fedplane-system"),
                "--namespace {release}: {}",
                show(&key(o))
            );
        }
    }
}

/// The pods' values of each program render where they say — and only there: the selectors
/// keep only `app.kubernetes.io/name`, the chart's arguments, variables, annotations and
/// checksums stay — and validate; a user affinity replaces the default one whole.
#[test]
fn the_pods_values_render_where_they_say_and_validate() {
    let home = tempfile::tempdir().expect("temp dir");
    let base = render(
        home.path(),
        &["--set", "roles.host=true,controller.existingSecret=members"],
    );
    let pods = |extra: &str, grace: u32, args: &[&str], env: &str| {
        json!({
            "nodeSelector": {"example.com/pool": "infra"},
            "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "example.com/rack", "operator": "In", "values": ["r1", "r2"]}]}]}}},
            "priorityClassName": extra,
            "podAnnotations": {"example.com/team": "net", "prometheus.io/scrape": "false"},
            "podLabels": {"team": "net"},
            "extraArgs": args,
            "extraEnv": [{"name": env, "value": "debug"},
                         {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            "terminationGracePeriodSeconds": grace,
        })
    };
    let mut dns = pods(
        "system-cluster-critical",
        20,
        &["--workers=2", "--lameduck=7s", "--listen=[::]:1053"],
        "RUST_LOG",
    );
    dns["replicas"] = json!(3);
    dns["service"] = json!({"clusterIP": "", "annotations": {"example.com/dns": "federation"}});
    let mut controller = pods(
        "system-cluster-critical",
        30,
        &["--unreachable-grace", "10m"],
        "RUST_LOG",
    );
    controller["replicas"] = json!(1);
    let vipd = pods(
        "system-node-critical",
        12,
        &["--lease-duration=30s"],
        "RUST_BACKTRACE",
    );
    let values = home.path().join("pods.yaml");
    std::fs::write(
        &values,
        json!({"roles": {"host": true}, "controller": controller, "dns": dns, "vipd": vipd})
            .to_string(),
    )
    .expect("write values");
    // The values file sets the maps whole; Helm merges it over the defaults.
    let all = render(
        home.path(),
        &[
            "-f",
            values.to_str().expect("UTF-8"),
            "--set",
            "controller.existingSecret=members",
        ],
    );
    for (kind, name, given, port) in [
        ("Deployment", "fedplane-dns", &dns, "9153"),
        ("Deployment", "fedplane-controller", &controller, "9103"),
        ("DaemonSet", "fedplane-vipd", &vipd, "9102"),
    ] {
        let (before, after) = (find(&base, kind, name), find(&all, kind, name));
        let pod = &after["spec"]["template"];
        if let Some(replicas) = given.get("replicas") {
            assert_eq!(&after["spec"]["replicas"], replicas, "{name}");
        }
        assert_eq!(
            after["spec"]["selector"], before["spec"]["selector"],
            "{name}: the selector changed"
        );
        assert_eq!(
            pod["metadata"]["labels"],
            json!({"team": "net", "app.kubernetes.io/name": name}),
            "{name}"
        );
        let annotations = &pod["metadata"]["annotations"];
        assert_eq!(annotations["example.com/team"], "net", "{name}");
        assert_eq!(annotations["prometheus.io/scrape"], "false", "{name}");
        assert_eq!(annotations["prometheus.io/port"], port, "{name}");
        let checksums = |a: &Value| -> Vec<String> {
            a.as_object()
                .expect("annotations")
                .keys()
                .filter(|k| k.starts_with("checksum/"))
                .cloned()
                .collect()
        };
        assert_eq!(
            checksums(annotations),
            checksums(&before["spec"]["template"]["metadata"]["annotations"]),
            "{name}"
        );
        for field in [
            "nodeSelector",
            "tolerations",
            "affinity",
            "priorityClassName",
            "terminationGracePeriodSeconds",
        ] {
            assert_eq!(&pod["spec"][field], &given[field], "{name}: {field}");
        }
        let container = &pod["spec"]["containers"][0];
        let old = &before["spec"]["template"]["spec"]["containers"][0];
        let (args, old_args) = (
            container["args"].as_array().expect("args"),
            old["args"].as_array().expect("args"),
        );
        assert_eq!(
            &args[..old_args.len()],
            &old_args[..],
            "{name}: the chart's args"
        );
        assert_eq!(
            &args[old_args.len()..],
            given["extraArgs"].as_array().expect("extraArgs"),
            "{name}: the extra args follow"
        );
        let old_env = old["env"].as_array().cloned().unwrap_or_default();
        let mut env = old_env.clone();
        env.extend(
            given["extraEnv"]
                .as_array()
                .expect("extraEnv")
                .iter()
                .cloned(),
        );
        assert_eq!(container["env"], json!(env), "{name}: env");
        assert_eq!(container["envFrom"], old["envFrom"], "{name}: envFrom");
    }
    let service = find(&all, "Service", "fedplane-dns");
    assert_eq!(
        service["metadata"]["annotations"],
        json!({"example.com/dns": "federation"})
    );
    // Three dns replicas keep their budget of one available; one controller keeps its budget
    // of one unavailable.
    assert_eq!(
        find(&all, "PodDisruptionBudget", "fedplane-dns")["spec"],
        find(&base, "PodDisruptionBudget", "fedplane-dns")["spec"]
    );
    assert_eq!(
        find(&all, "PodDisruptionBudget", "fedplane-controller")["spec"]["maxUnavailable"],
        1
    );
    let file = write_objects(home.path(), "pods", &all);

    // One dns replica: no budget, which would block every drain.
    let one = render(home.path(), &["--set", "dns.replicas=1"]);
    assert_eq!(
        find(&one, "Deployment", "fedplane-dns")["spec"]["replicas"],
        1
    );
    assert!(
        !one.iter()
            .any(|o| o["kind"] == "PodDisruptionBudget" && o["metadata"]["name"] == "fedplane-dns"),
        "one dns replica with a PodDisruptionBudget"
    );
    validate_strictly(&[file, write_objects(home.path(), "one", &one)]);
}

/// fedplane-dns's transfers, NOTIFY, TSIG and UPDATE: the values render the flags after the
/// chart's (before `extraArgs`, which may repeat the repeatable ones), the TSIG Secret mounted
/// read-only, and the Service fedplane-dns-external as they say, and validate; with none set,
/// none of it renders.
#[test]
fn the_dns_transfer_values_render_the_flags_the_keys_and_the_external_service_and_validate() {
    let home = tempfile::tempdir().expect("temp dir");
    let base = render(home.path(), &[]);
    let dns = json!({
        "tsig": {"secretName": "corp-tsig", "keys": [
            {"name": "xfr.corp.example.", "algorithm": "hmac-sha512"},
            {"name": "ddns", "algorithm": "hmac-sha256"}]},
        "allowTransfer": ["192.0.2.53/32,key=XFR.corp.example", "2001:db8::/32,key=xfr.corp.example.", "10.1.2.3"],
        "notify": ["192.0.2.53:5353,key=xfr.corp.example.", "[2001:db8::53]:53", "2001:db8::54"],
        "notifySource": ["fd00:10::5", "10.0.0.5"],
        "allowUpdate": ["10.20.0.0/16,key=ddns"],
        "catalogZone": "catalog.invalid",
        "extraArgs": ["--allow-transfer=198.51.100.0/24,key=ddns", "--notify-interval=200ms"],
        "externalService": {"enabled": true, "type": "LoadBalancer", "loadBalancerIP": "fd00:4::53",
                            "externalTrafficPolicy": "Cluster",
                            "annotations": {"fedplane.io/address-pool": "dns"}},
    });
    let values = home.path().join("transfer.yaml");
    std::fs::write(&values, json!({"dns": dns}).to_string()).expect("write values");
    let all = render(home.path(), &["-f", values.to_str().expect("UTF-8")]);

    let (before, after) = (
        &find(&base, "Deployment", "fedplane-dns")["spec"]["template"]["spec"],
        &find(&all, "Deployment", "fedplane-dns")["spec"]["template"]["spec"],
    );
    let old_args = before["containers"][0]["args"].as_array().expect("args");
    let args = after["containers"][0]["args"].as_array().expect("args");
    assert_eq!(&args[..old_args.len()], &old_args[..], "the chart's args");
    assert_eq!(
        json!(&args[old_args.len()..]),
        json!([
            "--tsig-key=xfr.corp.example.:hmac-sha512:/etc/fedplane/tsig/xfr.corp.example.",
            "--tsig-key=ddns:hmac-sha256:/etc/fedplane/tsig/ddns",
            "--allow-transfer=192.0.2.53/32,key=XFR.corp.example",
            "--allow-transfer=2001:db8::/32,key=xfr.corp.example.",
            "--allow-transfer=10.1.2.3",
            "--notify=192.0.2.53:5353,key=xfr.corp.example.",
            "--notify=[2001:db8::53]:53",
            "--notify=2001:db8::54",
            "--notify-source=fd00:10::5",
            "--notify-source=10.0.0.5",
            "--allow-update=10.20.0.0/16,key=ddns",
            "--catalog-zone=catalog.invalid",
            "--allow-transfer=198.51.100.0/24,key=ddns",
            "--notify-interval=200ms",
        ])
    );
    let mounts = after["containers"][0]["volumeMounts"]
        .as_array()
        .expect("mounts");
    assert!(
        mounts.contains(
            &json!({"name": "tsig", "mountPath": "/etc/fedplane/tsig", "readOnly": true})
        ),
        "no read-only TSIG mount in {mounts:?}"
    );
    let volumes = after["volumes"].as_array().expect("volumes");
    assert!(
        volumes.contains(&json!({"name": "tsig", "secret": {"secretName": "corp-tsig"}})),
        "no TSIG Secret volume in {volumes:?}"
    );
    let external = find(&all, "Service", "fedplane-dns-external");
    assert_eq!(
        external["metadata"]["annotations"],
        json!({"fedplane.io/address-pool": "dns"})
    );
    assert_eq!(
        external["spec"],
        json!({
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Cluster",
            "loadBalancerIP": "fd00:4::53",
            "selector": {"app.kubernetes.io/name": "fedplane-dns"},
            "ports": [
                {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "targetPort": "dns-tcp", "protocol": "TCP"},
            ],
        })
    );
    // The in-cluster Service is untouched; the external one selects the same pods, whose named
    // ports are 1053.
    assert_eq!(
        find(&all, "Service", "fedplane-dns"),
        find(&base, "Service", "fedplane-dns")
    );
    let ports = &after["containers"][0]["ports"];
    for (name, protocol) in [("dns", "UDP"), ("dns-tcp", "TCP")] {
        assert!(
            ports
                .as_array()
                .expect("ports")
                .contains(&json!({"name": name, "containerPort": 1053, "protocol": protocol})),
            "{name}: {ports}"
        );
    }
    let file = write_objects(home.path(), "transfer", &all);

    // A NodePort, with the default policy (Local) and no address asked for.
    let node_port = render(
        home.path(),
        &[
            "--set",
            "dns.externalService.enabled=true,dns.externalService.type=NodePort",
        ],
    );
    let spec = &find(&node_port, "Service", "fedplane-dns-external")["spec"];
    assert_eq!(spec["type"], "NodePort");
    assert_eq!(spec["externalTrafficPolicy"], "Local");
    assert!(spec.get("loadBalancerIP").is_none(), "{spec}");

    // None of it by default: no TSIG volume, no flag, no external Service.
    let text: String = base.iter().map(Value::to_string).collect();
    for absent in [
        "tsig",
        "fedplane-dns-external",
        "--allow-",
        "--notify",
        "--catalog-zone",
    ] {
        assert!(!text.contains(absent), "the defaults render {absent:?}");
    }
    validate_strictly(&[file, write_objects(home.path(), "node-port", &node_port)]);
}

#[test]
fn the_vipd_bgp_values_render_the_flag_the_run_directory_the_rbac_and_the_settings_and_validate() {
    let home = tempfile::tempdir().expect("temp dir");
    let base = render(home.path(), &[]);
    let settings = json!({"asn": 65001, "router_id": "auto",
        "bfd": {"interval": "200ms", "multiplier": 5},
        "withdraw_when_cordoned": false, "withdraw_wait": "3s",
        "peers": [
            {"name": "tor-a", "address": "10.0.0.1", "asn": 65000, "bfd": true,
             "password_file": "/etc/fedplane/bgp/tor-a", "hold_time": "6s",
             "node_selector": {"rack": "a"}},
            {"name": "tor-v6", "address": "fd00::1", "asn": 4_200_000_000_u32, "port": 1179,
             "graceful_restart": {"restart_time": "30s"}, "ebgp_multihop": 2}]});
    let pools = json!([
        {"name": "default", "addresses": ["10.4.0.0/24"]},
        {"name": "rack", "addresses": ["10.9.0.0/24", "fd00:9::/120"], "mode": "bgp",
         "bgp": {"communities": ["65001:100", "65001:1:2", "no-export"], "aggregation_length": 28,
                 "aggregation_length_v6": 120, "node_selector": {"rack": "a"}}}]);
    let values = home.path().join("bgp.yaml");
    let vipd = json!({"pools": pools, "extraArgs": ["--bird=/usr/sbin/bird"],
        "bgp": {"enabled": true, "settings": settings, "peerSecretName": "corp-bgp"}});
    std::fs::write(&values, json!({"vipd": vipd}).to_string()).expect("write values");
    let all = render(home.path(), &["-f", values.to_str().expect("UTF-8")]);

    let (before, after) = (
        &find(&base, "DaemonSet", "fedplane-vipd")["spec"]["template"]["spec"],
        &find(&all, "DaemonSet", "fedplane-vipd")["spec"]["template"]["spec"],
    );
    let old_args = before["containers"][0]["args"].as_array().expect("args");
    let args = after["containers"][0]["args"].as_array().expect("args");
    assert_eq!(&args[..old_args.len()], &old_args[..], "the chart's args");
    assert_eq!(
        json!(&args[old_args.len()..]),
        json!([
            "--bgp",
            "--bgp-run-dir=/run/fedplane-vipd/bird",
            "--bird=/usr/sbin/bird"
        ])
    );
    assert_eq!(
        after["containers"][0]["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"])
    );
    assert_eq!(
        after["containers"][0]["volumeMounts"],
        json!([
            {"name": "config", "mountPath": "/etc/fedplane-vipd", "readOnly": true},
            {"name": "bgp-run", "mountPath": "/run/fedplane-vipd"},
            {"name": "bgp-peers", "mountPath": "/etc/fedplane/bgp", "readOnly": true},
        ])
    );
    assert_eq!(
        after["volumes"],
        json!([
            {"name": "config", "configMap": {"name": "fedplane-vipd-config"}},
            {"name": "bgp-run", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
            {"name": "bgp-peers", "secret": {"secretName": "corp-bgp"}},
        ])
    );
    assert!(after["hostNetwork"].as_bool().expect("hostNetwork"));
    // Exactly the one new rule, after the others.
    let old_rules = find(&base, "ClusterRole", "fedplane-vipd")["rules"]
        .as_array()
        .expect("rules")
        .clone();
    let rules = find(&all, "ClusterRole", "fedplane-vipd")["rules"]
        .as_array()
        .expect("rules");
    assert_eq!(&rules[..old_rules.len()], &old_rules[..]);
    assert_eq!(
        json!(&rules[old_rules.len()..]),
        json!([
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
        ])
    );
    // The pools document carries the pools and the bgp: section as given.
    let data = find(&all, "ConfigMap", "fedplane-vipd-pools")["data"]["config.yaml"]
        .as_str()
        .expect("config.yaml");
    let doc: Value = serde_saphyr::from_str(data).expect("the pools document");
    assert_eq!(doc, json!({"pools": pools, "bgp": settings}));
    let file = write_objects(home.path(), "bgp", &all);

    // Without a Secret: no peers' volume.
    let plain = render(
        home.path(),
        &["--set", "vipd.bgp.enabled=true,vipd.bgp.settings.asn=65001"],
    );
    let spec = &find(&plain, "DaemonSet", "fedplane-vipd")["spec"]["template"]["spec"];
    assert_eq!(
        spec["volumes"].as_array().expect("volumes").len(),
        2,
        "{}",
        spec["volumes"]
    );

    // None of it by default.
    let text: String = base.iter().map(Value::to_string).collect();
    for absent in ["--bgp", "bgp-run", "NET_BIND_SERVICE", "/etc/fedplane/bgp"] {
        assert!(!text.contains(absent), "the defaults render {absent:?}");
    }
    // (fedplane-controller-reader reads EndpointSlices and Nodes; fedplane-vipd only the
    // EndpointSlices, for the Local Services' addresses.)
    let role = find(&base, "ClusterRole", "fedplane-vipd")["rules"].to_string();
    assert!(
        !role.contains("nodes"),
        "the default vipd ClusterRole has nodes: {role}"
    );
    assert!(
        role.contains("endpointslices"),
        "the default vipd ClusterRole lacks endpointslices: {role}"
    );
    validate_strictly(&[file, write_objects(home.path(), "bgp-plain", &plain)]);
}

/// `controller.sources`: by default neither `--source` nor a rule on Ingresses renders, and
/// `[service]` given renders the defaults byte for byte; with `ingress`, the controller gets
/// `--source=<the list>` after the chart's flags (before `extraArgs`), and
/// fedplane-controller-reader exactly one more rule, after the others; nothing else changes,
/// and each role renders its part alone.
#[test]
fn the_controller_sources_render_the_flag_and_the_readers_rule_and_validate() {
    let home = tempfile::tempdir().expect("temp dir");
    let both = [
        "--set",
        "roles.host=true",
        "--set-file",
        "controller.kubeconfig=deploy/overlays/host/members.kubeconfig",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        both.iter().chain(extra).copied().collect()
    };
    let base_yaml = render_yaml(home.path(), &both);
    assert_eq!(
        base_yaml,
        render_yaml(
            home.path(),
            &with(&["--set", "controller.sources={service}"])
        ),
        "[service] given is not the default render"
    );
    for absent in ["--source", "ingresses", "networking.k8s.io"] {
        assert!(
            !base_yaml.contains(absent),
            "the defaults render {absent:?}"
        );
    }
    let base = objects(&base_yaml);
    let args_of = |all: &[Value]| -> Vec<Value> {
        find(all, "Deployment", "fedplane-controller")["spec"]["template"]["spec"]["containers"][0]
            ["args"]
            .as_array()
            .expect("args")
            .clone()
    };
    let rules_of = |all: &[Value]| -> Vec<Value> {
        find(all, "ClusterRole", "fedplane-controller-reader")["rules"]
            .as_array()
            .expect("rules")
            .clone()
    };
    let (old_args, old_rules) = (args_of(&base), rules_of(&base));
    let rule = json!({"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"],
        "verbs": ["list", "watch"]});
    let gateway = |routes: &[&str]| {
        let mut resources = vec!["gateways"];
        resources.extend(routes);
        json!({"apiGroups": ["gateway.networking.k8s.io"], "resources": resources,
            "verbs": ["list", "watch"]})
    };
    let dns_endpoints = json!({"apiGroups": ["externaldns.k8s.io"],
        "resources": ["dnsendpoints"], "verbs": ["list", "watch"]});
    let mut files = Vec::new();
    for (i, (sources, extra_args, new_args, new_rules)) in [
        (
            "{service,ingress}",
            json!([]),
            json!(["--source=service,ingress"]),
            json!([rule]),
        ),
        (
            "{ingress}",
            json!([]),
            json!(["--source=ingress"]),
            json!([rule]),
        ),
        (
            "{ingress,service}",
            json!(["--unreachable-grace=10m"]),
            json!(["--source=ingress,service", "--unreachable-grace=10m"]),
            json!([rule]),
        ),
        (
            "{service,gateway-tlsroute,gateway-httproute}",
            json!([]),
            json!(["--source=service,gateway-tlsroute,gateway-httproute"]),
            json!([gateway(&["httproutes", "tlsroutes"])]),
        ),
        (
            "{dnsendpoint,gateway-grpcroute,ingress,service}",
            json!([]),
            json!(["--source=dnsendpoint,gateway-grpcroute,ingress,service"]),
            json!([rule, gateway(&["grpcroutes"]), dns_endpoints]),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let sources = format!("controller.sources={sources}");
        let extra = set_json("controller.extraArgs", &extra_args);
        let mut args: Vec<&str> = both.to_vec();
        args.extend(["--set", &sources, "--set-json", &extra]);
        let all = render(home.path(), &args);
        let (args_now, rules_now) = (args_of(&all), rules_of(&all));
        assert_eq!(&args_now[..old_args.len()], &old_args[..], "{sources}");
        assert_eq!(json!(&args_now[old_args.len()..]), new_args, "{sources}");
        assert_eq!(&rules_now[..old_rules.len()], &old_rules[..], "{sources}");
        assert_eq!(json!(&rules_now[old_rules.len()..]), new_rules, "{sources}");
        // Nothing else: the objects, with the two lists put back, are the defaults'.
        let mut put_back = all.clone();
        for o in &mut put_back {
            if o["kind"] == "Deployment" && o["metadata"]["name"] == "fedplane-controller" {
                o["spec"]["template"]["spec"]["containers"][0]["args"] = json!(old_args);
            }
            if o["kind"] == "ClusterRole" && o["metadata"]["name"] == "fedplane-controller-reader" {
                o["rules"] = json!(old_rules);
            }
        }
        assert_eq!(
            put_back, base,
            "{sources} changes more than the flag and the rule"
        );
        files.push(write_objects(home.path(), &format!("sources-{i}"), &all));
    }
    // Each role its part: the host the flag (and no reader), a member the rule (and no
    // controller).
    let host = render(
        home.path(),
        &with(&[
            "--set",
            "roles.member=false,controller.sources={service,ingress}",
        ]),
    );
    assert_eq!(
        args_of(&host).last(),
        Some(&json!("--source=service,ingress"))
    );
    assert!(
        !host
            .iter()
            .any(|o| o["metadata"]["name"] == "fedplane-controller-reader"),
        "the host role renders the reader: {:?}",
        keys(&host)
    );
    let member = render(
        home.path(),
        &["--set", "controller.sources={service,ingress}"],
    );
    assert_eq!(rules_of(&member).last(), Some(&rule));
    assert!(
        !member
            .iter()
            .any(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "fedplane-controller"),
        "the member role renders the controller: {:?}",
        keys(&member)
    );
    files.push(write_objects(home.path(), "sources-host", &host));
    files.push(write_objects(home.path(), "sources-member", &member));
    validate_strictly(&files);
}

/// The paths of `values` down to its settings (a list, a scalar, an empty map such as
/// `nodeSelector`, or the map of `resources`).
fn value_paths(values: &Value, path: &str, out: &mut Vec<String>) {
    match values {
        Value::Object(m) if !m.is_empty() && !path.ends_with("resources") => {
            for (k, v) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                value_paths(v, &p, out);
            }
        }
        _ => out.push(path.to_owned()),
    }
}

/// The paths of the schema's `properties`, not through references (`resources` and the items
/// of lists are defined once, in `definitions`).
fn schema_paths(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = schema["properties"].as_object() {
        for (k, v) in props {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            if v["properties"].is_object() {
                schema_paths(v, &p, out);
            } else {
                out.push(p);
            }
        }
    }
}

#[test]
fn every_value_is_typed_in_the_schema_and_documented_in_the_readme() {
    let chart = repo_dir().join(CHART);
    let read = |f: &str| {
        std::fs::read_to_string(chart.join(f)).unwrap_or_else(|e| panic!("read {f}: {e}"))
    };
    let values: Value = serde_saphyr::from_str(&read("values.yaml")).expect("values.yaml");
    let schema: Value = serde_json::from_str(&read("values.schema.json")).expect("the schema");
    let readme = read("README.md");
    let mut in_values = Vec::new();
    value_paths(&values, "", &mut in_values);
    let mut in_schema = Vec::new();
    schema_paths(&schema, "", &mut in_schema);
    in_schema.retain(|p| p != "global");
    assert_eq!(
        in_values.iter().collect::<BTreeSet<_>>(),
        in_schema.iter().collect::<BTreeSet<_>>(),
        "values.yaml and values.schema.json list different settings"
    );
    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with('|')).collect();
    for path in &in_values {
        assert!(
            rows.iter().any(|r| r.contains(&format!("| `{path}` |"))),
            "README.md's table of values lacks `{path}`"
        );
    }
    // Every seed cluster's values file is an example the tests render and compare.
    for cluster in ["fcp", "usa", "chn"] {
        let file = format!("deploy/helm/examples/seeds/{cluster}.yaml");
        assert!(
            EXAMPLES.iter().any(|e| e.helm.contains(&file.as_str())
                && e.kustomization == format!("examples/seeds/{cluster}")),
            "{file} is not compared with deploy/examples/seeds/{cluster}"
        );
        assert!(
            readme.contains(&file),
            "README.md does not say how to install {cluster} with {file}"
        );
    }
}

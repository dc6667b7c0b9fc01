//! The offline check of the Helm chart `deploy/helm/fedplane`, which installs what the kustomize
//! tree of `deploy/` does:
//!
//! - it lints with `helm lint --strict` under Helm 3 and Helm 4, with its default values and
//!   those of every example;
//! - for every example, Helm 3 and Helm 4 render the same objects, which pass
//!   `kubernetes-validate --strict` against Kubernetes 1.33 and 1.37;
//! - for every example (the seeds' three clusters in `deploy/helm/examples/seeds`, the host and
//!   member overlays, one cluster with etcd over TLS), the chart renders the objects that
//!   kustomize renders for the matching kustomization, up to what legitimately differs and
//!   nothing else ([`from_helm`], [`from_kustomize`]): Helm's own labels, kustomize's hash
//!   suffixes on generated names, the chart's checksum annotations in their stead, base64
//!   line breaks in Secrets, and the layout and comments of the two embedded config files;
//! - the schema and the chart's own checks refuse bad values with a message naming them;
//! - a change of the groups, the settings or the kubeconfig rolls exactly the pods that use
//!   them, and a change of the pools (watched live) rolls nothing;
//! - odd but valid values (IPv6, another namespace, an existing kubeconfig Secret, a digest and
//!   pull secrets, extra objects) render what they say and validate;
//! - every value is typed in the schema and documented in the chart's README.
//!
//! `scripts/install-deps --tools` installs Helm, kubectl and kubernetes-validate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use fedplane_testkit::manifests::{
    deploy_dir, kustomize, objects, repo_dir, run, sorted, tool, validate_strictly,
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

const EXAMPLES: [Example; 6] = [
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
];

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
/// data under `home` rather than the user's.
fn helm(name: &str, home: &Path) -> Command {
    let mut cmd = Command::new(tool(name));
    cmd.current_dir(repo_dir())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
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

/// The chart's render, normalised: every object must carry [`helm_labels`] (else a problem),
/// which are then removed; a workload's pod template annotations `checksum/<name>` (a SHA-256)
/// are removed, and the workload is rolled by those names.
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
/// setting, what rolls a workload) makes it fail.
#[test]
fn the_comparison_finds_real_drift() {
    let home = tempfile::tempdir().expect("temp dir");
    let example = &EXAMPLES[0];
    let kustomized = from_kustomize(&kustomize(&deploy_dir().join(example.kustomization)));
    let edits: [(&str, &str, &str); 13] = [
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
            "prometheus.io/port: \"9103\"",
            "prometheus.io/port: \"9104\"",
        ),
        (
            "templates/vipd-config.yaml",
            "name: fedplane-vipd-pools",
            "name: fedplane-vipd-pool",
        ),
        (
            "templates/vipd.yaml",
            "add: [\"NET_ADMIN\", \"NET_RAW\"]",
            "add: [\"NET_ADMIN\"]",
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
}

/// Copies the directory tree `from` to `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let path = entry.expect("dir entry").path();
        let dest = to.join(path.file_name().expect("file name"));
        if path.is_dir() {
            copy_tree(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).expect("copy file");
        }
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

    validate_strictly(&files);
}

/// The paths of `values` down to its settings (a list, a scalar, or the map of `resources`).
fn value_paths(values: &Value, path: &str, out: &mut Vec<String>) {
    match values {
        Value::Object(m) if !path.ends_with("resources") => {
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

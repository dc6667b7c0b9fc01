//! The offline check of `deploy/`: every kustomization renders, to the same objects, with the
//! kustomize embedded in the oldest kubectl the deploy guide promises (1.24, kustomize v4.5.4)
//! and in current ones (1.35 and 1.36, kustomize v5.7 and v5.8), through `kubectl kustomize` as
//! `kubectl apply -k` runs it; every rendered object (plus the standalone manifests) passes
//! `kubernetes-validate --strict` against Kubernetes 1.33 and 1.37. The programs' arguments in
//! the manifests are flags the binaries have, every `$(VAR)` in them is defined, and the
//! Dockerfile builds each of them. The optional components add exactly what they say where
//! their objects are (components/controller-<source>: the controller's flag on the host, one
//! rule of the reader's ClusterRole on a member). `scripts/install-deps --tools` installs the tools.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use fedplane_testkit::manifests::{
    KUBECTLS, copy_tree, deploy_dir, kustomize, objects, run, validate_strictly,
};
use fedplane_testkit::workspace_bin;
use serde_json::Value;

/// Every directory under `dir` with a `kustomization.yaml` of kind Kustomization (components
/// are rendered through the overlays that use them).
fn kustomizations(dir: &Path, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read deploy/")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            kustomizations(&path, found);
        } else if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
            let text = std::fs::read_to_string(&path).expect("read kustomization.yaml");
            if text.lines().any(|l| l.trim() == "kind: Kustomization") {
                found.push(dir.to_owned());
            }
        }
    }
}

#[test]
fn the_guide_promises_the_oldest_kubectl_the_tests_render_with() {
    let guide = std::fs::read_to_string(deploy_dir().join("README.md")).expect("read the guide");
    let oldest = KUBECTLS[0].trim_start_matches("kubectl-");
    assert!(
        guide.contains(&format!("kubectl {oldest} or newer")),
        "deploy/README.md does not promise kubectl {oldest} or newer"
    );
}

/// The deploy guide's step 3 copies the seeds' overlays to `deploy/sites/my-federation`, and
/// steps 4–5 apply them from there: they must render from that place too.
#[test]
fn the_guides_copy_of_the_seeds_renders() {
    let guide = std::fs::read_to_string(deploy_dir().join("README.md")).expect("read the guide");
    let step = "cp -r deploy/examples/seeds deploy/sites/my-federation";
    assert!(guide.contains(step), "the guide's step 3 is {step:?}");
    let tmp = tempfile::tempdir().expect("temp dir");
    let deploy = tmp.path().join("deploy");
    copy_tree(&deploy_dir(), &deploy);
    copy_tree(
        &deploy.join("examples/seeds"),
        &deploy.join("sites/my-federation"),
    );
    for cluster in ["fcp", "usa", "chn"] {
        let dir = deploy.join("sites/my-federation").join(cluster);
        assert!(
            guide.contains(&format!("apply -k deploy/sites/my-federation/{cluster}")),
            "the guide applies {cluster} from its copy"
        );
        assert_eq!(
            objects(&kustomize(&dir)),
            objects(&kustomize(
                &deploy_dir().join("examples/seeds").join(cluster)
            )),
            "{cluster}: the copy renders as the example does"
        );
    }

    // Step 3 then changes the values in common/kustomization.yaml: every program of every
    // cluster must follow them.
    let common = deploy.join("sites/my-federation/common/kustomization.yaml");
    let text = std::fs::read_to_string(&common).expect("read common");
    let edited = [
        (
            "FEDPLANE_DOMAIN=example.com",
            "FEDPLANE_DOMAIN=corp.example",
        ),
        (
            "FEDPLANE_ETCD_ENDPOINTS=http://10.210.1.10:2379",
            "FEDPLANE_ETCD_ENDPOINTS=http://192.0.2.7:2379",
        ),
        (
            "newName: registry.example.com/fedplane",
            "newName: harbor.corp.example/platform/fedplane",
        ),
        ("newTag: 0.1.0", "newTag: 1.2.3"),
    ]
    .iter()
    .fold(text, |t, (from, to)| {
        assert!(t.contains(from), "common/kustomization.yaml has {from:?}");
        t.replace(from, to)
    });
    std::fs::write(&common, edited).expect("write common");
    for cluster in ["fcp", "usa", "chn"] {
        let rendered = objects(&kustomize(
            &deploy.join("sites/my-federation").join(cluster),
        ));
        let mut images = BTreeSet::new();
        for o in &rendered {
            for c in o["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
            {
                images.insert(c["image"].as_str().unwrap_or_default().to_owned());
            }
        }
        assert_eq!(
            images.into_iter().collect::<Vec<_>>(),
            ["harbor.corp.example/platform/fedplane:1.2.3"],
            "{cluster}: every container runs the image set in common"
        );
        let settings = rendered
            .iter()
            .find(|o| {
                o["kind"] == "ConfigMap"
                    && o["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("fedplane-settings"))
            })
            .unwrap_or_else(|| panic!("{cluster}: no fedplane-settings"));
        assert_eq!(
            settings["data"]["FEDPLANE_DOMAIN"], "corp.example",
            "{cluster}"
        );
        assert_eq!(
            settings["data"]["FEDPLANE_ETCD_ENDPOINTS"], "http://192.0.2.7:2379",
            "{cluster}"
        );
    }
}

/// Renders every kustomization: (name under deploy/, rendered YAML).
fn rendered() -> Vec<(String, String)> {
    let root = deploy_dir();
    let mut dirs = Vec::new();
    kustomizations(&root, &mut dirs);
    let names: Vec<String> = dirs
        .iter()
        .map(|d| {
            d.strip_prefix(&root)
                .expect("under deploy/")
                .display()
                .to_string()
        })
        .collect();
    for want in [
        "base",
        "overlays/host",
        "overlays/member",
        "examples/seeds/fcp",
        "examples/seeds/usa",
        "examples/seeds/chn",
        "examples/etcd-tls",
        "examples/dns-transfer",
        "examples/vipd-bgp",
        "examples/controller-ingress",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "no kustomization {want} in {names:?}"
        );
    }
    names
        .into_iter()
        .zip(&dirs)
        .map(|(name, dir)| (name, kustomize(dir)))
        .collect()
}

#[test]
fn every_manifest_renders_and_validates_strictly_against_kubernetes_1_33_and_1_37() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut files = vec![deploy_dir().join("coredns/coredns.yaml")];
    for (name, yaml) in rendered() {
        assert!(!objects(&yaml).is_empty(), "{name} renders nothing");
        let file = tmp.path().join(format!("{}.yaml", name.replace('/', "_")));
        std::fs::write(&file, yaml).expect("write rendered manifest");
        files.push(file);
    }
    validate_strictly(&files);
}

/// The programs' containers: (object name, binary, args, env names).
fn containers(objects: &[Value]) -> Vec<(String, String, Vec<String>, BTreeSet<String>)> {
    let config_keys = |name: &str| -> BTreeSet<String> {
        objects
            .iter()
            .filter(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == name)
            .flat_map(|o| o["data"].as_object().into_iter().flatten())
            .map(|(k, _)| k.clone())
            .collect()
    };
    let mut out = Vec::new();
    for o in objects {
        if !matches!(o["kind"].as_str(), Some("Deployment" | "DaemonSet")) {
            continue;
        }
        for c in o["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            };
            let mut env: BTreeSet<String> = c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["name"].as_str().map(str::to_owned))
                .collect();
            for from in c["envFrom"].as_array().into_iter().flatten() {
                if let Some(name) = from["configMapRef"]["name"].as_str() {
                    env.extend(config_keys(name));
                }
            }
            let binary = strings(&c["command"]).first().cloned().unwrap_or_default();
            out.push((
                o["metadata"]["name"].as_str().unwrap_or("?").to_owned(),
                binary,
                strings(&c["args"]),
                env,
            ));
        }
    }
    out
}

/// Whether `--help` text lists `flag` (and not only a longer flag that starts with it).
fn lists_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(i, _)| {
        help[i + flag.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-'))
    })
}

#[test]
fn the_manifests_pass_only_flags_the_binaries_have_and_define_every_variable() {
    let mut seen = BTreeSet::new();
    for (name, yaml) in rendered() {
        for (object, binary, args, env) in containers(&objects(&yaml)) {
            assert!(
                binary.starts_with("fedplane-"),
                "{name}: {object} runs {binary:?}, not a fedplane binary"
            );
            let help = run(Command::new(workspace_bin(&binary)).arg("--help"))
                .unwrap_or_else(|e| panic!("{e}"));
            for arg in &args {
                let flag = arg.split('=').next().unwrap_or(arg);
                assert!(
                    flag.starts_with("--") && lists_flag(&help, flag),
                    "{name}: {object} passes {arg:?}, which {binary} --help does not list"
                );
                let mut rest = arg.as_str();
                while let Some(start) = rest.find("$(") {
                    let end = rest[start..].find(')').expect("closed $(") + start;
                    let var = &rest[start + 2..end];
                    assert!(
                        env.contains(var),
                        "{name}: {object} uses $({var}) in {arg:?}, but its env has {env:?}"
                    );
                    rest = &rest[end..];
                }
            }
            seen.insert(binary);
        }
    }
    assert_eq!(
        seen.iter().collect::<Vec<_>>(),
        ["fedplane-controller", "fedplane-dns", "fedplane-vipd"],
        "every program is deployed"
    );
    // The one image carries each of them.
    let dockerfile =
        std::fs::read_to_string(deploy_dir().join("../Dockerfile")).expect("read the Dockerfile");
    for binary in &seen {
        assert!(
            dockerfile.contains(&format!("--bin {binary}"))
                && dockerfile.contains(&format!("target/release/{binary}")),
            "the Dockerfile does not build and copy {binary}"
        );
    }
}

/// Each controller source's component (components/controller-ingress,
/// controller-gateway-httproute, -grpcroute, -tlsroute, controller-dnsendpoint) in a host
/// overlay adds `--source=service,<source>` to the controller's args and nothing else; in a
/// member overlay one rule to the ClusterRole fedplane-controller-reader (list/watch on its
/// kinds) and nothing else; each patch does nothing where its object is not, with every
/// kubectl of [`KUBECTLS`]. Without them, neither renders. The renders validate strictly.
#[test]
fn the_controller_source_components_add_the_flag_on_the_host_and_the_rule_on_members() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let deploy = tmp.path().join("deploy");
    copy_tree(&deploy_dir(), &deploy);
    let mut files = Vec::new();
    for (source, group, resources) in [
        ("ingress", "networking.k8s.io", vec!["ingresses"]),
        (
            "gateway-httproute",
            "gateway.networking.k8s.io",
            vec!["gateways", "httproutes"],
        ),
        (
            "gateway-grpcroute",
            "gateway.networking.k8s.io",
            vec!["gateways", "grpcroutes"],
        ),
        (
            "gateway-tlsroute",
            "gateway.networking.k8s.io",
            vec!["gateways", "tlsroutes"],
        ),
        ("dnsendpoint", "externaldns.k8s.io", vec!["dnsendpoints"]),
    ] {
        let component = format!("controller-{source}");
        let rule = serde_json::json!({"apiGroups": [group], "resources": resources,
            "verbs": ["list", "watch"]});
        component_adds(&deploy, &component, source, rule, tmp.path(), &mut files);
    }
    validate_strictly(&files);
}

/// What [`the_controller_source_components_add_the_flag_on_the_host_and_the_rule_on_members`]
/// checks of one component; each render goes to `files`.
fn component_adds(
    deploy: &Path,
    component: &str,
    source: &str,
    rule: Value,
    tmp: &Path,
    files: &mut Vec<PathBuf>,
) {
    for (role, kind, name, path, added) in [
        (
            "host",
            "Deployment",
            "fedplane-controller",
            "/spec/template/spec/containers/0/args",
            Value::from(format!("--source=service,{source}")),
        ),
        (
            "member",
            "ClusterRole",
            "fedplane-controller-reader",
            "/rules",
            rule,
        ),
    ] {
        let dir = deploy.join("sites").join(format!("{component}-{role}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("kustomization.yaml"),
            format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
                 resources: [../../overlays/{role}]\n\
                 components: [../../components/{component}]\n"
            ),
        )
        .expect("write the overlay");
        let plain_yaml = kustomize(&deploy.join("overlays").join(role));
        for absent in [
            "--source",
            "ingresses",
            "gateways",
            "httproutes",
            "dnsendpoints",
        ] {
            assert!(
                !plain_yaml.contains(absent),
                "overlays/{role} renders {absent:?}"
            );
        }
        let yaml = kustomize(&dir);
        let (plain, with) = (objects(&plain_yaml), objects(&yaml));
        let is_it = |o: &Value| o["kind"] == kind && o["metadata"]["name"] == name;
        let list = |o: &Value| {
            o.pointer(path)
                .and_then(Value::as_array)
                .unwrap_or_else(|| panic!("{role}: {kind} {name} has no {path}"))
                .clone()
        };
        let before = list(plain.iter().find(|o| is_it(o)).expect("the object"));
        let after = list(with.iter().find(|o| is_it(o)).expect("the object"));
        assert_eq!(&after[..before.len()], &before[..], "{component} {role}");
        assert_eq!(
            &after[before.len()..],
            &[added],
            "{component} {role}: what the component adds"
        );
        // Nothing else: with the list put back, the objects are the overlay's.
        let mut put_back = with.clone();
        for o in put_back.iter_mut().filter(|o| is_it(o)) {
            *o.pointer_mut(path).expect("the list") = Value::from(before.clone());
        }
        assert_eq!(
            put_back, plain,
            "{component} {role}: the component changes more"
        );
        let file = tmp.join(format!("{component}-{role}.yaml"));
        std::fs::write(&file, yaml).expect("write the render");
        files.push(file);
    }
}

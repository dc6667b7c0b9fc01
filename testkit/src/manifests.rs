//! Rendering and checking the Kubernetes manifests of `deploy/` offline, for its tests
//! (`testkit/tests/deploy.rs`, `testkit/tests/helm.rs`): the tools `scripts/install-deps --tools`
//! puts in `$FEDPLANE_TOOLS/bin` (default `/opt/fedplane-tools/bin`), the kustomize that
//! `kubectl apply -k` runs in the oldest and the current kubectl releases, and
//! `kubernetes-validate --strict` against the oldest and the newest Kubernetes supported.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The Kubernetes versions every rendered object is validated against: the oldest the deploy
/// guide supports and the newest the validator knows.
pub const KUBERNETES_VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];

/// The kubectl releases whose embedded kustomize renders every overlay: the oldest the deploy
/// guide promises first (1.24, kustomize v4.5.4), the newest last (1.35 and 1.36, kustomize
/// v5.7 and v5.8).
pub const KUBECTLS: [&str; 3] = ["kubectl-1.24", "kubectl-1.35", "kubectl-1.36"];

/// The repository's root.
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_owned()
}

/// `deploy/`.
pub fn deploy_dir() -> PathBuf {
    repo_dir().join("deploy")
}

/// A tool from `scripts/install-deps --tools` ($FEDPLANE_TOOLS/bin, default
/// /opt/fedplane-tools/bin); panics with that hint when it is missing.
pub fn tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("FEDPLANE_TOOLS")
        .map_or_else(|| PathBuf::from("/opt/fedplane-tools"), PathBuf::from);
    let path = dir.join("bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-deps --tools",
        path.display()
    );
    path
}

/// Runs `cmd`: its stdout when it succeeds, else the command, its status, stdout and stderr.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The objects of a multi-document YAML stream (empty documents left out).
pub fn objects(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap_or_else(|e| panic!("rendered manifests are not YAML: {e}\n{yaml}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// The objects of `yaml` as JSON text, in a fixed order: equal when two renders hold the same
/// objects, whatever their order.
pub fn sorted(yaml: &str) -> Vec<String> {
    let mut all: Vec<String> = objects(yaml).iter().map(Value::to_string).collect();
    all.sort();
    all
}

/// Renders the kustomization `dir` as `kubectl apply -k` does, with every kubectl in
/// [`KUBECTLS`], which must all succeed and render the same objects; returns the newest one's
/// output.
pub fn kustomize(dir: &Path) -> String {
    let mut newest: Option<(&str, String)> = None;
    for kubectl in KUBECTLS {
        let yaml = run(Command::new(tool(kubectl)).arg("kustomize").arg(dir))
            .unwrap_or_else(|e| panic!("`kubectl apply -k` fails with {kubectl}: {e}"));
        if let Some((older, before)) = &newest {
            assert_eq!(
                sorted(before),
                sorted(&yaml),
                "{}: {older} and {kubectl} render different objects",
                dir.display()
            );
        }
        newest = Some((kubectl, yaml));
    }
    newest.expect("at least one kubectl").1
}

/// Validates every object in `files` with `kubernetes-validate --strict` (unknown fields are
/// errors) against each of [`KUBERNETES_VERSIONS`]; panics with the validator's report.
pub fn validate_strictly(files: &[PathBuf]) {
    for version in KUBERNETES_VERSIONS {
        let result = run(Command::new(tool("kubernetes-validate"))
            .args(["--strict", "--quiet", "-k", version])
            .args(files));
        if let Err(e) = result {
            panic!("kubernetes-validate against {version}: {e}");
        }
    }
}

/// Copies the directory tree `from` to `to`.
pub fn copy_tree(from: &Path, to: &Path) {
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

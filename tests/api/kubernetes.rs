//! The Kubernetes manifests under `deploy/` are valid as the API server would judge them,
//! checked offline by `tests/kubernetes/validate.py`: built-in kinds against Kubernetes'
//! own schemas (kubernetes-validate), custom resources (SpinApp, Broker, Trigger) against the
//! CRDs vendored in `tests/kubernetes/crds/`, an unknown field being an error in both. And
//! the validator refuses what it should, so that its passing means something.
//!
//! Needs a Python with the packages `tests/kubernetes/requirements.txt` pins: the one
//! `$BERTH_KUBERNETES_VALIDATE_PYTHON` names, or the venv `.ci/run` installs them into.
//! Without it the test fails and says how to install it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::helpers::*;

/// Where `.ci/run` installs the validator's packages.
const CI_VENV_PYTHON: &str = "/var/cache/berth-ci/kv-venv/bin/python";

const INSTALL_HINT: &str = "install it from the repository's root with\n  \
    python3 -m venv /var/cache/berth-ci/kv-venv\n  \
    /var/cache/berth-ci/kv-venv/bin/pip install -r tests/kubernetes/requirements.txt\n\
    or point BERTH_KUBERNETES_VALIDATE_PYTHON at a python with those packages";

fn python() -> PathBuf {
    let python = std::env::var_os("BERTH_KUBERNETES_VALIDATE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| CI_VENV_PYTHON.into());
    assert!(
        python.is_file(),
        "no python for tests/kubernetes/validate.py at {}; {INSTALL_HINT}",
        python.display()
    );
    python
}

/// Runs the validator over `root` (`deploy/` when `None`): its exit code and what it printed.
fn validate(root: Option<&Path>) -> (Option<i32>, String) {
    let mut command = Command::new(python());
    command.arg(repo("tests/kubernetes/validate.py"));
    if let Some(root) = root {
        command.arg("--root").arg(root);
    }
    let output = command
        .current_dir(repo(""))
        .output()
        .unwrap_or_else(|e| panic!("cannot run tests/kubernetes/validate.py: {e}; {INSTALL_HINT}"));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // 2 and up: the validator could not run (wrong package versions, no CRDs), which is
    // neither a pass nor a refusal.
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "tests/kubernetes/validate.py did not run ({}):\n{printed}\n{INSTALL_HINT}",
        output.status
    );
    (output.status.code(), printed)
}

/// Every `*.yaml` and `*.yml` under `dir`, relative to `base`.
fn yaml_files(base: &Path, dir: &Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(base, &path, found);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            let relative = path.strip_prefix(base).unwrap();
            found.push(relative.to_string_lossy().into_owned());
        }
    }
}

#[test]
fn every_kubernetes_manifest_under_deploy_validates() {
    let (code, printed) = validate(None);
    assert_eq!(
        code,
        Some(0),
        "a manifest under deploy/ is invalid:\n{printed}"
    );

    // Every YAML file was looked at: validated, or skipped as not Kubernetes.
    let base = repo("").canonicalize().unwrap();
    let mut files = Vec::new();
    yaml_files(&base, &base.join("deploy"), &mut files);
    assert!(!files.is_empty(), "no YAML under deploy/");
    for file in &files {
        assert!(
            printed.lines().any(|line| {
                (line.starts_with("ok ") || line.starts_with("skip "))
                    && line.contains(&format!(" {file}"))
            }),
            "validate.py said nothing of {file}:\n{printed}"
        );
    }
    // Both kinds of schema were used: Kubernetes' own and a vendored CRD.
    assert!(
        printed.contains("against Kubernetes") && printed.contains("against CRD"),
        "{printed}"
    );
    println!("{printed}");
}

/// One mistake in a copy of a real manifest, and what the validator must say of it.
struct Mistake {
    /// The manifest copied, under `deploy/`.
    source: &'static str,
    from: &'static str,
    to: &'static str,
    /// The copy's file name.
    copy: &'static str,
    /// Every refusal of the copy, each a line of its own.
    refusals: &'static [&'static str],
}

const MISTAKES: &[Mistake] = &[
    // A custom resource's misspelled field; the field it should have been is required.
    Mistake {
        source: "spinkube/20-spinapps.yaml",
        from: "  executor: containerd-shim-spin",
        to: "  exectuor: containerd-shim-spin",
        copy: "spinapp-misspelled.yaml",
        refusals: &[
            "document 1: SpinApp shop/shop-user: spec.exectuor: unknown field",
            "document 1: SpinApp shop/shop-user: spec: 'executor' is a required property",
        ],
    },
    // A custom resource's field of the wrong type.
    Mistake {
        source: "spinkube/20-spinapps.yaml",
        from: "  replicas: 2",
        to: "  replicas: two",
        copy: "spinapp-wrong-type.yaml",
        refusals: &[
            "document 1: SpinApp shop/shop-user: spec.replicas: 'two' is not of type 'integer'",
        ],
    },
    // A built-in kind's misspelled field.
    Mistake {
        source: "spinkube/40-network-policy.yaml",
        from: "  podSelector:",
        to: "  podSelecter:",
        copy: "networkpolicy-misspelled.yaml",
        refusals: &["NetworkPolicy shop/shop-callers: spec.podSelecter: unknown field"],
    },
    // A built-in kind's field of the wrong type.
    Mistake {
        source: "spinkube/30-eventing.yaml",
        from: "  replicas: 1",
        to: "  replicas: one",
        copy: "deployment-wrong-type.yaml",
        refusals: &["Deployment shop/shop-dead-letters: spec.replicas: 'one' is not of type"],
    },
    // A kind with no schema at all.
    Mistake {
        source: "spinkube/10-executor.yaml",
        from: "kind: SpinAppExecutor",
        to: "kind: SpinAppExecuter",
        copy: "unknown-kind.yaml",
        refusals: &["no schema for core.spinkube.dev/v1alpha1 SpinAppExecuter"],
    },
];

#[test]
fn a_broken_manifest_is_refused_with_its_path_named() {
    let root = tempfile::tempdir().unwrap();
    for m in MISTAKES {
        let text = std::fs::read_to_string(repo(&format!("deploy/{}", m.source))).unwrap();
        assert!(
            text.contains(m.from),
            "deploy/{} no longer contains `{}`: give this case another mistake",
            m.source,
            m.from
        );
        std::fs::write(root.path().join(m.copy), text.replacen(m.from, m.to, 1)).unwrap();
    }

    let (code, printed) = validate(Some(root.path()));
    assert_eq!(code, Some(1), "broken manifests passed:\n{printed}");
    for m in MISTAKES {
        let refused: Vec<&str> = printed
            .lines()
            .filter(|line| line.starts_with("FAIL ") && line.contains(&format!("{} ", m.copy)))
            .collect();
        for refusal in m.refusals {
            assert!(
                refused.iter().any(|line| line.contains(refusal)),
                "validate.py did not refuse {} with `{refusal}`:\n{printed}",
                m.copy
            );
        }
        // Nothing else: each copy differs from a valid manifest by its one mistake.
        assert_eq!(
            refused.len(),
            m.refusals.len(),
            "{} was refused for more than its mistake:\n{printed}",
            m.copy
        );
    }
}

/// The fleet's ConfigMap carries a copy of spin.toml, mounted over the image's: it must be
/// the repository's, or a pod would serve another app than the one tested here.
#[test]
fn the_fleet_configmap_carries_the_repository_spin_toml() {
    let output = Command::new(python())
        .args([
            "-c",
            "import sys, yaml\n\
             config = yaml.safe_load(open(sys.argv[1]))\n\
             sys.stdout.write(config['data']['spin.toml'])",
        ])
        .arg(repo("deploy/kubernetes/10-config.yaml"))
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let repository = std::fs::read_to_string(repo("spin.toml")).unwrap();
    assert!(
        String::from_utf8_lossy(&output.stdout) == repository,
        "deploy/kubernetes/10-config.yaml's spin.toml differs from spin.toml: copy it over"
    );
}

//! The binary's refusals: bad arguments end it with a message naming the problem, before it
//! reads any Kubernetes configuration or touches hearthd.
#![expect(clippy::disallowed_methods, reason = "runs the hearth-operator binary")]

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth-operator"))
        .args(args)
        .env("KUBECONFIG", home.path().join("none"))
        .env("HOME", home.path())
        .env("RUST_BACKTRACE", "0")
        .env_remove("NODE_NAME")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn node_names_that_would_change_the_selector_are_refused() {
    for bad in ["n1,metadata.name=x", "N1", "", "a b"] {
        let (ok, err) = run(&["node", "--node", bad]);
        assert!(!ok, "{bad:?} accepted");
        assert!(err.contains("is not a node name"), "{bad:?}: {err}");
    }
    // A good name gets as far as the (missing) Kubernetes configuration.
    let (ok, err) = run(&["node", "--node", "worker-1.example"]);
    assert!(!ok);
    assert!(err.contains("no Kubernetes configuration"), "{err}");
}

#[test]
fn out_of_range_numbers_are_refused() {
    let (ok, err) = run(&["controller", "--resync-secs", "0"]);
    assert!(!ok && err.contains("--resync-secs"), "{err}");
    let (ok, err) = run(&["controller", "--vmm-overhead-mib=70000"]);
    assert!(!ok && err.contains("--vmm-overhead-mib"), "{err}");
}

//! `hearthctl image pull` and `image import --kind oci` through a real hearthd
//! (`tests/common/daemon`), from a real registry started in hearthd's own network namespace:
//! the NDJSON progress hearthctl passes through with `--json`, the image that results, a taken
//! name refused before any work, plain HTTP only when asked for, and an archive import.
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive real tools and binaries (hearthd, hearthctl, docker-registry, tar)"
)]

mod common;

use common::daemon::HearthHost;
use common::registry::{self, TestRegistry, ADDR};
use serde_json::Value;

fn lines(out: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn pull_and_import_through_hearthd() {
    if !hearth_testkit::privileged("pull_and_import_through_hearthd")
        || !registry::tools_present("pull_and_import_through_hearthd")
    {
        return;
    }
    // busybox (a static x86_64 ELF) stands in for the injected agent.
    let host = HearthHost::start(&[], "\n[images]\nagent_bin = \"/bin/busybox\"\n");
    // hearthd collected the (empty) blob cache at startup.
    assert!(host.log().contains("blob cache"), "{}", host.log());
    let reg = TestRegistry::start(&host.ns, None);
    let work = tempfile::tempdir().unwrap();
    let layout = registry::build_layout(work.path(), 300_000);
    reg.push(&layout, "v2", "test/bb");
    let reference = format!("{ADDR}/test/bb:v2");

    let out = host.ctl(&["image", "pull", &reference, "--name", "bb", "--insecure"]);
    assert!(
        out.status.success(),
        "{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        host.log()
    );
    let events = lines(&out);
    let resolved = &events[0]["resolved"];
    assert_eq!(resolved["reference"], reference.as_str());
    assert_eq!(resolved["layers"].as_array().unwrap().len(), 2);
    assert!(
        events.iter().any(|e| e.get("layer").is_some()),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e == "building"), "{events:?}");
    let image = &events.last().unwrap()["image"];
    assert_eq!(image["name"], "bb");
    assert_eq!(image["kind"], "rootfs");
    assert_eq!(image["oci"]["reference"], reference.as_str());
    assert_eq!(image["oci"]["manifest_digest"], resolved["manifest_digest"]);

    let list = host.ctl_ok(&["image", "list"]);
    assert!(list.as_array().unwrap().iter().any(|i| i["name"] == "bb"));

    // A taken name: refused before any work, as a plain API error (exit code 1).
    let gets = reg.blob_gets().len();
    let out = host.ctl(&["image", "pull", &reference, "--name", "bb", "--insecure"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(reg.blob_gets().len(), gets);

    // Without --insecure hearthd speaks HTTPS to the plain-HTTP registry: it fails, and the
    // stream's last line says why.
    let out = host.ctl(&["image", "pull", &reference, "--name", "bb-tls"]);
    assert_eq!(out.status.code(), Some(1));
    let events = lines(&out);
    assert_eq!(
        events.last().unwrap()["error"]["code"],
        "registry_error",
        "{events:?}"
    );
    assert!(host
        .ctl_ok(&["image", "list"])
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["name"] != "bb-tls"));

    // An archive on hearthd's host.
    let tar = work.path().join("layout.tar");
    let ok = std::process::Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(ok.success());
    let out = host.ctl(&[
        "image",
        "import",
        "bb-archive",
        tar.to_str().unwrap(),
        "--kind",
        "oci",
        "--tag",
        "v2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = lines(&out);
    assert!(
        events.iter().any(|e| e.get("reading").is_some()),
        "{events:?}"
    );
    let image = &events.last().unwrap()["image"];
    assert_eq!(image["oci"]["manifest_digest"], resolved["manifest_digest"]);

    // Removing an image collects the blobs no image uses: the archive brought every blob of
    // the layout (all its tags), of which both images use the same three (config, 2 layers).
    let blobs = || {
        std::fs::read_dir(host.path("data/images/.blobs/sha256"))
            .unwrap()
            .count()
    };
    assert!(blobs() > 3);
    host.ctl_ok(&["image", "rm", "bb"]);
    assert_eq!(blobs(), 3, "bb-archive still uses its config and layers");
    host.ctl_ok(&["image", "rm", "bb-archive"]);
    assert_eq!(blobs(), 0);
}

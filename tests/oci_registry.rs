//! Pulls from a real registry (Debian's `docker-registry`) on the loopback of a network
//! namespace each test creates, with images built by `umoci` and pushed by `skopeo`: the
//! blob cache shares layers between images (counted at the registry: a re-pull fetches only
//! what it lacks), corrupted and truncated blobs are refused and leave nothing, basic auth
//! with right, wrong and no credentials, and the platform choice from an index.
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive real tools (docker-registry, skopeo, umoci, htpasswd) and clean up their own directories"
)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::registry::{self, TestRegistry, ADDR};
use common::NetNs;
use hearth::images::oci::manifest::Platform;
use hearth::images::oci::pull::Fetched;
use hearth::images::oci::rootfs::{FlattenLimits, InitMode, RootfsOptions};
use hearth::images::oci::{OciSettings, PullError, PullOptions, Puller};
use hearth::images::ImageStore;
use hearth_proto::api_pull::PullUpdate;

struct Host {
    _data: tempfile::TempDir,
    puller: Puller,
}

fn host(credentials: Option<PathBuf>, agent_bin: PathBuf) -> Host {
    let data = tempfile::tempdir().unwrap();
    let store = ImageStore::open(data.path()).unwrap();
    let settings = OciSettings {
        insecure_registries: vec![ADDR.into()],
        credentials,
        limits: hearth::images::oci::limits::OciLimits::default(),
        rootfs: RootfsOptions {
            size: None,
            headroom_percent: 20,
            min_headroom_bytes: 16 << 20,
            init: InitMode::Hearth,
            agent_bin,
            limits: FlattenLimits::default(),
        },
    };
    Host {
        puller: Puller::new(store, settings).unwrap(),
        _data: data,
    }
}

fn fetch(
    ns: &NetNs,
    puller: &Puller,
    reference: &str,
    opts: &PullOptions,
) -> (Result<Fetched, PullError>, Vec<PullUpdate>) {
    ns.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut events = Vec::new();
        let r = rt.block_on(puller.fetch(reference, opts, &mut |e| events.push(e)));
        (r, events)
    })
}

/// The blob cache's temporary directory and blob list: what a failed fetch must not grow.
fn cache_state(p: &Puller) -> (Vec<PathBuf>, usize) {
    let tmp: Vec<PathBuf> = fs::read_dir(p.cache().dir().join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    (tmp, p.cache().list().unwrap().len())
}

fn setup(
    test: &str,
    creds: Option<(&str, &str)>,
) -> Option<(NetNs, TestRegistry, tempfile::TempDir, PathBuf)> {
    if !hearth_testkit::privileged(test) || !registry::tools_present(test) {
        return None;
    }
    let ns = NetNs::new("oci");
    let reg = TestRegistry::start(&ns, creds);
    let work = tempfile::tempdir().unwrap();
    let layout = registry::build_layout(work.path(), 200_000);
    Some((ns, reg, work, layout))
}

#[test]
fn a_repull_sharing_layers_fetches_only_the_new_blobs() {
    let Some((ns, reg, _work, layout)) = setup("a_repull_sharing_layers", None) else {
        return;
    };
    reg.push(&layout, "v1", "test/bb");
    reg.push(&layout, "v2", "test/bb");
    let h = host(None, "/nonexistent".into());
    let opts = PullOptions::default();

    let before = reg.blob_gets().len();
    let (v1, events) = fetch(&ns, &h.puller, &format!("{ADDR}/test/bb:v1"), &opts);
    let v1 = v1.unwrap();
    assert_eq!(v1.manifest.layers.len(), 1);
    let got = reg.blob_gets()[before..].to_vec();
    let mut want = vec![
        v1.manifest.config.digest.to_string(),
        v1.manifest.layers[0].digest.to_string(),
    ];
    assert_eq!(got, want, "v1: config and its one layer");
    match &events[0] {
        PullUpdate::Resolved { layers, .. } => assert!(!layers[0].cached),
        other => panic!("first event {other:?}"),
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, PullUpdate::Layer { done, total, .. } if done == total)),
        "{events:?}"
    );

    // v2 shares v1's layer: only its config and its new layer are fetched.
    let before = reg.blob_gets().len();
    let (v2, events) = fetch(&ns, &h.puller, &format!("{ADDR}/test/bb:v2"), &opts);
    let v2 = v2.unwrap();
    assert_eq!(v2.manifest.layers.len(), 2);
    assert_eq!(v2.manifest.layers[0], v1.manifest.layers[0]);
    let got = reg.blob_gets()[before..].to_vec();
    want = vec![
        v2.manifest.config.digest.to_string(),
        v2.manifest.layers[1].digest.to_string(),
    ];
    assert_eq!(got, want, "v2: only what v1 did not bring");
    match &events[0] {
        PullUpdate::Resolved { layers, .. } => {
            assert_eq!(
                layers.iter().map(|l| l.cached).collect::<Vec<_>>(),
                [true, false]
            );
        }
        other => panic!("first event {other:?}"),
    }

    // Everything cached: no blob request at all.
    let before = reg.blob_gets().len();
    fetch(&ns, &h.puller, &format!("{ADDR}/test/bb:v2"), &opts)
        .0
        .unwrap();
    assert_eq!(
        reg.blob_gets().len(),
        before,
        "a re-pull made blob requests"
    );
    for blob in std::iter::once(&v2.manifest.config).chain(&v2.manifest.layers) {
        assert!(h.puller.cache().has(&blob.digest, blob.size));
    }
}

/// Replaces the registry's copy of `digest` with `bytes`.
fn tamper(reg: &TestRegistry, digest: &str, f: impl FnOnce(&mut Vec<u8>)) {
    let path = reg.blob_file(digest);
    let mut bytes = fs::read(&path).unwrap();
    f(&mut bytes);
    fs::write(&path, bytes).unwrap();
}

#[test]
fn corrupted_and_truncated_blobs_are_refused_and_leave_nothing() {
    let Some((ns, reg, _work, layout)) = setup("corrupted_and_truncated_blobs", None) else {
        return;
    };
    reg.push(&layout, "v2", "test/bb");
    let h = host(None, "/nonexistent".into());
    let opts = PullOptions::default();
    let reference = format!("{ADDR}/test/bb:v2");
    // Learn the layers from a first fetch into a throwaway cache.
    let probe = host(None, "/nonexistent".into());
    let good = fetch(&ns, &probe.puller, &reference, &opts).0.unwrap();
    let big = good.manifest.layers[1].digest.to_string();

    // Same size, one byte flipped in the middle: the digest check refuses it.
    tamper(&reg, &big, |b| {
        let mid = b.len() / 2;
        b[mid] ^= 0xff;
    });
    let err = fetch(&ns, &h.puller, &reference, &opts).0.unwrap_err();
    assert_eq!(err.code(), "bad_blob", "{err}");
    assert!(err.to_string().contains("wrong content"), "{err}");
    assert!(err.to_string().contains(&big), "{err}");
    let (tmp, _) = cache_state(&h.puller);
    assert!(tmp.is_empty(), "temporaries left: {tmp:?}");
    assert!(!h.puller.cache().has(
        &good.manifest.layers[1].digest,
        good.manifest.layers[1].size
    ));

    // Cut short: refused as truncated.
    tamper(&reg, &big, |b| b.truncate(b.len() / 3));
    let err = fetch(&ns, &h.puller, &reference, &opts).0.unwrap_err();
    assert_eq!(err.code(), "bad_blob", "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    let (tmp, blobs) = cache_state(&h.puller);
    assert!(tmp.is_empty(), "temporaries left: {tmp:?}");
    // Only the verified blobs (config, the shared first layer) are cached.
    assert_eq!(blobs, 2);
    assert!(!h.puller.cache().has(
        &good.manifest.layers[1].digest,
        good.manifest.layers[1].size
    ));

    // Longer than declared: cut off at the declared size and refused.
    tamper(&reg, &big, |b| {
        b.resize(good.manifest.layers[1].size as usize + 4096, 0);
    });
    let err = fetch(&ns, &h.puller, &reference, &opts).0.unwrap_err();
    assert_eq!(err.code(), "bad_blob", "{err}");
    assert!(err.to_string().contains("larger than"), "{err}");
    assert!(cache_state(&h.puller).0.is_empty());
}

fn credentials_file(dir: &Path, user: &str, pass: &str) -> PathBuf {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let path = dir.join("config.json");
    fs::write(
        &path,
        format!(r#"{{"auths":{{"{ADDR}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    path
}

#[test]
fn basic_auth_with_right_wrong_and_no_credentials() {
    let Some((ns, reg, work, layout)) = setup("basic_auth", Some(("hearth", "s3cret"))) else {
        return;
    };
    reg.push(&layout, "v1", "private/bb");
    let reference = format!("{ADDR}/private/bb:v1");
    let opts = PullOptions::default();

    let anonymous = host(None, "/nonexistent".into());
    let err = fetch(&ns, &anonymous.puller, &reference, &opts)
        .0
        .unwrap_err();
    assert_eq!(err.code(), "unauthorized", "{err}");

    let wrong = host(
        Some(credentials_file(&work.path().join("."), "hearth", "wrong")),
        "/nonexistent".into(),
    );
    let err = fetch(&ns, &wrong.puller, &reference, &opts).0.unwrap_err();
    assert_eq!(err.code(), "unauthorized", "{err}");
    assert!(
        err.to_string().contains("refused access to private/bb"),
        "{err}"
    );
    assert!(wrong.puller.cache().list().unwrap().is_empty());

    let right = host(
        Some(credentials_file(work.path(), "hearth", "s3cret")),
        "/nonexistent".into(),
    );
    let fetched = fetch(&ns, &right.puller, &reference, &opts).0.unwrap();
    assert_eq!(fetched.manifest.layers.len(), 1);
    assert_eq!(right.puller.cache().list().unwrap().len(), 2);
}

/// Adds to `layout` an index tagged `multi` with two entries: the `v1` manifest as
/// linux/amd64, and a copy of it whose config says linux/arm64.
fn add_two_platform_index(layout: &Path) -> (String, String) {
    use sha2::{Digest as _, Sha256};
    let blobs = layout.join("blobs/sha256");
    let put = |bytes: &[u8]| {
        let hex = format!("{:x}", Sha256::digest(bytes));
        fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let read =
        |digest: &str| fs::read(blobs.join(digest.strip_prefix("sha256:").unwrap())).unwrap();
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let v1 = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "v1")
        .unwrap()
        .clone();
    let amd = v1["digest"].as_str().unwrap().to_owned();
    let mut manifest: serde_json::Value = serde_json::from_slice(&read(&amd)).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&read(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    config["architecture"] = "arm64".into();
    let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = cd.into();
    manifest["config"]["size"] = cs.into();
    let (arm, arm_size) = put(&serde_json::to_vec(&manifest).unwrap());
    let list = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": arm_size,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd, "size": v1["size"],
             "platform": {"os": "linux", "architecture": "amd64"}},
        ]
    });
    let (ld, ls) = put(&serde_json::to_vec(&list).unwrap());
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": ld, "size": ls,
            "annotations": {"org.opencontainers.image.ref.name": "multi"}
        }));
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    (amd, arm)
}

#[test]
fn an_index_with_two_platforms_serves_the_one_asked_for() {
    let Some((ns, reg, _work, layout)) = setup("an_index_with_two_platforms", None) else {
        return;
    };
    let (amd, arm) = add_two_platform_index(&layout);
    reg.push(&layout, "multi", "test/multi");
    let h = host(None, "/nonexistent".into());
    let reference = format!("{ADDR}/test/multi:multi");

    let fetched = fetch(&ns, &h.puller, &reference, &PullOptions::default())
        .0
        .unwrap();
    assert_eq!(
        fetched.manifest_digest.to_string(),
        amd,
        "default linux/amd64"
    );
    let arm_opts = PullOptions {
        platform: Platform::parse("linux/arm64").unwrap(),
        ..PullOptions::default()
    };
    let fetched = fetch(&ns, &h.puller, &reference, &arm_opts).0.unwrap();
    assert_eq!(fetched.manifest_digest.to_string(), arm);
    let s390 = PullOptions {
        platform: Platform::parse("linux/s390x").unwrap(),
        ..PullOptions::default()
    };
    let err = fetch(&ns, &h.puller, &reference, &s390).0.unwrap_err();
    assert!(
        err.full_message()
            .contains("no linux/s390x variant (it has: linux/arm64/v8, linux/amd64)"),
        "{err}"
    );
    // A reference pinned by digest gets exactly that manifest.
    let fetched = fetch(
        &ns,
        &h.puller,
        &format!("{ADDR}/test/multi@{arm}"),
        &arm_opts,
    )
    .0
    .unwrap();
    assert_eq!(fetched.manifest_digest.to_string(), arm);
}

fn pull(
    ns: &NetNs,
    puller: &Puller,
    reference: &str,
    name: &str,
) -> Result<hearth::images::ImageMeta, PullError> {
    ns.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(puller.pull(reference, name, &PullOptions::default(), &mut |_| {}))
    })
}

/// `debugfs -R "stat <path>"` on an ext4 image: whether the path exists in it.
fn ext4_has(image: &Path, path: &str) -> bool {
    let out = std::process::Command::new("debugfs")
        .args(["-R", &format!("stat {path}")])
        .arg(image)
        .output()
        .unwrap();
    !String::from_utf8_lossy(&out.stderr).contains("File not found")
        && String::from_utf8_lossy(&out.stdout).contains("Inode:")
}

/// Names in the image store's directory that are not images (temporaries, the cache).
fn store_leftovers(store: &ImageStore) -> Vec<String> {
    fs::read_dir(store.dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n != ".blobs")
        .collect()
}

#[test]
fn pull_builds_images_sharing_blobs_and_gc_removes_unused_ones() {
    let Some((ns, reg, _work, layout)) = setup("pull_builds_images", None) else {
        return;
    };
    reg.push(&layout, "v1", "test/bb");
    reg.push(&layout, "v2", "test/bb");
    // busybox is a static x86_64 ELF: it stands in for the agent the builder injects (what
    // the agent does as init is tested elsewhere).
    let h = host(None, "/bin/busybox".into());
    let store = h.puller.store().clone();

    let one = pull(&ns, &h.puller, &format!("{ADDR}/test/bb:v1"), "one").unwrap();
    let oci = one.oci.as_ref().expect("an OCI image records its source");
    assert_eq!(oci.reference, format!("{ADDR}/test/bb:v1"));
    assert_eq!(oci.config.cmd, ["/bin/sh", "-c", "echo v1"]);
    let one_file = store.path("one").unwrap();
    assert!(ext4_has(&one_file, "/bin/busybox"));
    assert!(!ext4_has(&one_file, "/hello"));

    let before = reg.blob_gets().len();
    let two = pull(&ns, &h.puller, &format!("{ADDR}/test/bb:v2"), "two").unwrap();
    assert_eq!(
        reg.blob_gets().len() - before,
        2,
        "v2 fetched its config and new layer only"
    );
    let two_file = store.path("two").unwrap();
    assert!(ext4_has(&two_file, "/hello") && ext4_has(&two_file, "/bin/busybox"));
    assert_ne!(one.sha256, two.sha256);

    // A taken name is refused before anything is fetched.
    let before = reg.log().lines().count();
    let err = pull(&ns, &h.puller, &format!("{ADDR}/test/bb:v2"), "one").unwrap_err();
    assert_eq!(err.code(), "conflict", "{err}");
    assert_eq!(reg.log().lines().count(), before, "the registry was asked");
    // A missing tag: an error, no image, no temporaries.
    let err = pull(&ns, &h.puller, &format!("{ADDR}/test/bb:nope"), "three").unwrap_err();
    assert_eq!(err.code(), "not_found", "{}", err.full_message());
    assert!(store.get("three").is_err());
    assert_eq!(store_leftovers(&store), Vec::<String>::new());

    // The same image under another name, built from the same inputs: no blob request and no
    // build, the file is the first one's (a hard link), its record names its own source.
    let before = reg.blob_gets().len();
    let again = pull(&ns, &h.puller, &format!("{ADDR}/test/bb:v2"), "two-again").unwrap();
    assert_eq!(
        reg.blob_gets().len(),
        before,
        "a re-pull made blob requests"
    );
    let inode = |p: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(p).unwrap();
        (m.dev(), m.ino())
    };
    let again_file = store.path("two-again").unwrap();
    assert_eq!(
        inode(&again_file),
        inode(&two_file),
        "the build was not reused"
    );
    assert_eq!(again.sha256, two.sha256);
    let key = two.oci.as_ref().unwrap().build_key.clone();
    assert!(
        key.as_deref().is_some_and(|k| k.starts_with("sha256:")),
        "{key:?}"
    );
    assert_eq!(again.oci.as_ref().unwrap().build_key, key);
    // Removing one name leaves the other whole.
    store.remove("two-again", |_| false).unwrap();
    assert!(ext4_has(&two_file, "/hello"));

    // Blobs: v1 = config1 + L1, v2 = config2 + L1 + L2: four.
    assert_eq!(h.puller.cache().list().unwrap().len(), 4);
    assert_eq!(h.puller.collect_garbage().unwrap().blobs, 0);
    store.remove("one", |_| false).unwrap();
    let report = h.puller.collect_garbage().unwrap();
    assert_eq!((report.blobs, report.kept), (1, 3), "only v1's config goes");
    store.remove("two", |_| false).unwrap();
    let report = h.puller.collect_garbage().unwrap();
    assert_eq!((report.blobs, report.kept), (3, 0));
    assert!(h.puller.cache().list().unwrap().is_empty());
}

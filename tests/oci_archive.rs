//! Archive imports on a real filesystem, with images built by `umoci`: an OCI layout
//! directory, the same layout as a tar (an OCI archive), and a `docker save` archive in the
//! legacy format (`manifest.json`, `<id>/layer.tar`, a symlinked duplicate layer) all build
//! the same tree; hostile archives (a path leaving the archive, a blob that does not match its
//! name, a missing blob, not an archive at all) are refused and leave nothing behind.
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive real tools (umoci, tar, debugfs) and clean up their own directories"
)]

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use common::registry;
use hearth::images::oci::limits::OciLimits;
use hearth::images::oci::rootfs::{FlattenLimits, InitMode, RootfsOptions};
use hearth::images::oci::{OciSettings, PullError, PullOptions, Puller};
use hearth::images::{ImageMeta, ImageStore};

struct Host {
    _data: tempfile::TempDir,
    puller: Puller,
}

fn host() -> Host {
    let data = tempfile::tempdir().unwrap();
    let store = ImageStore::open(data.path()).unwrap();
    let settings = OciSettings {
        insecure_registries: vec![],
        credentials: None,
        limits: OciLimits::default(),
        rootfs: RootfsOptions {
            size: None,
            headroom_percent: 20,
            min_headroom_bytes: 16 << 20,
            init: InitMode::Hearth,
            // A static x86_64 ELF standing in for the agent (its behaviour is tested elsewhere).
            agent_bin: "/bin/busybox".into(),
            limits: FlattenLimits::default(),
        },
    };
    Host {
        puller: Puller::new(store, settings).unwrap(),
        _data: data,
    }
}

fn import(h: &Host, path: &Path, tag: Option<&str>, name: &str) -> Result<ImageMeta, PullError> {
    h.puller
        .import_archive(path, tag, name, &PullOptions::default(), &mut |_| {})
}

fn ext4_has(image: &Path, path: &str) -> bool {
    let out = std::process::Command::new("debugfs")
        .args(["-R", &format!("stat {path}")])
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("Inode:")
}

/// What a failed import must not leave: images, store temporaries, cache temporaries.
fn assert_nothing_left(h: &Host) {
    let store = h.puller.store();
    assert!(store.list().unwrap().is_empty());
    let left: Vec<String> = fs::read_dir(store.dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".blobs")
        .collect();
    assert!(left.is_empty(), "left in the store: {left:?}");
    let tmp: Vec<_> = fs::read_dir(h.puller.cache().dir().join("tmp"))
        .unwrap()
        .flatten()
        .collect();
    assert!(tmp.is_empty(), "cache temporaries: {tmp:?}");
}

fn setup(test: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    if !hearth_testkit::privileged(test) || !registry::tools_present(test) {
        return None;
    }
    let work = tempfile::tempdir().unwrap();
    let layout = registry::build_layout(work.path(), 100_000);
    Some((work, layout))
}

fn tar_dir(dir: &Path, out: &Path) {
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn an_oci_layout_and_its_tar_build_the_same_image() {
    let Some((work, layout)) = setup("an_oci_layout_and_its_tar") else {
        return;
    };
    let h = host();
    let err = import(&h, &layout, None, "any").unwrap_err();
    assert!(
        err.full_message()
            .contains("holds 3 images (base, v1, v2); choose one with a tag"),
        "{}",
        err.full_message()
    );
    let err = import(&h, &layout, Some("v9"), "any").unwrap_err();
    assert!(
        err.full_message().contains("tagged \"v9\""),
        "{}",
        err.full_message()
    );
    assert_nothing_left(&h);

    let dir = import(&h, &layout, Some("v2"), "from-dir").unwrap();
    let file = h.puller.store().path("from-dir").unwrap();
    assert!(ext4_has(&file, "/hello") && ext4_has(&file, "/bin/busybox"));
    assert_eq!(dir.oci.as_ref().unwrap().config.cmd, ["/bin/cat", "/hello"]);

    let tar = work.path().join("oci.tar");
    tar_dir(&layout, &tar);
    let h2 = host();
    let from_tar = import(&h2, &tar, Some("v2"), "from-tar").unwrap();
    assert_eq!(
        from_tar.oci.as_ref().unwrap().manifest_digest,
        dir.oci.as_ref().unwrap().manifest_digest
    );
    let file = h2.puller.store().path("from-tar").unwrap();
    assert!(ext4_has(&file, "/hello") && ext4_has(&file, "/extra.bin"));
}

/// Writes a legacy `docker save` archive of `tag` in `layout`: `manifest.json`, the config
/// as `<hex>.json`, each layer uncompressed at `<n>/layer.tar`, plus a symlinked duplicate
/// of the first layer (how docker names a layer shared twice).
fn docker_save(layout: &Path, tag: &str, out: &Path) {
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.strip_prefix("sha256:").unwrap())
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(entry["digest"].as_str().unwrap())).unwrap())
            .unwrap();
    let mut b = tar::Builder::new(fs::File::create(out).unwrap());
    let mut add = |path: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, bytes).unwrap();
    };
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config_name = format!("{}.json", config_digest.strip_prefix("sha256:").unwrap());
    add(&config_name, &fs::read(blob(config_digest)).unwrap());
    let mut layers = Vec::new();
    for (i, l) in manifest["layers"].as_array().unwrap().iter().enumerate() {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(fs::File::open(blob(l["digest"].as_str().unwrap())).unwrap())
            .read_to_end(&mut plain)
            .unwrap();
        let path = format!("{i}/layer.tar");
        add(&path, &plain);
        layers.push(path);
    }
    // The first layer again, as docker writes a repeated layer: a symlink to the first.
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "dup/layer.tar", "../0/layer.tar")
        .unwrap();
    layers.insert(1, "dup/layer.tar".into());
    let list = serde_json::json!([{
        "Config": config_name, "RepoTags": [format!("test/bb:{tag}")], "Layers": layers,
    }]);
    let list = serde_json::to_vec(&list).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(list.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "manifest.json", &list[..]).unwrap();
    b.finish().unwrap();
}

#[test]
fn a_docker_save_archive_imports() {
    let Some((work, layout)) = setup("a_docker_save_archive_imports") else {
        return;
    };
    let h = host();
    let archive = work.path().join("saved.tar");
    docker_save(&layout, "v2", &archive);
    let meta = import(&h, &archive, None, "saved").unwrap();
    let file = h.puller.store().path("saved").unwrap();
    assert!(ext4_has(&file, "/hello") && ext4_has(&file, "/bin/busybox"));
    assert_eq!(
        meta.oci.as_ref().unwrap().config.cmd,
        ["/bin/cat", "/hello"]
    );
    // RepoTags select too; a tag it lacks is refused.
    import(&h, &archive, Some("test/bb:v2"), "saved2").unwrap();
    let err = import(&h, &archive, Some("v1"), "saved3").unwrap_err();
    assert!(
        err.full_message().contains("tagged \"v1\""),
        "{}",
        err.full_message()
    );
}

/// A tar of `entries` (path, bytes), paths written raw (so `..` stays in).
fn raw_tar(out: &Path, entries: &[(&str, &[u8])]) {
    let mut b = tar::Builder::new(fs::File::create(out).unwrap());
    for (path, bytes) in entries {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *bytes).unwrap();
    }
    b.finish().unwrap();
}

#[test]
fn hostile_archives_are_refused_and_leave_nothing() {
    let Some((work, layout)) = setup("hostile_archives") else {
        return;
    };
    let w = work.path();
    let index = fs::read(layout.join("index.json")).unwrap();
    let blob_hex = |tag: &str| {
        let v: serde_json::Value = serde_json::from_slice(&index).unwrap();
        let d = v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_owned();
        d.strip_prefix("sha256:").unwrap().to_owned()
    };
    let manifest_hex = blob_hex("v1");
    let manifest = fs::read(layout.join("blobs/sha256").join(&manifest_hex)).unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let hex_of = |v: &serde_json::Value| {
        v["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap()
            .to_owned()
    };
    let config_hex = hex_of(&parsed["config"]);
    let layer_hex = hex_of(&parsed["layers"][0]);
    let config = fs::read(layout.join("blobs/sha256").join(&config_hex)).unwrap();
    let layer = fs::read(layout.join("blobs/sha256").join(&layer_hex)).unwrap();
    let one_index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_hex}","size":{}}}]}}"#,
        manifest.len()
    );
    let blob = |hex: &str| format!("blobs/sha256/{hex}");
    let (m, c, l) = (blob(&manifest_hex), blob(&config_hex), blob(&layer_hex));
    let mut bad_layer = layer.clone();
    let mid = bad_layer.len() / 2;
    bad_layer[mid] ^= 0xff;

    type Case<'a> = (&'a str, Vec<(&'a str, &'a [u8])>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "escape",
            vec![("../escape", b"x"), ("index.json", one_index.as_bytes())],
            "leaves the archive",
        ),
        (
            "bad-blob",
            vec![
                ("index.json", one_index.as_bytes()),
                (&m, &manifest),
                (&c, &config),
                (&l, &bad_layer),
            ],
            "wrong content",
        ),
        (
            "missing-layer",
            vec![
                ("index.json", one_index.as_bytes()),
                (&m, &manifest),
                (&c, &config),
            ],
            "lacks blob",
        ),
        (
            "not-an-archive",
            vec![("readme.txt", b"hello")],
            "neither index.json nor manifest.json",
        ),
    ];
    for (name, entries, why) in cases {
        let h = host();
        let path = w.join(format!("{name}.tar"));
        raw_tar(&path, &entries);
        let err = import(&h, &path, None, "img").unwrap_err();
        assert!(
            err.full_message().contains(why),
            "{name}: {}",
            err.full_message()
        );
        assert_nothing_left(&h);
    }
    // Garbage bytes: a clear error too.
    let h = host();
    let junk = w.join("junk.tar");
    fs::write(&junk, vec![0x5a; 4096]).unwrap();
    let err = import(&h, &junk, None, "img").unwrap_err();
    assert!(
        err.full_message().contains("archive"),
        "{}",
        err.full_message()
    );
    assert_nothing_left(&h);
}

//! Image endpoints: import (plain and streamed), list, remove, refusals.

use std::io::BufRead;

use hearth::client::Method;
use hearth_proto::api_images::ImageInfo;
use serde_json::json;

use super::{error_of, post, server};

fn kernel_file(dir: &std::path::Path) -> std::path::PathBuf {
    let mut elf = vec![0u8; 64 * 1024];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little-endian
    elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86_64
    let p = dir.join("vmlinux");
    std::fs::write(&p, elf).unwrap();
    p
}

#[test]
fn images_import_list_and_remove() {
    let (d, _s, c) = server();
    let src = kernel_file(d.path());
    let r = post(
        &c,
        "/v1/images",
        &[],
        json!({"name": "k", "kind": "kernel", "path": src}),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let img: ImageInfo = r.json().unwrap();
    assert_eq!(
        (img.format.as_str(), img.size, img.sha256.len()),
        ("elf", 64 * 1024, 64)
    );
    let list: Vec<ImageInfo> = c.get("/v1/images").unwrap();
    assert_eq!(list, [img]);

    let r = post(
        &c,
        "/v1/images",
        &[],
        json!({"name": "k", "kind": "kernel", "path": src}),
    );
    assert_eq!(r.status, 409);
    let r = post(
        &c,
        "/v1/images",
        &[],
        json!({"name": "r", "kind": "rootfs", "path": src}),
    );
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (422, "invalid_image")
    );
    let r = post(
        &c,
        "/v1/images",
        &[],
        json!({"name": "x", "kind": "kernel", "path": "rel/vmlinux"}),
    );
    assert!(error_of(&r).error.message.contains("`path`"));
    let r = post(
        &c,
        "/v1/images",
        &[],
        json!({"name": "x", "kind": "kernel", "path": "/nonexistent"}),
    );
    let e = error_of(&r).error;
    // Well formed, but nothing to import there: 422 (the schema cannot say which paths exist).
    assert_eq!((r.status, e.code.as_str()), (422, "invalid_source"));
    assert!(
        e.message.contains("`path`") && e.message.contains("/nonexistent"),
        "{}",
        e.message
    );
    let r = post(
        &c,
        "/v1/images",
        &[],
        json!({"name": ".hidden", "kind": "kernel", "path": src}),
    );
    assert!(error_of(&r).error.message.contains("`name`"));
    let r = post(
        &c,
        "/v1/images",
        &[],
        json!({"name": "x", "kind": "initrd", "path": src}),
    );
    assert_eq!(r.status, 400);

    // In use by a VM: refused; once the VM is gone: removed.
    let r = post(
        &c,
        "/v1/vms",
        &[],
        json!({"name": "a", "kernel": "k", "rootfs": "r"}),
    );
    assert_eq!(r.status, 201);
    let r = c
        .request(Method::DELETE, "/v1/images/k", &[], None)
        .unwrap();
    assert_eq!(
        (r.status, error_of(&r).error.code.as_str()),
        (409, "in_use")
    );
    assert_eq!(
        c.request(Method::DELETE, "/v1/vms/a", &[], None)
            .unwrap()
            .status,
        204
    );
    assert_eq!(
        c.request(Method::DELETE, "/v1/images/k", &[], None)
            .unwrap()
            .status,
        204
    );
    assert_eq!(
        c.request(Method::DELETE, "/v1/images/k", &[], None)
            .unwrap()
            .status,
        404
    );
}

#[test]
fn streamed_import_reports_progress_then_the_result() {
    use hearth_proto::api_images::{ImportUpdate, NDJSON};
    let (d, _s, c) = server();
    let src = kernel_file(d.path());
    let updates = |body: serde_json::Value| -> Vec<ImportUpdate> {
        let r = c
            .stream(
                Method::POST,
                "/v1/images",
                &[("Accept", NDJSON)],
                Some(body.to_string().as_bytes()),
            )
            .unwrap();
        assert_eq!(r.status, 200);
        r.body
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect()
    };
    let got = updates(json!({"name": "k", "kind": "kernel", "path": src}));
    assert_eq!(
        got[0],
        ImportUpdate::Progress {
            copied: 64 * 1024,
            total: 64 * 1024
        }
    );
    match got.last().unwrap() {
        ImportUpdate::Image(img) => assert_eq!((img.name.as_str(), img.size), ("k", 64 * 1024)),
        other => panic!("{other:?}"),
    }
    // A failure found while importing comes as the last line; nothing is stored.
    let got = updates(json!({"name": "r", "kind": "rootfs", "path": src}));
    match got.last().unwrap() {
        ImportUpdate::Error(e) => assert_eq!(e.code, "invalid_image"),
        other => panic!("{other:?}"),
    }
    let list: Vec<ImageInfo> = c.get("/v1/images").unwrap();
    assert_eq!(list.len(), 1);
    // Refusals that need no copying are plain HTTP errors.
    let r = c
        .request(
            Method::POST,
            "/v1/images",
            &[("Accept", NDJSON)],
            Some(
                json!({"name": "x", "kind": "kernel", "path": "rel"})
                    .to_string()
                    .as_bytes(),
            ),
        )
        .unwrap();
    assert_eq!(r.status, 400);
}

/// Issue 9, finding 2: importing a FIFO never answered (the open blocked until a writer
/// came); device nodes were opened as root the same way. Now 422 at once, nothing stored.
#[test]
fn special_files_are_refused_with_422() {
    let (d, _s, c) = server();
    let fifo = d.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for (path, what) in [
        (fifo.as_path(), "a FIFO"),
        (std::path::Path::new("/dev/zero"), "a character device"),
    ] {
        // The client's own timeout (if any) is long; a hang shows as the test never ending.
        let r = post(
            &c,
            "/v1/images",
            &[],
            json!({"name": "k", "kind": "kernel", "path": path}),
        );
        let e = error_of(&r).error;
        assert_eq!(
            (r.status, e.code.as_str()),
            (422, "invalid_source"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains(what) && e.message.contains("`path`"),
            "{}",
            e.message
        );
    }
    let list: Vec<ImageInfo> = c.get("/v1/images").unwrap();
    assert!(list.is_empty());
}

/// An ext4 file built "from an OCI image" (mkfs stands in for the builder) committed to the
/// server's store as `name`, built for `init`.
#[expect(
    clippy::disallowed_methods,
    reason = "the test makes its ext4 with mkfs"
)]
fn oci_image(dir: &std::path::Path, name: &str, init: hearth_proto::image_config::InitMode) {
    use hearth_proto::image_config::{ImageConfig, OciSource};
    let store = hearth::images::ImageStore::open(dir).unwrap();
    let built = dir.join(format!("{name}.ext4"));
    let out = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&built)
        .arg("8M")
        .output()
        .unwrap();
    assert!(out.status.success());
    let source = OciSource {
        reference: format!("registry.example/{name}:1"),
        manifest_digest: "sha256:0123".into(),
        config: ImageConfig {
            entrypoint: vec!["/bin/app".into()],
            cmd: vec!["--port".into(), "80".into()],
            env: vec!["PATH=/bin".into()],
            exposed_ports: vec!["80/tcp".into()],
            ..ImageConfig::default()
        },
        init,
        build_key: None,
    };
    store.commit_built(name, &built, source).unwrap();
}

#[test]
fn oci_images_show_their_config_and_boot_with_hearths_init() {
    use hearth_proto::api::VmInfo;
    use hearth_proto::image_config::InitMode;
    let (d, _s, c) = server();
    oci_image(d.path(), "web", InitMode::Hearth);
    oci_image(d.path(), "sysd", InitMode::Image);
    let img: ImageInfo = c.get("/v1/images/web").unwrap();
    let oci = img.oci.expect("the OCI source");
    assert_eq!(
        (oci.reference.as_str(), oci.init, oci.config.cmd.len()),
        ("registry.example/web:1", InitMode::Hearth, 2)
    );
    assert_eq!(oci.config.exposed_ports, ["80/tcp"]);
    let r = c
        .request(Method::GET, "/v1/images/nope", &[], None)
        .unwrap();
    assert_eq!(r.status, 404);
    let create = |body: serde_json::Value| {
        let r = post(&c, "/v1/vms", &[], body);
        (r.status, r)
    };
    let boot = |name: &str, extra: serde_json::Value| {
        let mut body = json!({"name": name, "kernel": "k", "rootfs": "web"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, r) = create(body);
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&r.body));
        r.json::<VmInfo>().unwrap().spec.boot_args
    };
    assert_eq!(
        boot("a", json!({})).as_deref(),
        Some("init=/sbin/hearth-init")
    );
    assert_eq!(
        boot("b", json!({"init": "hearth", "boot_args": "quiet"})).as_deref(),
        Some("init=/sbin/hearth-init quiet")
    );
    assert_eq!(boot("c", json!({"init": "image"})), None);
    assert_eq!(
        boot("d", json!({"init": "image", "boot_args": "quiet"})).as_deref(),
        Some("quiet")
    );
    // An image built for its own init: left alone, and hearth's init refused.
    let (status, r) = create(json!({"name": "e", "kernel": "k", "rootfs": "sysd"}));
    assert_eq!(status, 201);
    assert_eq!(r.json::<VmInfo>().unwrap().spec.boot_args, None);
    let (status, r) =
        create(json!({"name": "f", "kernel": "k", "rootfs": "sysd", "init": "hearth"}));
    let e = error_of(&r).error;
    assert_eq!(status, 400, "{}", e.message);
    assert!(
        e.message.contains("`init`") && e.message.contains("sysd"),
        "{}",
        e.message
    );
    let (status, _) =
        create(json!({"name": "g", "kernel": "k", "rootfs": "web", "init": "systemd"}));
    assert_eq!(status, 400);
}

//! An image built from OCI layers (`build_rootfs`, then `ImageStore::commit_built`) through the
//! real `hearthd` and `hearthctl` with `firecracker-sim` as the VMM, in private network
//! namespaces: `image get` shows its source and config, and `vm create --image` boots it with
//! `init=/sbin/hearth-init` on the kernel command line the VMM received, or without it for
//! `--init image`.
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive real tools and binaries (ip, mkfs, hearthd, hearthctl) and clean up their own directories"
)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::daemon::HearthHost;
use hearth::images::oci::config::ImageConfig;
use hearth::images::oci::rootfs::{
    build_rootfs, FlattenLimits, InitMode, LayerBlob, RootfsOptions,
};
use hearth::images::ImageStore;
use hearth_proto::image_config::OciSource;

/// A one-layer image (a plain tar written with the `tar` crate) built with hearth's init and
/// committed to the store under `data` as `name`; the agent is a stand-in static ELF header.
fn commit_image(work: &Path, data: &Path, name: &str) {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "etc/", &[][..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(3);
    b.append_data(&mut h, "etc/hostname", &b"web"[..]).unwrap();
    let layer = work.join("layer.tar");
    std::fs::write(&layer, b.into_inner().unwrap()).unwrap();
    let mut elf = vec![0u8; 120];
    elf[..4].copy_from_slice(b"\x7fELF");
    (elf[4], elf[5], elf[18], elf[32], elf[54], elf[56], elf[64]) = (2, 1, 62, 64, 56, 1, 1);
    let agent = work.join("agent");
    std::fs::write(&agent, elf).unwrap();
    let config = ImageConfig {
        cmd: vec!["/bin/sh".into()],
        exposed_ports: vec!["80/tcp".into()],
        ..ImageConfig::default()
    };
    let opts = RootfsOptions {
        size: None,
        headroom_percent: 10,
        min_headroom_bytes: 8 << 20,
        init: InitMode::Hearth,
        agent_bin: agent,
        limits: FlattenLimits::default(),
    };
    let store = ImageStore::open(data).unwrap();
    let scratch = store.build_dir(name).unwrap();
    let out = scratch.join("out.ext4");
    let tree = scratch.join("tree");
    std::fs::create_dir(&tree).unwrap();
    let layers = [LayerBlob {
        path: layer,
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        digest: "sha256:test".into(),
        size: 0,
    }];
    build_rootfs(&layers, &config, &opts, &tree, &out).unwrap();
    let source = OciSource {
        reference: "registry.example/web:1".into(),
        manifest_digest: "sha256:0123".into(),
        config,
        init: InitMode::Hearth,
        build_key: None,
    };
    store.commit_built(name, &out, source).unwrap();
    std::fs::remove_dir_all(&scratch).unwrap();
}

/// The VMM API sockets under the run directory.
fn vmm_sockets(run: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(run)
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("api.sock"))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default()
}

/// Creates VM `name` with `args` and answers the `boot_args` its VMM holds (`GET /vm/config`
/// on its API socket).
fn create_and_read_cmdline(h: &HearthHost, name: &str, args: &[&str]) -> String {
    use std::io::{Read, Write};
    let before = vmm_sockets(&h.path("run"));
    let mut full = vec![
        "vm",
        "create",
        name,
        "--kernel",
        "vmlinux",
        "--no-ready-probe",
    ];
    full.extend_from_slice(args);
    h.ctl_ok(&full);
    let after = vmm_sockets(&h.path("run"));
    let new: Vec<_> = after.difference(&before).collect();
    assert_eq!(new.len(), 1, "{new:?}");
    let mut s = std::os::unix::net::UnixStream::connect(new[0]).unwrap();
    s.write_all(b"GET /vm/config HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let config: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    config["boot-source"]["boot_args"]
        .as_str()
        .unwrap_or_else(|| panic!("no boot_args in {config}"))
        .to_owned()
}

#[test]
fn vm_create_image_boots_hearths_init() {
    require_privileged!();
    let h = HearthHost::start(&[], "");
    commit_image(&h.path(""), &h.path("data"), "web");
    let got = h.ctl_ok(&["image", "get", "web"]);
    assert_eq!(got["oci"]["reference"], "registry.example/web:1");
    assert_eq!(got["oci"]["init"], "hearth");
    assert_eq!(got["oci"]["config"]["exposed_ports"][0], "80/tcp");
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_hearthctl"))
        .arg("--socket")
        .arg(h.path("hearthd.sock"))
        .args(["image", "get", "web"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Init:") && text.contains("[\"/bin/sh\"]"),
        "{text}"
    );

    let cmdline = create_and_read_cmdline(&h, "a", &["--image", "web"]);
    assert!(cmdline.contains("init=/sbin/hearth-init"), "{cmdline}");
    let cmdline = create_and_read_cmdline(&h, "b", &["--image", "web", "--init", "image"]);
    assert!(!cmdline.contains("init="), "{cmdline}");
    let cmdline = create_and_read_cmdline(&h, "c", &["--image", "base", "--boot-args", "quiet"]);
    assert!(
        !cmdline.contains("init=") && cmdline.contains("quiet"),
        "{cmdline}"
    );
    let out = h.ctl(&[
        "vm", "create", "d", "--kernel", "vmlinux", "--image", "base", "--init", "hearth",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("init"));
}

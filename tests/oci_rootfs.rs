//! From layer blobs to an ext4 root filesystem (`images::oci::rootfs::build_rootfs`), checked
//! on the built image with `debugfs` (no mount): hostile layers refused with nothing left
//! behind, every limit, malformed streams, OCI whiteouts and opaque directories, hard links
//! across layers, owners, setuid, devices, xattrs, gzip/zstd/plain, the agent injected as init,
//! sizing; and the tree equal to what `umoci unpack` makes of the same image.
//! Needs root (owners, device nodes).
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive real tools (umoci, debugfs, busybox) and clean up their own directories"
)]

#[path = "oci_rootfs/ext4_tree.rs"]
mod ext4_tree;
#[path = "oci_rootfs/tarball.rs"]
mod tarball;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use hearth::images::oci::config::ImageConfig;
use hearth::images::oci::rootfs::{
    build_rootfs, FlattenLimits, InitMode, LayerBlob, RootfsError, RootfsOptions, RootfsReport,
};
use hearth_testkit::require_privileged;

use ext4_tree::{cat, ext4_tree, host_tree, stat};
use tarball::{Tar, H};

const PLAIN: &str = "application/vnd.oci.image.layer.v1.tar";
const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// A work directory with blobs, scratch and output.
struct Work {
    dir: tempfile::TempDir,
    n: usize,
}

impl Work {
    fn new() -> Self {
        Work {
            dir: tempfile::tempdir().unwrap(),
            n: 0,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Stores `tar` as a layer blob compressed per `media_type`.
    fn layer(&mut self, tar: &[u8], media_type: &str) -> LayerBlob {
        let bytes = match media_type {
            GZIP => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(tar).unwrap();
                e.finish().unwrap()
            }
            ZSTD => zstd::encode_all(tar, 3).unwrap(),
            _ => tar.to_vec(),
        };
        self.raw_layer(&bytes, media_type)
    }

    /// Stores `bytes` as is.
    fn raw_layer(&mut self, bytes: &[u8], media_type: &str) -> LayerBlob {
        self.n += 1;
        let path = self.path(&format!("layer{}", self.n));
        fs::write(&path, bytes).unwrap();
        LayerBlob {
            path,
            media_type: media_type.into(),
            digest: format!("sha256:layer{}", self.n),
            size: bytes.len() as u64,
        }
    }

    /// A fake static agent: an ELF header with one `PT_LOAD` and no interpreter.
    fn agent(&self) -> PathBuf {
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[18] = 62;
        b[32] = 64;
        b[54] = 56;
        b[56] = 1;
        b[64] = 1;
        let p = self.path("agent");
        fs::write(&p, b).unwrap();
        p
    }

    fn opts(&self, init: InitMode) -> RootfsOptions {
        RootfsOptions {
            size: None,
            headroom_percent: 10,
            min_headroom_bytes: 8 << 20,
            init,
            agent_bin: self.agent(),
            limits: FlattenLimits::default(),
        }
    }

    /// Builds into a fresh scratch dir and `out`, checking the no-leftovers promise either way.
    fn build(
        &self,
        layers: &[LayerBlob],
        config: &ImageConfig,
        opts: &RootfsOptions,
        out: &str,
    ) -> Result<(PathBuf, RootfsReport), RootfsError> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let scratch = self.path(&format!("scratch-{n}"));
        fs::create_dir(&scratch).unwrap();
        let out = self.path(out);
        // Failures leave no output, so one name serves a series of failing cases.
        let _ = fs::remove_file(self.path("out.ext4"));
        let r = build_rootfs(layers, config, opts, &scratch, &out);
        assert_eq!(
            fs::read_dir(&scratch).unwrap().count(),
            0,
            "scratch not emptied after {r:?}"
        );
        assert_eq!(out.exists(), r.is_ok(), "output after {r:?}");
        r.map(|rep| (out, rep))
    }
}

fn cmd_config() -> ImageConfig {
    ImageConfig {
        cmd: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
        env: vec!["A=1".into()],
        working_dir: Some("/srv".into()),
        user: Some("1000:1000".into()),
        ..ImageConfig::default()
    }
}

fn base() -> Tar {
    let mut t = Tar::default();
    t.dir("./", 0o755)
        .dir("etc/", 0o755)
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644);
    t
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one table of hostile cases, read top to bottom"
)]
fn hostile_layers_are_refused_and_leave_nothing_behind() {
    require_privileged!();
    let mut w = Work::new();
    let outside = w.path("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"s").unwrap();
    let out_abs = outside.to_str().unwrap().to_owned();
    type Case = (&'static str, Box<dyn Fn(&mut Tar)>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "dotdot",
            Box::new(|t| {
                t.file("../escape", b"x", 0o644);
            }),
            "name holds ..",
        ),
        (
            "deep dotdot",
            Box::new(|t| {
                t.file("etc/../../escape", b"x", 0o644);
            }),
            "name holds ..",
        ),
        (
            "absolute",
            Box::new(|t| {
                t.file("/escape", b"x", 0o644);
            }),
            "absolute name",
        ),
        (
            "write through symlink",
            Box::new({
                let o = out_abs.clone();
                move |t| {
                    t.symlink("evil", &o).file("evil/pwned", b"x", 0o644);
                }
            }),
            "goes through a symlink",
        ),
        (
            "dir through symlink",
            Box::new({
                let o = out_abs.clone();
                move |t| {
                    t.symlink("evil", &o).dir("evil/sub/", 0o755);
                }
            }),
            "goes through a symlink",
        ),
        (
            "hardlink out",
            Box::new(|t| {
                t.hardlink("h", "../outside/secret");
            }),
            "name holds ..",
        ),
        (
            "hardlink absolute",
            Box::new({
                let o = out_abs.clone();
                move |t| {
                    t.hardlink("h", &format!("{o}/secret"));
                }
            }),
            "absolute name",
        ),
        (
            "hardlink through symlink",
            Box::new({
                let o = out_abs.clone();
                move |t| {
                    t.symlink("evil", &o).hardlink("h", "evil/secret");
                }
            }),
            "goes through a symlink",
        ),
        (
            "hardlink to nothing",
            Box::new(|t| {
                t.hardlink("h", "etc/none");
            }),
            "is not in the image",
        ),
        (
            "hardlink to a dir",
            Box::new(|t| {
                t.hardlink("h", "etc");
            }),
            "to the directory",
        ),
        (
            "whiteout of dotdot",
            Box::new(|t| {
                t.file("etc/.wh...", b"", 0o644);
            }),
            "whiteout of no file",
        ),
        (
            "whiteout through symlink",
            Box::new({
                let o = out_abs.clone();
                move |t| {
                    t.symlink("evil", &o).file("evil/.wh.secret", b"", 0o644);
                }
            }),
            "goes through a symlink",
        ),
        (
            "opaque through symlink",
            Box::new({
                let o = out_abs.clone();
                move |t| {
                    t.symlink("evil", &o).file("evil/.wh..wh..opq", b"", 0o644);
                }
            }),
            "goes through a symlink",
        ),
        (
            "root as a file",
            Box::new(|t| {
                t.file("./", b"", 0o644);
            }),
            "the root is not a directory",
        ),
        (
            "NUL in symlink",
            Box::new(|t| {
                t.pax(&[("linkpath", b"a\0b")]).symlink("s", "x");
            }),
            "symlink target holds a NUL byte",
        ),
        (
            "unknown type",
            Box::new(|t| {
                t.raw(&H::new(b"v", b'V'), b"");
            }),
            "unsupported entry type",
        ),
    ];
    for (what, add, want) in cases {
        let mut t = base();
        add(&mut t);
        let layer = w.layer(&t.finish(), PLAIN);
        let err = w
            .build(
                &[layer],
                &cmd_config(),
                &w.opts(InitMode::Hearth),
                "out.ext4",
            )
            .map(|_| ())
            .expect_err(what);
        assert!(
            matches!(err, RootfsError::UnsafeEntry { .. }),
            "{what}: {err:?}"
        );
        assert!(err.to_string().contains(want), "{what}: {err}");
        let names: Vec<_> = fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret"], "{what}: the outside directory changed");
        assert_eq!(fs::read(outside.join("secret")).unwrap(), b"s", "{what}");
        assert!(!w.path("escape").exists(), "{what}");
    }
    // A symlink from an earlier layer is not followed either.
    let l1 = w.layer(&base().symlink("evil", &out_abs).finish(), PLAIN);
    let l2 = w.layer(
        &Tar::default().file("evil/pwned", b"x", 0o644).finish(),
        GZIP,
    );
    let err = w
        .build(
            &[l1, l2],
            &cmd_config(),
            &w.opts(InitMode::Hearth),
            "o.ext4",
        )
        .unwrap_err();
    assert!(err.to_string().contains("goes through a symlink"), "{err}");
    assert!(!outside.join("pwned").exists());
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one table of limits, read top to bottom"
)]
fn every_limit_is_enforced() {
    require_privileged!();
    let mut w = Work::new();
    let plain_opts = w.opts(InitMode::Image);
    let with = |f: &dyn Fn(&mut FlattenLimits)| {
        let mut o = plain_opts.clone();
        f(&mut o.limits);
        o
    };
    let mut many = base();
    for i in 0..20 {
        many.file(&format!("f{i}"), b"x", 0o644);
    }
    let many = w.layer(&many.finish(), PLAIN);
    let big = w.layer(&base().file("big", &[7u8; 5000], 0o644).finish(), GZIP);
    let long_name = format!("{}/f", "d".repeat(300));
    let long = w.layer(
        &base()
            .pax(&[("path", long_name.as_bytes())])
            .file("short", b"x", 0o644)
            .finish(),
        PLAIN,
    );
    let xattrs = w.layer(
        &base()
            .pax(&[
                ("SCHILY.xattr.user.a", b"1"),
                ("SCHILY.xattr.user.b", b"2"),
                ("SCHILY.xattr.user.c", &[b'v'; 300]),
            ])
            .file("x", b"", 0o644)
            .finish(),
        PLAIN,
    );
    let huge_pax = w.layer(
        &base()
            .pax(&[("comment", &vec![b'c'; 8 << 20])])
            .file("x", b"", 0o644)
            .finish(),
        PLAIN,
    );
    let cases: Vec<(&str, Vec<LayerBlob>, RootfsOptions, &str)> = vec![
        (
            "entries",
            vec![many.clone()],
            with(&|l| l.max_entries = 10),
            "tar entries",
        ),
        (
            "file size",
            vec![big.clone()],
            with(&|l| l.max_file_bytes = 4999),
            "bytes in one file",
        ),
        (
            "total size",
            vec![big.clone(), big.clone()],
            with(&|l| l.max_total_bytes = 9000),
            "bytes of file content",
        ),
        (
            "path length",
            vec![long],
            with(&|l| l.max_path_bytes = 200),
            "bytes in an entry's path",
        ),
        (
            "xattr count",
            vec![xattrs.clone()],
            with(&|l| l.max_xattrs_per_entry = 2),
            "extended attributes on one entry",
        ),
        (
            "xattr size",
            vec![xattrs],
            with(&|l| l.max_xattr_bytes = 200),
            "bytes in one extended attribute",
        ),
        (
            "pax records",
            vec![huge_pax],
            plain_opts.clone(),
            "tar headers",
        ),
        (
            "layers",
            vec![many.clone(), many.clone(), many],
            with(&|l| l.max_layers = 2),
            "3 layers",
        ),
    ];
    for (what, layers, opts, want) in cases {
        let err = w
            .build(&layers, &ImageConfig::default(), &opts, "out.ext4")
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(
                err,
                RootfsError::Limit { .. } | RootfsError::TooManyLayers { .. }
            ),
            "{what}: {err:?}"
        );
        assert!(err.to_string().contains(want), "{what}: {err}");
    }
    // At the limit is fine.
    w.build(
        &[big],
        &ImageConfig::default(),
        &with(&|l| l.max_file_bytes = 5000),
        "ok.ext4",
    )
    .unwrap();
}

#[test]
fn malformed_streams_are_clear_errors() {
    require_privileged!();
    let mut w = Work::new();
    let good = base().file("data", &[1u8; 3000], 0o644).finish();
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&good).unwrap();
        e.finish().unwrap()
    };
    let zst = zstd::encode_all(&good[..], 3).unwrap();
    let no_end = good[..good.len() - 1024].to_vec();
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"garbage");
    let mut lying = base();
    let mut h = H::new(b"liar", b'0');
    h.size = 100_000;
    lying.raw(&h, b"short");
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("cut in a file", good[..2000].to_vec(), PLAIN, "truncated"),
        ("no end-of-archive", no_end, PLAIN, "truncated"),
        ("size lies", lying.0.clone(), PLAIN, "truncated"),
        ("trailing data", trailing, PLAIN, "after the end-of-archive"),
        ("not gzip", good.clone(), GZIP, "malformed"),
        ("cut gzip", gz[..gz.len() / 2].to_vec(), GZIP, "malformed"),
        (
            "gzip crc",
            {
                let mut g = gz.clone();
                let n = g.len();
                g[n - 6] ^= 0xff;
                g
            },
            GZIP,
            "malformed",
        ),
        ("not zstd", good.clone(), ZSTD, "malformed"),
        ("cut zstd", zst[..zst.len() / 2].to_vec(), ZSTD, "malformed"),
        ("garbage", vec![0x55; 4096], PLAIN, "malformed"),
    ];
    for (what, bytes, media, want) in cases {
        let layer = w.raw_layer(&bytes, media);
        let err = w
            .build(
                &[layer],
                &ImageConfig::default(),
                &w.opts(InitMode::Image),
                "out.ext4",
            )
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(err, RootfsError::Malformed { .. }),
            "{what}: {err:?}"
        );
        assert!(
            err.to_string().to_lowercase().contains(want),
            "{what}: {err}"
        );
    }
    let layer = w.raw_layer(&good, "application/vnd.oci.image.layer.v1.tar+bzip2");
    let err = w
        .build(
            &[layer],
            &ImageConfig::default(),
            &w.opts(InitMode::Image),
            "out.ext4",
        )
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, RootfsError::MediaType { .. }), "{err:?}");
    // The good ones build, in every compression.
    for (i, media) in [PLAIN, GZIP, ZSTD].into_iter().enumerate() {
        let layer = w.layer(&good, media);
        let (img, _) = w
            .build(
                &[layer],
                &ImageConfig::default(),
                &w.opts(InitMode::Image),
                &format!("{i}.ext4"),
            )
            .unwrap();
        assert_eq!(cat(&img, "/data"), vec![1u8; 3000], "{media}");
    }
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "three layers, then every check on the built image"
)]
fn layers_flatten_with_whiteouts_links_owners_devices_and_xattrs() {
    require_privileged!();
    let mut w = Work::new();
    let mut l1 = base();
    l1.dir("usr/", 0o755)
        .dir("usr/sbin/", 0o755)
        .symlink("sbin", "usr/sbin")
        .dir("opt/", 0o755)
        .dir("opt/old/", 0o750)
        .file("opt/old/a", b"a", 0o644)
        .dir("opt/old/sub/", 0o755)
        .file("opt/old/sub/b", b"b", 0o644)
        .file("gone", b"bye", 0o644)
        .dir("gonedir/", 0o755)
        .file("gonedir/x", b"x", 0o644)
        .file_owned("usr/suid", b"#!", 0o4755, 0, 0)
        .file_owned("usr/sgid", b"#!", 0o2711, 0, 50)
        .dir("tmp/", 0o1777)
        .file_owned("home-file", b"mine", 0o600, 1000, 1001)
        .file("shared", b"linked", 0o644)
        .hardlink("shared-again", "shared")
        .file("typechange", b"file first", 0o644)
        .symlink("was-link", "/etc/passwd")
        .dir("dev/", 0o755)
        .node("dev/null", b'3', (1, 3), 0o666)
        .node("dev/sda", b'4', (8, 0), 0o660)
        .node("fifo", b'6', (0, 0), 0o644)
        .pax(&[
            ("SCHILY.xattr.user.hearth", b"yes"),
            ("SCHILY.xattr.trusted.t", b"\x00\x01"),
        ])
        .file("with-xattr", b"x", 0o644);
    let l1 = w.layer(&l1.finish(), GZIP);
    let mut l2 = Tar::default();
    l2.file(".wh.gone", b"", 0o644)
        .file(".wh.gonedir", b"", 0o644)
        // Opaque after a new entry of the same layer: the new entry stays.
        .file("opt/old/new", b"new", 0o644)
        .file("opt/old/.wh..wh..opq", b"", 0o644)
        .hardlink("usr/shared-third", "shared")
        .dir("typechange/", 0o700)
        .file("was-link", b"now a file", 0o644)
        .file(".wh.never-existed", b"", 0o644)
        .file("etc/.wh..wh.plnk", b"", 0o644);
    let l2 = w.layer(&l2.finish(), ZSTD);
    let mut l3 = Tar::default();
    // A whiteout then the same name again in one layer: the layer's own file stays.
    l3.file("gone", b"back", 0o640).file(".wh.gone", b"", 0o644);
    let l3 = w.layer(&l3.finish(), PLAIN);
    let (img, report) = w
        .build(
            &[l1, l2, l3],
            &cmd_config(),
            &w.opts(InitMode::Hearth),
            "img.ext4",
        )
        .unwrap();
    let st = |p: &str| stat(&img, p);
    assert!(st("/gonedir").is_none() && st("/opt/old/a").is_none() && st("/opt/old/sub").is_none());
    assert_eq!(cat(&img, "/gone"), b"back");
    assert_eq!(st("/gone").unwrap().mode, 0o640);
    assert_eq!(cat(&img, "/opt/old/new"), b"new");
    assert_eq!(st("/opt/old").unwrap().mode, 0o750);
    let shared = st("/shared").unwrap();
    assert_eq!(shared.links, 3, "hard links across layers: {shared:?}");
    assert_eq!(cat(&img, "/usr/shared-third"), b"linked");
    assert_eq!(st("/usr/suid").unwrap().mode, 0o4755);
    let sgid = st("/usr/sgid").unwrap();
    assert_eq!((sgid.mode, sgid.gid), (0o2711, 50));
    assert_eq!(st("/tmp").unwrap().mode, 0o1777);
    let home = st("/home-file").unwrap();
    assert_eq!((home.uid, home.gid, home.mode), (1000, 1001, 0o600));
    assert_eq!(st("/typechange").unwrap().kind, "directory");
    let was = st("/was-link").unwrap();
    assert_eq!((was.kind.as_str(), was.size), ("regular", 10));
    let null = st("/dev/null").unwrap();
    assert_eq!(
        (null.kind.as_str(), null.mode, null.device.as_deref()),
        ("character", 0o666, Some("01:03"))
    );
    let sda = st("/dev/sda").unwrap();
    assert_eq!(
        (sda.kind.as_str(), sda.device.as_deref()),
        ("block", Some("08:00"))
    );
    assert_eq!(st("/fifo").unwrap().kind, "FIFO");
    let ea = ext4_tree::debugfs(&img, "ea_list /with-xattr");
    assert!(ea.contains("user.hearth") && ea.contains("yes"), "{ea}");
    assert!(ea.contains("trusted.t"), "{ea}");
    assert_eq!(st("/sbin").unwrap().link_dest.as_deref(), Some("usr/sbin"));
    // The agent went where the guest's /sbin leads, and the spec beside /etc.
    let init = st("/usr/sbin/hearth-init").unwrap();
    assert_eq!(
        (init.kind.as_str(), init.mode, init.uid, init.gid),
        ("regular", 0o755, 0, 0)
    );
    assert_eq!(
        cat(&img, "/usr/sbin/hearth-init"),
        fs::read(w.agent()).unwrap()
    );
    let spec: hearth_proto::init::InitSpec =
        serde_json::from_slice(&cat(&img, hearth_proto::init::INIT_SPEC_PATH)).unwrap();
    assert_eq!(spec.argv, ["/bin/sh", "-c", "echo hi"]);
    assert_eq!(spec.env[1], "A=1");
    assert!(spec.env[0].starts_with("PATH="));
    assert_eq!(spec.working_dir.as_deref(), Some("/srv"));
    assert_eq!(spec.user.as_deref(), Some("1000:1000"));
    assert_eq!(st("/etc/hearth").unwrap().mode, 0o755);
    assert!(ext4_tree::debugfs(&img, "ls -p /etc")
        .lines()
        .all(|l| !l.contains(".wh.")));
    assert_eq!(report.fs_bytes, fs::metadata(&img).unwrap().len());
    assert!(report.files > 20, "{report:?}");
}

#[test]
fn init_modes_and_sizes() {
    require_privileged!();
    let mut w = Work::new();
    let layer = w.layer(
        &base().file("data", &vec![3u8; 1 << 20], 0o644).finish(),
        GZIP,
    );
    // --init image: nothing injected.
    let (img, rep) = w
        .build(
            std::slice::from_ref(&layer),
            &ImageConfig::default(),
            &w.opts(InitMode::Image),
            "image.ext4",
        )
        .unwrap();
    assert!(stat(&img, "/sbin/hearth-init").is_none() && stat(&img, "/etc/hearth").is_none());
    assert!(rep.fs_bytes >= rep.content_bytes + (8 << 20), "{rep:?}");
    // hearth's init needs a command, and a static agent.
    let err = w
        .build(
            std::slice::from_ref(&layer),
            &ImageConfig::default(),
            &w.opts(InitMode::Hearth),
            "nocmd.ext4",
        )
        .unwrap_err();
    assert!(matches!(err, RootfsError::NoCommand), "{err:?}");
    // The ordinary (dynamically linked) debug build of the agent; not this test binary, whose
    // debug build can pass the size bound first.
    let mut dynamic = w.opts(InitMode::Hearth);
    dynamic.agent_bin = hearth_testkit::fc_sim::agent_binary();
    let err = w
        .build(
            std::slice::from_ref(&layer),
            &cmd_config(),
            &dynamic,
            "dyn.ext4",
        )
        .unwrap_err();
    assert!(err.to_string().contains("dynamically linked"), "{err}");
    let mut missing = w.opts(InitMode::Hearth);
    missing.agent_bin = w.path("no-agent");
    assert!(w
        .build(
            std::slice::from_ref(&layer),
            &cmd_config(),
            &missing,
            "miss.ext4"
        )
        .is_err());
    // An explicit size: used as given, refused when too small.
    let mut sized = w.opts(InitMode::Hearth);
    sized.size = Some(64 << 20);
    let (img, rep) = w
        .build(
            std::slice::from_ref(&layer),
            &cmd_config(),
            &sized,
            "sized.ext4",
        )
        .unwrap();
    assert_eq!(
        (rep.fs_bytes, fs::metadata(&img).unwrap().len()),
        (64 << 20, 64 << 20)
    );
    sized.size = Some(1 << 20);
    let err = w
        .build(
            std::slice::from_ref(&layer),
            &cmd_config(),
            &sized,
            "small.ext4",
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            RootfsError::TooSmall {
                size: 1_048_576,
                ..
            }
        ),
        "{err:?}"
    );
    // The scratch directory must be empty, the output new.
    let scratch = w.path("dirty");
    fs::create_dir(&scratch).unwrap();
    fs::write(scratch.join("x"), b"").unwrap();
    let r = build_rootfs(
        std::slice::from_ref(&layer),
        &cmd_config(),
        &w.opts(InitMode::Image),
        &scratch,
        &w.path("d.ext4"),
    );
    assert!(matches!(r, Err(RootfsError::Scratch { .. })), "{r:?}");
    fs::create_dir(w.path("fresh")).unwrap();
    let r = build_rootfs(
        &[layer],
        &cmd_config(),
        &w.opts(InitMode::Image),
        &w.path("fresh"),
        &img,
    );
    assert!(matches!(r, Err(RootfsError::OutExists { .. })), "{r:?}");
    assert_eq!(fs::metadata(&img).unwrap().len(), 64 << 20);
}

/// Runs umoci, panicking with its output on failure.
fn umoci(args: &[&str]) {
    let out = Command::new("umoci")
        .args(args)
        .output()
        .expect("run umoci");
    assert!(
        out.status.success(),
        "umoci {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The layers of `layout`'s image `tag`, from its index and manifest.
fn oci_layers(layout: &Path) -> Vec<LayerBlob> {
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(manifest)).unwrap()).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let digest = l["digest"].as_str().unwrap().to_owned();
            LayerBlob {
                path: blob(&digest),
                media_type: l["mediaType"].as_str().unwrap().to_owned(),
                size: l["size"].as_u64().unwrap(),
                digest,
            }
        })
        .collect()
}

#[test]
fn the_ext4_tree_equals_umoci_unpack() {
    require_privileged!();
    let busybox = Path::new("/bin/busybox");
    if Command::new("umoci").arg("--version").output().is_err() || !busybox.exists() {
        hearth_testkit::skip!(
            "SKIP the_ext4_tree_equals_umoci_unpack: needs umoci and busybox-static"
        );
        return;
    }
    let w = Work::new();
    let layout = w.path("oci");
    let image = format!("{}:t", layout.display());
    umoci(&["init", "--layout", layout.to_str().unwrap()]);
    umoci(&["new", "--image", &image]);
    // Layer 1, hand-made: busybox and a bit of everything.
    let bb = fs::read(busybox).unwrap();
    let mut t = Tar::default();
    t.dir("bin/", 0o755)
        .file("bin/busybox", &bb, 0o755)
        .hardlink("bin/ash", "bin/busybox")
        .symlink("bin/sh", "busybox")
        .symlink("bin/ls", "/bin/busybox")
        .dir("etc/", 0o755)
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644)
        .file_owned("etc/secret", b"s", 0o600, 1000, 1000)
        .dir("usr/", 0o755)
        .dir("usr/bin/", 0o755)
        .file("usr/bin/suid", b"#!/bin/sh\n", 0o4755)
        .dir("tmp/", 0o1777)
        .dir("opt/", 0o755)
        .dir("opt/old/", 0o755)
        .file("opt/old/a", b"a", 0o644)
        .dir("opt/old/sub/", 0o755)
        .file("opt/old/sub/b", b"b", 0o644)
        .dir("var/", 0o755)
        .file("var/gone", b"bye", 0o644)
        .dir("data/", 0o755)
        .file("data/x", b"x", 0o644)
        .dir("dev/", 0o755)
        .node("dev/null", b'3', (1, 3), 0o666)
        .node("run-fifo", b'6', (0, 0), 0o600);
    let l1 = w.path("l1.tar");
    fs::write(&l1, t.finish()).unwrap();
    umoci(&["raw", "add-layer", "--image", &image, l1.to_str().unwrap()]);
    // Layer 2, hand-made: whiteouts, an opaque directory, a hard link to layer 1, type changes.
    let mut t = Tar::default();
    t.file("var/.wh.gone", b"", 0o644)
        .file("opt/old/.wh..wh..opq", b"", 0o644)
        .file("opt/old/new", b"new", 0o644)
        .hardlink("usr/bin/bb", "bin/busybox")
        .file("data", b"now a file", 0o644)
        .file("bin/ls", b"not a link", 0o755)
        .file(
            "etc/passwd",
            b"root:x:0:0::/root:/bin/ash\nuser:x:1000:1000::/:/bin/sh\n",
            0o644,
        );
    let l2 = w.path("l2.tar");
    fs::write(&l2, t.finish()).unwrap();
    umoci(&["raw", "add-layer", "--image", &image, l2.to_str().unwrap()]);
    // Layer 3, made by umoci itself from a changed bundle (its own whiteouts).
    let bundle = w.path("bundle");
    umoci(&["unpack", "--image", &image, bundle.to_str().unwrap()]);
    let rootfs = bundle.join("rootfs");
    fs::remove_file(rootfs.join("etc/passwd")).unwrap();
    fs::remove_dir_all(rootfs.join("tmp")).unwrap();
    fs::create_dir_all(rootfs.join("srv/www")).unwrap();
    fs::write(rootfs.join("srv/www/index.html"), b"<h1>hi</h1>").unwrap();
    std::os::unix::fs::symlink("../srv/www", rootfs.join("etc/www")).unwrap();
    umoci(&["repack", "--image", &image, bundle.to_str().unwrap()]);
    umoci(&["config", "--image", &image, "--config.cmd", "/bin/sh"]);
    // What umoci makes of it.
    let reference = w.path("reference");
    umoci(&["unpack", "--image", &image, reference.to_str().unwrap()]);
    // What hearth makes of it.
    let layers = oci_layers(&layout);
    assert_eq!(layers.len(), 3, "{layers:?}");
    let (img, _) = w
        .build(
            &layers,
            &ImageConfig::default(),
            &w.opts(InitMode::Image),
            "umoci.ext4",
        )
        .unwrap();
    let ours = ext4_tree(&img, &w.path("dump"));
    let theirs = host_tree(&reference.join("rootfs"));
    assert!(theirs.len() > 20, "{theirs:?}");
    for (path, node) in &theirs {
        assert_eq!(ours.get(path), Some(node), "{path} differs");
    }
    for path in ours.keys() {
        assert!(
            theirs.contains_key(path),
            "{path} is only in hearth's image"
        );
    }
    // The cases that make the comparison meaningful are in it.
    assert!(!theirs.contains_key("var/gone") && !theirs.contains_key("tmp"));
    assert!(!theirs.contains_key("opt/old/a") && !theirs.contains_key("opt/old/sub"));
    assert_eq!(theirs["opt/old/new"].kind, 'f');
    assert_eq!(theirs["bin/busybox"].nlink, 3);
    assert_eq!(theirs["usr/bin/suid"].mode, 0o4755);
    assert_eq!(theirs["data"].kind, 'f');
    assert_eq!(theirs["etc/secret"].uid, 1000);
    assert_eq!(theirs["dev/null"].kind, 'c');
}

/// The agent `scripts/build-agent-static.sh` makes (built here, or `HEARTH_STATIC_AGENT`) passes the static
/// check and lands byte for byte as `/sbin/hearth-init`; the ordinary (dynamic) test build of
/// the agent is refused.
#[test]
fn the_static_agent_is_injected_and_a_dynamic_one_refused() {
    require_privileged!();
    let agent = hearth_testkit::fc_sim::static_agent_binary();
    let mut w = Work::new();
    let layer = w.layer(&base().finish(), GZIP);
    let mut opts = w.opts(InitMode::Hearth);
    opts.agent_bin.clone_from(&agent);
    let (img, _) = w
        .build(
            std::slice::from_ref(&layer),
            &cmd_config(),
            &opts,
            "static.ext4",
        )
        .unwrap();
    assert_eq!(cat(&img, "/sbin/hearth-init"), fs::read(&agent).unwrap());
    opts.agent_bin = hearth_testkit::fc_sim::agent_binary();
    let err = w
        .build(&[layer], &cmd_config(), &opts, "dynamic.ext4")
        .unwrap_err();
    assert!(err.to_string().contains("dynamically linked"), "{err}");
}

//! A real OCI registry for tests: Debian's `docker-registry` (the CNCF distribution registry)
//! on 127.0.0.1:5000 inside a network namespace the test made, its storage and config in a
//! temporary directory, optionally behind htpasswd basic auth; test images built with
//! `umoci` from `busybox-static` and files the test writes, pushed with `skopeo`. The
//! registry's access log tells which blobs were fetched.
#![expect(
    clippy::disallowed_methods,
    reason = "the fixture runs real tools (docker-registry, skopeo, umoci, htpasswd)"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::NetNs;

/// Where the registry listens, inside its namespace.
pub const ADDR: &str = "127.0.0.1:5000";

/// The tools the registry tests need, with the Debian package of each.
const TOOLS: &[(&str, &str)] = &[
    ("docker-registry", "docker-registry"),
    ("skopeo", "skopeo"),
    ("umoci", "umoci"),
    ("htpasswd", "apache2-utils"),
    ("busybox", "busybox-static"),
];

/// True when every tool is installed; otherwise a SKIP line naming the missing packages (a
/// failure under `HEARTH_REQUIRE_PRIVILEGED=1`, where CI has installed them).
pub fn tools_present(test: &str) -> bool {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(bin, _)| {
            !std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        })
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("HEARTH_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
        "{test}: needs the packages {missing:?} (scripts/install-deps.sh installs them)"
    );
    hearth_testkit::skip!("SKIP {test}: needs the packages {missing:?} (scripts/install-deps.sh)");
    false
}

/// A running registry; stopped (by its pid) when dropped.
pub struct TestRegistry {
    dir: tempfile::TempDir,
    child: Child,
    ns: String,
    /// Credentials it wants, if any.
    pub creds: Option<(String, String)>,
}

impl TestRegistry {
    /// Starts a registry inside `ns`, with basic auth for `creds` when given.
    pub fn start(ns: &NetNs, creds: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut auth = String::new();
        if let Some((user, pass)) = creds {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .unwrap();
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            fs::write(&file, &out.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: hearth-test\n    path: {}\n",
                file.display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {ADDR}\n{auth}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "docker-registry", "serve"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = TestRegistry {
            dir,
            child,
            ns: ns.name().to_owned(),
            creds: creds.map(|(u, p)| (u.to_owned(), p.to_owned())),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !reg.log().contains("listening on") {
            assert!(
                Instant::now() < deadline,
                "registry did not start: {}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        reg
    }

    /// The registry's log (its access log included).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The digests of every blob GET it answered, in order.
    pub fn blob_gets(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| {
                let rest = l.split("\"GET /v2/").nth(1)?;
                let path = rest.split(' ').next()?;
                let digest = path.split("/blobs/").nth(1)?;
                Some(digest.to_owned())
            })
            .collect()
    }

    /// The file holding blob `digest` (`sha256:<hex>`) in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Pushes `oci:<layout>:<tag>` to `<repo>:<tag>` here (`--all`: indexes with every
    /// platform).
    pub fn push(&self, layout: &Path, tag: &str, repo: &str) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "skopeo", "copy", "--all", "-q"])
            .arg("--dest-tls-verify=false");
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        let out = cmd
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{ADDR}/{repo}:{tag}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `umoci` with `args`, panicking with its stderr on failure.
pub fn umoci(args: &[&str]) {
    let out = Command::new("umoci").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "umoci {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An OCI layout at `<dir>/layout` with two tags sharing their first layer: `v1` = busybox
/// (`/bin/busybox`, `/bin/sh` -> busybox) and `v2` = v1 + `/hello` (`hi`) + `extra` bytes
/// in `/extra.bin`; `v1` runs `/bin/sh -c "echo v1"`, `v2` `/bin/cat /hello`.
pub fn build_layout(dir: &Path, extra: usize) -> PathBuf {
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    let l = layout.to_str().unwrap();
    let b = bundle.to_str().unwrap();
    umoci(&["init", "--layout", l]);
    umoci(&["new", "--image", &format!("{l}:base")]);
    umoci(&["unpack", "--image", &format!("{l}:base"), b]);
    let root = bundle.join("rootfs");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    umoci(&[
        "repack",
        "--refresh-bundle",
        "--image",
        &format!("{l}:v1"),
        b,
    ]);
    umoci(&[
        "config",
        "--image",
        &format!("{l}:v1"),
        "--config.cmd",
        "/bin/sh",
        "--config.cmd",
        "-c",
        "--config.cmd",
        "echo v1",
    ]);
    fs::write(root.join("hello"), "hi\n").unwrap();
    let noise: Vec<u8> = (0..extra).map(|i| (i * 7919 % 251) as u8).collect();
    fs::write(root.join("extra.bin"), noise).unwrap();
    umoci(&[
        "repack",
        "--refresh-bundle",
        "--image",
        &format!("{l}:v2"),
        b,
    ]);
    umoci(&[
        "config",
        "--image",
        &format!("{l}:v2"),
        "--config.cmd",
        "/bin/cat",
        "--config.cmd",
        "/hello",
    ]);
    layout
}

//! A real hearthd for the operator's tests: the `hearthd` binary with `firecracker-sim` as
//! its VMM, in a private network namespace, with a kernel and a root filesystem imported.
//! Use with `mod common; use common::Host;`.
#![expect(
    clippy::disallowed_methods,
    reason = "starts hearthd and hearthctl, and makes a root filesystem with mkfs"
)]
#![allow(dead_code, reason = "each test file uses a part")]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hearth_testkit::{fc_sim, vmlinux, wait_until, NetNs};

/// A binary of this workspace, next to the test's own directory (`target/<profile>/`).
fn workspace_bin(name: &str) -> PathBuf {
    let sim = fc_sim::sim_binary();
    let bin = sim.with_file_name(name);
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p hearth --bins` first",
        bin.display()
    );
    bin
}

/// hearthd in its own namespace, killed on drop.
pub struct Host {
    _ns: NetNs,
    dir: tempfile::TempDir,
    daemon: Child,
}

impl Host {
    pub fn start() -> Host {
        // Short: VM socket paths under the run directory must fit in 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("ho")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path().display().to_string();
        let ns = NetNs::new("ho");
        let config = format!(
            "data_dir = \"{d}/data\"\nrun_dir = \"{d}/run\"\nfirecracker_bin = \"{}\"\n\
             [network]\npool_size = 1\n[dns]\nupstreams = [\"127.0.0.1:53\"]\n\
             [api]\nsocket = \"{d}/hearthd.sock\"\n\
             [vm]\nready_timeout_secs = 5\nshutdown_grace_secs = 2\nterm_grace_secs = 2\n",
            fc_sim::sim_binary().display()
        );
        std::fs::write(dir.path().join("hearthd.toml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("hearthd.log")).unwrap();
        let daemon = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(workspace_bin("hearthd"))
            .arg("--config")
            .arg(dir.path().join("hearthd.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let host = Host {
            _ns: ns,
            dir,
            daemon,
        };
        let up = wait_until(Duration::from_secs(30), || host.ctl(&["health"]));
        assert!(up, "hearthd did not come up:\n{}", host.log());
        vmlinux::write_minimal_vmlinux(&host.path("vmlinux"));
        let rootfs = host.path("rootfs.ext4");
        std::fs::File::create(&rootfs)
            .and_then(|f| f.set_len(16 << 20))
            .unwrap();
        assert!(Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&rootfs)
            .status()
            .unwrap()
            .success());
        for (name, file, kind) in [
            ("vmlinux", "vmlinux", "kernel"),
            ("base", "rootfs.ext4", "rootfs"),
        ] {
            let file = host.path(file).display().to_string();
            assert!(
                host.ctl(&["image", "import", name, &file, "--kind", kind]),
                "import {name}:\n{}",
                host.log()
            );
        }
        host
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn socket(&self) -> PathBuf {
        self.path("hearthd.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("hearthd.log")).unwrap_or_default()
    }

    fn ctl(&self, args: &[&str]) -> bool {
        Command::new(workspace_bin("hearthctl"))
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // SIGTERM, so hearthd stops its VMMs; then reap.
        let pid = nix::unistd::Pid::from_raw(self.daemon.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.daemon.wait();
    }
}

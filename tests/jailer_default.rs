//! The default `[jailer] enabled = "auto"` end to end (issue 16): hearthd jails every VMM where
//! the host can and otherwise runs them unjailed, saying why in its log, in `hearthd --check`
//! and in `GET /v1/node`.
//!
//! - With the simulator (dynamically linked, so it cannot run in a jail) the default config runs
//!   VMs unjailed and names the reason, even with a `jailer` in hearthd's `PATH`; `enabled =
//!   true` refuses to start instead.
//! - With the real Firecracker and jailer (`HEARTH_FIRECRACKER_REAL`, `HEARTH_JAILER_REAL` or
//!   `jailer` beside that Firecracker; else a SKIP line), a `[jailer]` section giving only
//!   `jailer_bin` and `chroot_base_dir` (never the host's `PATH`) jails the VM: its VMM runs
//!   as the first uid of the default range, in its jail.
//!
//! Root only (`HEARTH_REQUIRE_PRIVILEGED=1`).
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive real binaries (hearthd, hearthctl, nsenter, timeout)"
)]

mod common;
use common::daemon;
use common::jails::*;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use daemon::{HearthHost, Leaks};
use hearth_testkit::{fc_sim, NetNs};
use serde_json::Value;

/// The text `hearthctl node` prints (not JSON).
fn node_text(h: &HearthHost) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hearthctl"))
        .arg("--socket")
        .arg(h.path("hearthd.sock"))
        .arg("node")
        .output()
        .expect("run hearthctl");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The (device, inode) of what `pid` sees as `/`.
fn root_of(pid: u64) -> (u64, u64) {
    let m = std::fs::metadata(format!("/proc/{pid}/root/")).expect("root");
    (m.dev(), m.ino())
}

/// A directory holding an executable `jailer` (that fails if ever run).
fn fake_jailer_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let jailer = dir.path().join("jailer");
    hearth_testkit::fc_sim::write_executable(&jailer, "#!/bin/sh\nexit 1\n");
    dir
}

#[test]
fn the_default_config_runs_the_simulator_unjailed_and_says_why() {
    require_privileged!();
    // A jailer in PATH changes nothing: the simulator cannot run in a jail.
    let bin = fake_jailer_dir();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let h = HearthHost::start(&[("PATH", &path)], "");
    let sim = fc_sim::sim_binary();

    let node = h.ctl_ok(&["node"]);
    assert_eq!(node["jailed"], false, "{node}");
    let reasons: Vec<&str> = node["unjailed_reasons"]
        .as_array()
        .unwrap_or_else(|| panic!("no unjailed_reasons: {node}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("firecracker statically linked: ")
                && r.contains("is dynamically linked")
                && r.contains(sim.file_name().unwrap().to_str().unwrap())),
        "{reasons:?}"
    );
    assert!(
        !reasons.iter().any(|r| r.starts_with("jailer binary")),
        "the jailer in PATH was found: {reasons:?}"
    );
    let log = h.log();
    assert!(log.contains("VMMs run unjailed"), "{log}");
    assert!(log.contains("VMMs cannot be jailed here"), "{log}");
    assert!(log.contains("is dynamically linked"), "{log}");
    let text = node_text(&h);
    assert!(text.contains("VMMs: unjailed"), "{text}");
    assert!(
        text.contains("because firecracker statically linked"),
        "{text}"
    );

    // The VM's VMM runs as root with the host's root: unjailed.
    let a = h.ctl_ok(&[
        "vm", "create", "a", "--kernel", "vmlinux", "--rootfs", "base",
    ]);
    assert_eq!(a["state"], "running", "{a}");
    let pid = a["pid"].as_u64().expect("pid");
    assert_eq!(status_field(pid, "Uid"), "0 0 0 0");
    assert_eq!(root_of(pid), root_of(std::process::id().into()));
    h.ctl_ok(&["vm", "rm", "a"]);
    assert!(
        common::wait_until(Duration::from_secs(10), || h.leaks() == Leaks::none()),
        "{:?}",
        h.leaks()
    );
}

/// `hearthd` (`args` after the config) in a namespace of its own, bounded by `timeout`.
fn hearthd(ns: &NetNs, config: &Path, args: &[&str]) -> (bool, String) {
    let mut argv = vec![
        "timeout",
        "20",
        env!("CARGO_BIN_EXE_hearthd"),
        "--config",
        config.to_str().unwrap(),
    ];
    argv.extend(args);
    let out = ns.exec(&argv);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_prints_the_decision_and_true_refuses_where_jailing_is_impossible() {
    require_privileged!();
    let ns = NetNs::new("jd");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let sim = fc_sim::sim_binary();
    let base = format!(
        "data_dir = \"{d}/data\"\nrun_dir = \"{d}/run\"\nfirecracker_bin = \"{}\"\n\
         [api]\nsocket = \"{d}/hearthd.sock\"\n",
        sim.display()
    );
    let auto = dir.path().join("auto.toml");
    std::fs::write(&auto, &base).unwrap();
    let (ok, out) = hearthd(&ns, &auto, &["--check"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("# jailing ([jailer] enabled = \"auto\")"),
        "{out}"
    );
    assert!(out.contains("VMMs run UNJAILED"), "{out}");
    assert!(out.contains("is dynamically linked"), "{out}");
    assert!(
        out.contains("enabled = \"auto\""),
        "the effective config: {out}"
    );

    let on = dir.path().join("on.toml");
    std::fs::write(&on, format!("{base}[jailer]\nenabled = true\n")).unwrap();
    let (ok, out) = hearthd(&ns, &on, &["--check"]);
    assert!(ok, "{out}");
    assert!(out.contains("hearthd refuses to start"), "{out}");
    assert!(
        out.contains("MISSING  firecracker statically linked"),
        "{out}"
    );
    // Started for real, it refuses (before touching anything) naming the blocker.
    let (ok, out) = hearthd(&ns, &on, &[]);
    assert!(!ok, "hearthd started with jailing impossible: {out}");
    assert!(out.contains("firecracker statically linked"), "{out}");
    assert!(!Path::new(&format!("{d}/hearthd.sock")).exists());

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, format!("{base}[jailer]\nenabled = \"yes\"\n")).unwrap();
    let (ok, out) = hearthd(&ns, &bad, &["--check"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("jailer.enabled") && out.contains("true, false or \"auto\""),
        "{out}"
    );
}

#[test]
fn the_default_config_jails_the_real_firecracker() {
    let Some((fc, jailer)) = real_binaries(module_path!()) else {
        return;
    };
    require_privileged!();
    let first = hearth::config::JailerConfig::default().uid_range[0];
    // A short chroot base (jailed sockets must fit in 108 bytes), removed by the guard.
    let base = tempfile::Builder::new()
        .prefix("hd")
        .tempdir_in("/tmp")
        .unwrap();
    // Dropped after hearthd, before the chroot base: strays killed before their jails go.
    let _cleanup = JailedVmms {
        uids: first..=first + 9,
    };
    // No `enabled`: the default. jailer_bin so the host's PATH does not matter.
    let cfg = format!(
        "\n[jailer]\njailer_bin = \"{}\"\nchroot_base_dir = \"{}\"\n",
        jailer.display(),
        base.path().display()
    );
    let mut h = HearthHost::start_jailed(&fc, &cfg);
    assert!(h.log().contains("VMMs run jailed"), "{}", h.log());
    let node = h.ctl_ok(&["node"]);
    assert_eq!(node["jailed"], true, "{node}");
    assert!(node.get("unjailed_reasons").is_none(), "{node}");
    assert!(node_text(&h).contains("VMMs: jailed"));

    let a = h.create_running("a");
    let pid = a["pid"].as_u64().expect("pid");
    assert_eq!(
        status_field(pid, "Uid"),
        format!("{first} {first} {first} {first}"),
        "runs as the first leased uid"
    );
    assert!(
        status_field(pid, "NSpid").ends_with(" 1"),
        "new pid namespace"
    );
    assert_eq!(
        root_of(pid),
        inode(&jail_root(base.path(), first)),
        "its root is its jail"
    );

    // hearthd crashes, and comes back where it cannot jail (its jailer gone): "auto" must not
    // fall back under a jailed VMM it could not adopt. It refuses, naming the VM and the way
    // out, and leaves the VMM alone.
    h.kill9();
    let config = h.path("hearthd.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    let gone = base.path().join("no-jailer");
    std::fs::write(
        &config,
        good.replace(&jailer.display().to_string(), &gone.display().to_string()),
    )
    .unwrap();
    let out = Command::new("timeout")
        .arg("20")
        .arg("nsenter")
        .arg(format!("--net=/run/netns/{}", h.ns.name()))
        .arg(env!("CARGO_BIN_EXE_hearthd"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run hearthd");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "hearthd started unjailed: {err}");
    assert!(
        err.contains("VMs started jailed may still run (a)") && err.contains("no-jailer"),
        "{err}"
    );
    assert!(alive(pid), "the jailed VMM was left alone");
    // Its jailer back, hearthd adopts the jailed VMM.
    std::fs::write(&config, good).unwrap();
    h.launch();
    let adopted = h.ctl_ok(&["vm", "get", "a"]);
    assert_eq!(adopted["state"], "running", "{adopted}\n{}", h.log());
    assert_eq!(adopted["pid"].as_u64(), Some(pid), "the same VMM, adopted");

    h.ctl_ok(&["vm", "rm", "a"]);
    assert!(!alive(pid));
    assert_jail_gone(base.path(), first);
    assert!(
        common::wait_until(Duration::from_secs(10), || h.leaks() == Leaks::none()),
        "{:?}\n{}",
        h.leaks(),
        h.log()
    );
}

//! hearthctl end to end: the real binary against the API over the fake supervisor, and
//! without a daemon. Checks output and exit codes (0 ok, 1 API error, 2 usage, 3 unreachable).
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive real tools and binaries (ip, mkfs, hearthd, hearthctl) and clean up their own directories"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hearth::api::testing::TestServer;
use hearth_proto::api::{Event, VmInfo, VmState};
use hearth_proto::api_images::ImageInfo;

fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearthctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("HEARTH_SOCKET")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn failed(out: &Output, code: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn kernel_file(dir: &Path) -> PathBuf {
    let mut elf = vec![0u8; 64 * 1024];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2;
    elf[5] = 1;
    elf[18..20].copy_from_slice(&62u16.to_le_bytes());
    let p = dir.join("vmlinux");
    std::fs::write(&p, elf).unwrap();
    p
}

#[test]
fn no_daemon_is_a_clear_distinct_failure() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("hearthd.sock");
    let err = failed(&ctl(&sock, &["vm", "list"]), 3);
    assert_eq!(
        err.trim(),
        format!(
            "hearthctl: hearthd is not running (no socket at {})",
            sock.display()
        )
    );
    // A stale socket file: nobody listens.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let err = failed(&ctl(&sock, &["image", "list"]), 3);
    assert!(
        err.contains("hearthd is not running (connection refused at"),
        "{err}"
    );

    // HEARTH_SOCKET is the default socket.
    let out = Command::new(env!("CARGO_BIN_EXE_hearthctl"))
        .args(["vm", "list"])
        .env("HEARTH_SOCKET", dir.path().join("other.sock"))
        .output()
        .unwrap();
    assert!(failed(&out, 3).contains("other.sock"));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("hearthd.sock");
    failed(&ctl(&sock, &["vm", "list", "--label", "nolabel"]), 2);
    failed(&ctl(&sock, &["vm", "wait", "a", "--state", "sleeping"]), 2);
    failed(
        &ctl(&sock, &["image", "import", "k", "/x", "--kind", "initrd"]),
        2,
    );
    // The spec is checked before anything is sent (no daemon needed to see it).
    let err = failed(
        &ctl(
            &sock,
            &["vm", "create", "Bad_Name", "--kernel", "k", "--rootfs", "r"],
        ),
        2,
    );
    assert!(err.contains("`name`"), "{err}");
}

#[test]
#[expect(clippy::too_many_lines, reason = "one CLI session, read top to bottom")]
fn images_and_vms_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), |_| {}).unwrap();
    let sock = s.socket.clone();
    let kernel = kernel_file(dir.path());

    // Images.
    let out = ok(&ctl(
        &sock,
        &[
            "image",
            "import",
            "k",
            kernel.to_str().unwrap(),
            "--kind",
            "kernel",
        ],
    ));
    assert!(
        out.starts_with("Imported k (kernel elf, 64.0 KiB) in "),
        "{out}"
    );
    let sha = out.lines().nth(1).unwrap().strip_prefix("sha256 ").unwrap();
    assert_eq!(sha.len(), 64);
    let out = ok(&ctl(&sock, &["image", "list"]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME  KIND    FORMAT  SIZE"), "{out}");
    assert!(
        lines[1].starts_with("k     kernel  elf     64.0 KiB"),
        "{out}"
    );
    assert!(lines[1].contains(&sha[..12]));
    let list: Vec<ImageInfo> =
        serde_json::from_str(&ok(&ctl(&sock, &["--json", "image", "list"]))).unwrap();
    assert_eq!(list[0].sha256, sha);
    let err = failed(
        &ctl(
            &sock,
            &[
                "image",
                "import",
                "k",
                kernel.to_str().unwrap(),
                "--kind",
                "kernel",
            ],
        ),
        1,
    );
    assert!(err.contains("Image k already exists (conflict)"), "{err}");

    // VMs.
    let out = ok(&ctl(
        &sock,
        &[
            "vm",
            "create",
            "web",
            "--kernel",
            "k",
            "--rootfs",
            "r",
            "--vcpus",
            "2",
            "--memory",
            "256",
            "--nat",
            "--label",
            "role=front",
            "--label",
            "tier=1",
        ],
    ));
    assert!(out.contains("state:       running"), "{out}");
    assert!(out.contains("labels:      role=front,tier=1"), "{out}");
    let vm: VmInfo =
        serde_json::from_str(&ok(&ctl(&sock, &["--json", "vm", "get", "web"]))).unwrap();
    assert_eq!(
        (
            vm.spec.vcpus,
            vm.spec.memory_mib,
            vm.nat,
            vm.spec.ready_probe
        ),
        (2, 256, true, true)
    );
    ok(&ctl(
        &sock,
        &[
            "vm",
            "create",
            "db",
            "--kernel",
            "k",
            "--rootfs",
            "r",
            "--no-ready-probe",
        ],
    ));

    let out = ok(&ctl(&sock, &["vm", "list"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("NAME  STATE    IP"), "{out}");
    assert!(lines[1].starts_with("db    running  172.30.0."), "{out}");
    let out = ok(&ctl(&sock, &["vm", "list", "--label", "role=front"]));
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("web"));

    assert_eq!(
        ok(&ctl(&sock, &["vm", "stop", "web"])).trim(),
        "web: stopped"
    );
    let err = failed(&ctl(&sock, &["vm", "stop", "web"]), 1);
    assert!(err.contains("HTTP 409, invalid_state"), "{err}");
    assert_eq!(
        ok(&ctl(&sock, &["vm", "nat", "web", "off"])).trim(),
        "web: NAT off"
    );
    assert_eq!(
        ok(&ctl(&sock, &["vm", "wait", "web", "--state", "stopped"])).trim(),
        "web: stopped"
    );
    let err = failed(
        &ctl(
            &sock,
            &[
                "vm",
                "wait",
                "web",
                "--state",
                "running",
                "--timeout",
                "100ms",
            ],
        ),
        1,
    );
    assert!(err.contains("HTTP 408"), "{err}");
    let err = failed(
        &ctl(
            &sock,
            &["vm", "wait", "web", "--state", "running", "--timeout", "1y"],
        ),
        1,
    );
    assert!(err.contains("`timeout`"), "{err}");
    for verb in ["start", "restart", "kill"] {
        ok(&ctl(&sock, &["vm", verb, "web"]));
    }
    let err = failed(&ctl(&sock, &["vm", "get", "nope"]), 1);
    assert_eq!(
        err.trim(),
        "hearthctl: No VM named \"nope\" (HTTP 404, not_found)"
    );

    // In use: the image stays.
    let err = failed(&ctl(&sock, &["image", "rm", "k"]), 1);
    assert!(err.contains("in use"), "{err}");

    // Events, as a table and as JSON lines.
    let out = ok(&ctl(&sock, &["events", "--since", "1"]));
    assert!(
        out.lines().next().unwrap().trim_start().starts_with("2  "),
        "{out}"
    );
    let out = ok(&ctl(&sock, &["--json", "events"]));
    let events: Vec<Event> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.first().map(|e| e.seq), Some(1));
    let last = events.last().unwrap().seq;

    // Follow: the replay after --since, then a live event.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_hearthctl"))
        .arg("--socket")
        .arg(&sock)
        .args([
            "--json",
            "events",
            "--follow",
            "--since",
            &(last - 1).to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let first: Event = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first.seq, last);
    ok(&ctl(&sock, &["vm", "rm", "db"]));
    let live: Event = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        (live.seq, live.vm.as_str(), live.state),
        (last + 1, "db", VmState::Deleting)
    );
    follow.kill().unwrap();
    follow.wait().unwrap();

    assert_eq!(ok(&ctl(&sock, &["vm", "rm", "web"])).trim(), "Deleted web");
    assert_eq!(
        ok(&ctl(&sock, &["image", "rm", "k"])).trim(),
        "Removed image k"
    );
    assert!(ok(&ctl(&sock, &["health"])).contains("is ok (0 VMs)"));
}

#[test]
fn follow_exits_3_when_hearthd_stops() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), |_| {}).unwrap();
    let sock = s.socket.clone();
    ok(&ctl(
        &sock,
        &["vm", "create", "a", "--kernel", "k", "--rootfs", "r"],
    ));
    let mut follow = Command::new(env!("CARGO_BIN_EXE_hearthctl"))
        .arg("--socket")
        .arg(&sock)
        .args(["events", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.trim_start().starts_with("1  "), "{first}");
    assert!(first.contains(" a "), "{first}");
    drop(s);
    let out = follow.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("hearthd is not running"), "{err}");
}

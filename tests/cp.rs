//! `hearthctl vm cp` end to end: the real hearthctl, hearthd, firecracker-sim and
//! `hearth-agent` (`FC_SIM_AGENT_BIN`) for copies both ways (docker cp placement, modes,
//! symlinks, 100 MiB each way with sha256), and a hostile guest for the refusals: this test
//! binary doubles as a fake agent (see [`fake_agent_entry`]) that answers `get_archive` with
//! a crafted tar stream, which goes through the real hearthd to the real hearthctl.
mod common;
use common::{daemon, exec_host};

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use exec_host::{binary_data, expect_code, run, sha256};
use hearth_proto::agent::frame::{write_frame, Frame, FrameKind, MAX_PAYLOAD};
use hearth_proto::agent::{
    decode_envelope, encode_error_in, encode_ok_in, ErrorBody, PathKind, PathStat, PingReply,
};
use tar::EntryType::{Block, Directory, Fifo, Regular, Symlink};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A small tree: files with modes, a symlink, a subdirectory.
fn make_site(dir: &Path) -> PathBuf {
    let site = dir.join("site");
    fs::create_dir_all(site.join("sub")).unwrap();
    fs::write(site.join("index.html"), b"<h1>hi</h1>").unwrap();
    fs::write(site.join("run.sh"), b"#!/bin/sh\necho run\n").unwrap();
    fs::set_permissions(site.join("run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(site.join("sub/deep.txt"), b"deep").unwrap();
    std::os::unix::fs::symlink("index.html", site.join("latest")).unwrap();
    site
}

fn assert_site(copy: &Path) {
    assert_eq!(fs::read(copy.join("index.html")).unwrap(), b"<h1>hi</h1>");
    assert_eq!(fs::read(copy.join("sub/deep.txt")).unwrap(), b"deep");
    assert_eq!(mode(&copy.join("run.sh")), 0o750);
    assert_eq!(
        fs::read_link(copy.join("latest")).unwrap(),
        Path::new("index.html")
    );
}

#[test]
fn copies_both_ways_as_docker_cp_does() {
    require_privileged!();
    let h = exec_host::start();
    let local = h.path("local");
    let guest = h.path("guest");
    fs::create_dir_all(&local).unwrap();
    fs::create_dir_all(&guest).unwrap();
    let site = make_site(&local);
    let g = |p: &Path| format!("web:{}", p.display());

    // Into an existing guest directory: lands inside under its own name.
    let out = run(&h, &["vm", "cp", site.to_str().unwrap(), &g(&guest)]);
    expect_code(&h, &out, 0);
    assert_site(&guest.join("site"));
    // To a guest path that does not exist: created under that name.
    let out = run(
        &h,
        &[
            "vm",
            "cp",
            site.to_str().unwrap(),
            &g(&guest.join("renamed")),
        ],
    );
    expect_code(&h, &out, 0);
    assert_site(&guest.join("renamed"));
    // A file onto an existing file replaces it.
    let out = run(
        &h,
        &[
            "vm",
            "cp",
            site.join("sub/deep.txt").to_str().unwrap(),
            &g(&guest.join("site/index.html")),
        ],
    );
    expect_code(&h, &out, 0);
    assert_eq!(fs::read(guest.join("site/index.html")).unwrap(), b"deep");

    // Back: to a new local path, then into an existing local directory.
    let back = local.join("back");
    let out = run(
        &h,
        &[
            "vm",
            "cp",
            &g(&guest.join("renamed")),
            back.to_str().unwrap(),
        ],
    );
    expect_code(&h, &out, 0);
    assert_site(&back);
    let out = run(
        &h,
        &[
            "vm",
            "cp",
            &g(&guest.join("renamed")),
            local.to_str().unwrap(),
        ],
    );
    expect_code(&h, &out, 0);
    assert_site(&local.join("renamed"));
    // Again into the same place: refused, the first copy untouched.
    let out = run(
        &h,
        &[
            "vm",
            "cp",
            &g(&guest.join("renamed")),
            local.to_str().unwrap(),
        ],
    );
    expect_code(&h, &out, 4);
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    assert_site(&local.join("renamed"));

    // Errors: a missing guest path (API error), both sides local (usage).
    let out = run(
        &h,
        &[
            "vm",
            "cp",
            &g(&guest.join("nope")),
            local.join("x").to_str().unwrap(),
        ],
    );
    expect_code(&h, &out, 1);
    assert!(!local.join("x").exists());
    let out = run(&h, &["vm", "cp", "a", "b"]);
    expect_code(&h, &out, 2);
    // No staging directory left anywhere.
    for d in [&local, &guest] {
        assert!(
            fs::read_dir(d).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".hearth-cp")),
            "staging left in {}",
            d.display()
        );
    }
}

#[test]
fn a_hundred_mib_file_each_way_is_intact() {
    require_privileged!();
    let h = exec_host::start();
    let data = binary_data(100 << 20);
    let src = h.path("big.bin");
    fs::write(&src, &data).unwrap();
    let guest = h.path("guest");
    fs::create_dir_all(&guest).unwrap();
    let out = run(
        &h,
        &[
            "vm",
            "cp",
            src.to_str().unwrap(),
            &format!("web:{}", guest.display()),
        ],
    );
    expect_code(&h, &out, 0);
    assert_eq!(
        sha256(&fs::read(guest.join("big.bin")).unwrap()),
        sha256(&data)
    );
    let back = h.path("back.bin");
    let out = run(
        &h,
        &[
            "vm",
            "cp",
            &format!("web:{}/big.bin", guest.display()),
            back.to_str().unwrap(),
        ],
    );
    expect_code(&h, &out, 0);
    assert_eq!(sha256(&fs::read(&back).unwrap()), sha256(&data));
}

#[test]
fn transfers_over_hearthds_limit_fail_and_leave_nothing() {
    require_privileged!();
    let h = exec_host::start_configured(
        &exec_host::agent_bin(),
        "[exec]\nmax_archive_bytes = 1048576\n",
    );
    let data = binary_data(4 << 20);
    let src = h.path("big.bin");
    fs::write(&src, &data).unwrap();
    let local = h.path("local");
    fs::create_dir_all(&local).unwrap();
    // Download: hearthd cuts the body at its limit; hearthctl sees a cut-off stream.
    let dest = local.join("copy.bin");
    let out = run(
        &h,
        &[
            "vm",
            "cp",
            &format!("web:{}", src.display()),
            dest.to_str().unwrap(),
        ],
    );
    expect_code(&h, &out, 4);
    assert!(
        text(&out.stderr).contains("truncated"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        fs::read_dir(&local).unwrap().count(),
        0,
        "something left behind"
    );
    // Upload: refused with 413.
    let guest = h.path("guest");
    fs::create_dir_all(&guest).unwrap();
    let out = run(
        &h,
        &[
            "vm",
            "cp",
            src.to_str().unwrap(),
            &format!("web:{}", guest.display()),
        ],
    );
    expect_code(&h, &out, 1);
    assert!(text(&out.stderr).contains("413"), "{}", text(&out.stderr));
}

/// An upload cut at hearthd's limit leaves nothing in the guest (the agent undoes an aborted
/// archive; this test found it keeping the partial file).
#[test]
fn an_upload_over_the_limit_leaves_nothing_in_the_guest() {
    require_privileged!();
    let h = exec_host::start_configured(
        &exec_host::agent_bin(),
        "[exec]\nmax_archive_bytes = 1048576\n",
    );
    let src = h.path("big.bin");
    fs::write(&src, binary_data(4 << 20)).unwrap();
    let guest = h.path("guest");
    fs::create_dir_all(&guest).unwrap();
    let out = run(
        &h,
        &[
            "vm",
            "cp",
            src.to_str().unwrap(),
            &format!("web:{}", guest.display()),
        ],
    );
    expect_code(&h, &out, 1);
    // hearthd answers 413 as soon as it stops the upload; the agent's undo follows the ERROR
    // frame it is sent, so it may finish just after hearthctl has exited.
    let empty = || fs::read_dir(&guest).unwrap().next().is_none();
    let undone = common::wait_until(std::time::Duration::from_secs(5), empty);
    let left: Vec<_> = fs::read_dir(&guest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(undone, "guest kept {left:?}");
}

// ---- A hostile guest -------------------------------------------------------------------

/// Where the fake agent listens (set by its wrapper script).
const FAKE_SOCK: &str = "HEARTH_TEST_FAKE_AGENT_SOCK";
/// The file whose bytes the fake agent sends as every `get_archive` stream.
const FAKE_ARCHIVE: &str = "HEARTH_TEST_FAKE_ARCHIVE";

/// Not a test of its own: when run by the wrapper [`fake_agent`] writes, this is a fake
/// `hearth-agent` that answers `ping`, `stat` (a directory) and `get_archive` (the bytes of
/// `$HEARTH_TEST_FAKE_ARCHIVE`, read at each request). Run normally, it returns at once.
#[test]
fn fake_agent_entry() {
    let (Some(sock), Some(archive)) = (std::env::var_os(FAKE_SOCK), std::env::var_os(FAKE_ARCHIVE))
    else {
        return;
    };
    let listener = std::os::unix::net::UnixListener::bind(sock).unwrap();
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let archive = PathBuf::from(&archive);
        std::thread::spawn(move || {
            let _ = serve(conn, &archive);
        });
    }
}

fn serve(conn: std::os::unix::net::UnixStream, archive: &Path) -> std::io::Result<()> {
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let Ok(env) = decode_envelope(&line) else {
            return Ok(());
        };
        let v = env.v;
        let op = env.request.op();
        let top = PathStat {
            name: "top".into(),
            kind: PathKind::Dir,
            size: 0,
            mode: 0o755,
            link_target: None,
        };
        match op {
            "ping" => w.write_all(&encode_ok_in(
                v,
                &PingReply {
                    version: "fake".into(),
                    boot_id: "fake".into(),
                    uptime_ms: 1,
                },
            ))?,
            "stat" => w.write_all(&encode_ok_in(v, &top))?,
            "get_archive" => {
                w.write_all(&encode_ok_in(v, &top))?;
                let bytes = fs::read(archive)?;
                for chunk in bytes.chunks(MAX_PAYLOAD) {
                    write_frame(&mut w, &Frame::new(FrameKind::Data, chunk.to_vec()))?;
                }
                write_frame(&mut w, &Frame::empty(FrameKind::End))?;
                return Ok(());
            }
            op => w.write_all(&encode_error_in(
                v,
                &ErrorBody::new("unknown_op", format!("fake agent: no {op}")),
            ))?,
        }
    }
}

/// A wrapper script the simulator starts as `<it> --unix <socket>`: runs this test binary's
/// [`fake_agent_entry`] as the agent.
fn fake_agent(dir: &Path, archive: &Path) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = --unix ] || exit 2\nexport {FAKE_SOCK}=\"$2\" {FAKE_ARCHIVE}='{}'\n\
         exec '{}' --exact fake_agent_entry --nocapture --test-threads=1 >/dev/null 2>&1\n",
        archive.display(),
        exe.display()
    );
    let path = dir.join("fake-agent");
    hearth_testkit::fc_sim::write_executable(&path, &script);
    path
}

/// One crafted tar entry, its name and link written raw (as `Header::set_path` would refuse).
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    mode: u32,
    data: &[u8],
    link: &str,
) {
    let mut hd = tar::Header::new_gnu();
    hd.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    hd.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    hd.set_entry_type(kind);
    hd.set_mode(mode);
    hd.set_size(data.len() as u64);
    hd.set_cksum();
    b.append(&hd, data).unwrap();
}

/// One refused archive: what it tries, its entries, a word of the error.
type Case<'a> = (
    &'a str,
    Vec<(&'a str, tar::EntryType, u32, &'a [u8], &'a str)>,
    &'a str,
);

/// A host whose agent is the fake one, serving `archive`; `work` is where copies go and
/// `outside` must never be written.
struct Hostile {
    h: daemon::HearthHost,
    _dir: tempfile::TempDir,
    archive: PathBuf,
    work: PathBuf,
    outside: PathBuf,
}

fn hostile() -> Hostile {
    let dir = tempfile::Builder::new()
        .prefix("hcp")
        .tempdir_in("/tmp")
        .unwrap();
    let archive = dir.path().join("archive.tar");
    fs::write(&archive, b"").unwrap();
    let h = exec_host::start_with_agent(&fake_agent(dir.path(), &archive));
    let work = h.path("work");
    let outside = h.path("outside");
    fs::create_dir_all(&work).unwrap();
    fs::create_dir_all(&outside).unwrap();
    Hostile {
        h,
        _dir: dir,
        archive,
        work,
        outside,
    }
}

#[test]
fn hostile_archives_from_the_guest_are_refused_without_writing_outside() {
    require_privileged!();
    let Hostile {
        h,
        archive,
        work,
        outside,
        _dir,
    } = hostile();
    let out_s = outside.display().to_string();
    let evil_abs = format!("{out_s}/abs");
    let cases: Vec<Case<'_>> = vec![
        (
            "dot-dot",
            vec![
                ("top/", Directory, 0o755, b"", ""),
                ("top/../../outside/dd", Regular, 0o644, b"x", ""),
            ],
            "holds ..",
        ),
        (
            "absolute",
            vec![
                ("top/", Directory, 0o755, b"", ""),
                (&evil_abs, Regular, 0o644, b"x", ""),
            ],
            "absolute",
        ),
        (
            "symlink then write through it",
            vec![
                ("top/", Directory, 0o755, b"", ""),
                ("top/esc", Symlink, 0o777, b"", &out_s),
                ("top/esc/through", Regular, 0o644, b"x", ""),
            ],
            "symlink",
        ),
        (
            "outside the top entry",
            vec![
                ("top/", Directory, 0o755, b"", ""),
                ("other/x", Regular, 0o644, b"x", ""),
            ],
            "not under",
        ),
    ];
    for (what, entries, message) in &cases {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, mode, data, link) in entries {
            raw_entry(&mut b, name, *kind, *mode, data, link);
        }
        fs::write(&archive, b.into_inner().unwrap()).unwrap();
        let dest = work.join("dest");
        let out = run(&h, &["vm", "cp", "web:/anything", dest.to_str().unwrap()]);
        expect_code(&h, &out, 4);
        assert!(
            text(&out.stderr).contains(message),
            "{what}: {}",
            text(&out.stderr)
        );
        assert_eq!(
            fs::read_dir(&work).unwrap().count(),
            0,
            "{what}: left files in work"
        );
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "{what}: wrote outside"
        );
    }
}

#[test]
fn a_guest_archive_without_its_end_is_truncated_and_devices_and_setuid_are_not_kept() {
    require_privileged!();
    let Hostile {
        h,
        archive,
        work,
        outside,
        _dir,
    } = hostile();
    // Truncated: no end-of-archive blocks.
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, "top/", Directory, 0o755, b"", "");
    raw_entry(&mut b, "top/f", Regular, 0o644, &[1u8; 3000], "");
    let full = b.into_inner().unwrap();
    fs::write(&archive, &full[..full.len() - 1024]).unwrap();
    let out = run(
        &h,
        &[
            "vm",
            "cp",
            "web:/anything",
            work.join("dest").to_str().unwrap(),
        ],
    );
    expect_code(&h, &out, 4);
    assert!(
        text(&out.stderr).contains("truncated"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(fs::read_dir(&work).unwrap().count(), 0);

    // Devices and FIFOs skipped with a warning, setuid dropped (kept when asked).
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, "top/", Directory, 0o755, b"", "");
    raw_entry(&mut b, "top/sda", Block, 0o644, b"", "");
    raw_entry(&mut b, "top/pipe", Fifo, 0o644, b"", "");
    raw_entry(&mut b, "top/suid", Regular, 0o4755, b"#!", "");
    fs::write(&archive, b.into_inner().unwrap()).unwrap();
    let dest = work.join("dest");
    let out = run(&h, &["vm", "cp", "web:/anything", dest.to_str().unwrap()]);
    expect_code(&h, &out, 0);
    assert!(
        text(&out.stderr).contains("top/sda: device node"),
        "{}",
        text(&out.stderr)
    );
    let names: Vec<_> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["suid"]);
    assert_eq!(mode(&dest.join("suid")), 0o755);
    assert_eq!(
        fs::metadata(dest.join("suid")).unwrap().uid(),
        nix::unistd::getuid().as_raw()
    );
    let kept = work.join("kept");
    let out = run(
        &h,
        &[
            "vm",
            "cp",
            "--keep-setuid",
            "web:/anything",
            kept.to_str().unwrap(),
        ],
    );
    expect_code(&h, &out, 0);
    assert_eq!(mode(&kept.join("suid")), 0o4755);
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

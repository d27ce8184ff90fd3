//! Exec and file transfer end to end through the real `hearthd` (the real supervisor's
//! running check, the real `GuestActor`), `firecracker-sim` as the VMM and the REAL
//! `hearth-agent` as its guest (`FC_SIM_AGENT_BIN`), the API driven directly (hearthctl's own
//! end-to-end tests are in `hearthctl.rs`). The sim runs the agent on this host, inside
//! hearthd's private network namespace; files go to the test's directory only.

mod common;
use common::daemon;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use daemon::HearthHost;
use hearth::client::{Client, Method};
use hearth_proto::api::ErrorBody;
use hearth_proto::api_exec::{channel, ExecCreated, ExecList, Status};
use serde_json::json;
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

/// The agent binary of this build, (re)built so the test never runs a stale one.
fn agent_bin() -> PathBuf {
    hearth_testkit::fc_sim::agent_binary()
}

fn exec(c: &Client, vm: &str, command: &[&str]) -> Result<String, (u16, String)> {
    let r = c
        .request(
            Method::POST,
            format!("/v1/vms/{vm}/exec"),
            &[],
            Some(json!({ "command": command }).to_string().as_bytes()),
        )
        .unwrap();
    if r.status == 201 {
        Ok(r.json::<ExecCreated>().unwrap().id.to_string())
    } else {
        let e: ErrorBody = serde_json::from_slice(&r.body).unwrap();
        Err((r.status, e.error.code))
    }
}

/// Attaches and reads until the close: (stdout, the exit code the Status reports).
fn attach_all(socket: &Path, vm: &str, id: &str) -> (Vec<u8>, Option<i32>) {
    let mut req = format!("ws://localhost/v1/vms/{vm}/execs/{id}/attach")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (mut ws, _) = tungstenite::client::client(req, stream).unwrap();
    let (mut out, mut code) = (Vec::new(), None);
    while let Ok(m) = ws.read() {
        if let Message::Binary(b) = m {
            match b[0] {
                channel::STDOUT => out.extend_from_slice(&b[1..]),
                channel::STATUS => {
                    let s: Status = serde_json::from_slice(&b[1..]).unwrap();
                    code = s.exit_code();
                }
                _ => {}
            }
        }
    }
    (out, code)
}

#[test]
fn exec_and_cp_through_hearthd_the_simulator_and_the_real_agent() {
    require_privileged!();
    let agent = agent_bin();
    let mut h = HearthHost::start(&[("FC_SIM_AGENT_BIN", agent.to_str().unwrap())], "");
    h.ctl_ok(&[
        "vm", "create", "web", "--kernel", "vmlinux", "--rootfs", "base",
    ]);
    let socket = h.path("hearthd.sock");
    let c = Client::new(&socket);

    let id = exec(&c, "web", &["sh", "-c", "echo hi; exit 7"]).unwrap();
    let (out, code) = attach_all(&socket, "web", &id);
    assert_eq!(
        (out.as_slice(), code),
        (&b"hi\n"[..], Some(7)),
        "{}",
        h.log()
    );

    // Files in and out, through the same vsock path.
    let dir = h.path("guest");
    std::fs::create_dir(&dir).unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(5);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "f.txt", &b"hello"[..])
        .unwrap();
    let r = c
        .request(
            Method::PUT,
            format!("/v1/vms/web/archive?path={}", dir.display()),
            &[("Content-Type", "application/x-tar")],
            Some(&builder.into_inner().unwrap()),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(std::fs::read(dir.join("f.txt")).unwrap(), b"hello");
    let r = c
        .request(
            Method::GET,
            format!("/v1/vms/web/archive?path={}/f.txt", dir.display()),
            &[],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let mut archive = tar::Archive::new(&r.body[..]);
    assert_eq!(archive.entries().unwrap().count(), 1);

    // Sessions live in the agent: a hearthd killed mid-session finds it again, with the
    // output it wrote meanwhile.
    let id = exec(&c, "web", &["sh", "-c", "sleep 1; echo late"]).unwrap();
    h.kill9();
    h.launch();
    let list: ExecList = c.get("/v1/vms/web/execs").unwrap();
    assert!(list.execs.iter().any(|e| e.id.as_str() == id), "{list:?}");
    let (out, code) = attach_all(&socket, "web", &id);
    assert_eq!((out.as_slice(), code), (&b"late\n"[..], Some(0)));

    // Not running: the supervisor refuses with 409.
    h.ctl_ok(&["vm", "stop", "web"]);
    assert_eq!(
        exec(&c, "web", &["true"]),
        Err((409, "invalid_state".to_owned()))
    );
    assert_eq!(
        exec(&c, "nope", &["true"]),
        Err((404, "not_found".to_owned()))
    );
}

//! The handlers of the snapshot messages ([`super::snapshot_messages`]): pause and resume
//! (`PATCH /vm`), a Full snapshot of the paused VM (`PUT /snapshot/create`, with `GET /version`
//! and `GET /vm/config` to record), and a restore into a fresh process (spawn, then
//! `PUT /snapshot/load`). Firecracker itself refuses what it cannot do (a snapshot of a
//! running VM, a load on a configured process), so those errors carry its own texts; hearth
//! checks beforehand only what Firecracker cannot know (paths, compatibility).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix::{ActorFutureExt, AtomicResponse, Context, Handler, ResponseActFuture, WrapFuture};
use hearth_proto::firecracker::{
    CpuTemplate, FirecrackerVersion, NetworkOverride as FcNetworkOverride, PartialDrive,
    SnapshotCreateParams, SnapshotLoadParams, SnapshotType, Vm, VmPauseState, VsockOverride,
};
use serde::Deserialize;

use super::api_client::{ApiClient, Endpoint};
use super::binary::{parse_version, FirecrackerBinary, VmmVersion};
use super::messages::SpawnInfo;
use super::run_dir::set_socket_access;
use super::snapshot_messages::{
    CreateVmSnapshot, NetworkOverride, PauseVm, RestoreInfo, RestoreVm, ResumeVm, SnapshotCompat,
    UpdateDrivePath, VmmSnapshotInfo,
};
use super::stop::StopRung;
use super::{FirecrackerActor, FirecrackerError, VmmState};

type Atomic<T> = AtomicResponse<FirecrackerActor, Result<T, FirecrackerError>>;

fn fail<T: 'static>(e: FirecrackerError) -> Atomic<T> {
    AtomicResponse::new(Box::pin(actix::fut::ready(Err(e))))
}

/// The first release whose `snapshot/load` takes `vsock_override` and `clock_realtime`
/// (`network_overrides` came in 1.12).
pub const MIN_RESTORE_VERSION: VmmVersion = VmmVersion {
    major: 1,
    minor: 16,
    patch: 0,
};

/// The CPU template hearth boots VMs with: none (it configures no `cpu_template`).
pub const HEARTH_CPU_TEMPLATE: CpuTemplate = CpuTemplate::None;

/// How long a failed load's process may take to exit before the answer gives up waiting.
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// What `GET /vm/config` tells about the machine (other fields are ignored).
#[derive(Debug, Deserialize)]
struct FullConfig {
    #[serde(rename = "machine-config")]
    machine: Option<MachineOut>,
}

#[derive(Debug, Deserialize)]
struct MachineOut {
    vcpu_count: u8,
    mem_size_mib: u64,
    /// Absent when none was set (and after a restore).
    #[serde(default)]
    cpu_template: Option<CpuTemplate>,
}

/// An absolute path Firecracker can take in JSON (UTF-8).
fn json_path<'a>(what: &'static str, path: &'a Path) -> Result<&'a str, FirecrackerError> {
    let s = path
        .to_str()
        .ok_or_else(|| FirecrackerError::InvalidConfig {
            what,
            detail: format!("{} is not UTF-8", path.display()),
        })?;
    if !path.is_absolute() {
        return Err(FirecrackerError::InvalidConfig {
            what,
            detail: format!("{s:?} is not an absolute path"),
        });
    }
    Ok(s)
}

/// Whether a VMM running `binary` with hearth's CPU template may load a snapshot taken with
/// `compat`: the same `major.minor.patch` and the same CPU template.
pub fn check_compat(
    compat: &SnapshotCompat,
    binary: &FirecrackerBinary,
    snapshot: &Path,
) -> Result<(), FirecrackerError> {
    let snapshot_version = parse_version(&format!("Firecracker v{}", compat.fc_version));
    let mismatch = if snapshot_version != Some(binary.version) {
        Some("version")
    } else if compat.cpu_template != HEARTH_CPU_TEMPLATE {
        Some("CPU template")
    } else {
        None
    };
    match mismatch {
        None => Ok(()),
        Some(mismatch) => Err(FirecrackerError::IncompatibleSnapshot {
            snapshot: snapshot.to_path_buf(),
            snapshot_version: compat.fc_version.clone(),
            snapshot_template: compat.cpu_template,
            vmm_version: binary.version,
            vmm_template: HEARTH_CPU_TEMPLATE,
            mismatch,
        }),
    }
}

/// The `PUT /snapshot/load` body of a restore, after checking paths and override ids.
pub fn load_body(
    snapshot_path: &Path,
    mem_path: &Path,
    network_overrides: &[NetworkOverride],
    vsock_uds_path: &Path,
    resume: bool,
    clock_realtime: bool,
) -> Result<SnapshotLoadParams, FirecrackerError> {
    let snapshot = json_path("snapshot path", snapshot_path)?;
    let mem = json_path("memory file path", mem_path)?;
    let vsock = json_path("vsock socket path", vsock_uds_path)?;
    let mut overrides = Vec::with_capacity(network_overrides.len());
    for o in network_overrides {
        // The same rule as for the API path ids: it names a device of the snapshot.
        Endpoint::NetworkInterface(&o.iface_id).path()?;
        if o.host_dev_name.is_empty() || o.host_dev_name.len() > 15 {
            return Err(FirecrackerError::InvalidConfig {
                what: "network override",
                detail: format!(
                    "TAP name {:?} must be 1-15 bytes (IFNAMSIZ)",
                    o.host_dev_name
                ),
            });
        }
        overrides.push(FcNetworkOverride {
            iface_id: o.iface_id.clone(),
            host_dev_name: o.host_dev_name.clone(),
        });
    }
    let mut body = SnapshotLoadParams::from_file(snapshot, mem);
    body.resume_vm = Some(resume);
    body.network_overrides = (!overrides.is_empty()).then_some(overrides);
    body.vsock_override = Some(VsockOverride {
        uds_path: vsock.into(),
    });
    // Sent only when asked: the field is new (1.16) and `false` is its default.
    body.clock_realtime = clock_realtime.then_some(true);
    Ok(body)
}

impl FirecrackerActor {
    /// `PATCH /vm` with `state`, on a started VM.
    fn patch_vm(&mut self, state: VmPauseState, op: &'static str) -> Atomic<()> {
        if !self.state.is_running() {
            return fail(FirecrackerError::InvalidState {
                state: self.state,
                op,
            });
        }
        let mut client = match self.take_api(op) {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let log = self.log.clone();
        let fut = async move {
            let t0 = Instant::now();
            let res = client.patch(Endpoint::Vm, &Vm { state }).await;
            slog::info!(log, "vm state changed"; "to" => ?state, "us" => t0.elapsed().as_micros(), "ok" => res.is_ok());
            (client, res)
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            move |(client, res), act, _| {
                act.api = Some(client);
                if res.is_ok() {
                    act.paused = state == VmPauseState::Paused;
                }
                res
            },
        )))
    }
}

impl Handler<PauseVm> for FirecrackerActor {
    type Result = Atomic<()>;

    fn handle(&mut self, _msg: PauseVm, _ctx: &mut Context<Self>) -> Self::Result {
        self.patch_vm(VmPauseState::Paused, "pause")
    }
}

impl Handler<ResumeVm> for FirecrackerActor {
    type Result = Atomic<()>;

    fn handle(&mut self, _msg: ResumeVm, _ctx: &mut Context<Self>) -> Self::Result {
        self.patch_vm(VmPauseState::Resumed, "resume")
    }
}

/// The `PATCH /drives/{id}` body pointing drive `drive_id` at `path`, after checking both.
pub fn drive_path_body(drive_id: &str, path: &Path) -> Result<PartialDrive, FirecrackerError> {
    Endpoint::Drive(drive_id).path()?;
    Ok(PartialDrive {
        drive_id: drive_id.to_owned(),
        path_on_host: Some(json_path("drive path", path)?.to_owned()),
        rate_limiter: None,
    })
}

impl Handler<UpdateDrivePath> for FirecrackerActor {
    type Result = Atomic<()>;

    fn handle(&mut self, msg: UpdateDrivePath, _ctx: &mut Context<Self>) -> Self::Result {
        if !self.state.is_running() {
            return fail(FirecrackerError::InvalidState {
                state: self.state,
                op: "update a drive of",
            });
        }
        let body = match drive_path_body(&msg.drive_id, &msg.path) {
            Ok(b) => b,
            Err(e) => return fail(e),
        };
        let mut client = match self.take_api("update a drive of") {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let log = self.log.clone();
        let fut = async move {
            let t0 = Instant::now();
            let res = client.patch(Endpoint::Drive(&body.drive_id), &body).await;
            slog::info!(log, "drive file changed"; "drive" => &body.drive_id,
                "path" => body.path_on_host.as_deref().unwrap_or_default(),
                "us" => t0.elapsed().as_micros(), "ok" => res.is_ok());
            (client, res)
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            |(client, res), act, _| {
                act.api = Some(client);
                res
            },
        )))
    }
}

/// `GET /version`, `GET /vm/config`, then `PUT /snapshot/create` (timed).
async fn create_snapshot(
    api: &mut ApiClient,
    body: &SnapshotCreateParams,
) -> Result<VmmSnapshotInfo, FirecrackerError> {
    let version: FirecrackerVersion = api.get(Endpoint::Version).await?;
    let config: FullConfig = api.get(Endpoint::VmConfig).await?;
    let machine = config
        .machine
        .ok_or_else(|| FirecrackerError::ApiProtocol {
            method: http::Method::GET,
            uri: "/vm/config".into(),
            detail: "no machine-config".into(),
        })?;
    let t0 = Instant::now();
    api.put(Endpoint::SnapshotCreate, body).await?;
    Ok(VmmSnapshotInfo {
        compat: SnapshotCompat {
            fc_version: version.firecracker_version,
            cpu_template: machine.cpu_template.unwrap_or(CpuTemplate::None),
        },
        vcpus: machine.vcpu_count,
        mem_size_mib: machine.mem_size_mib,
        create: t0.elapsed(),
    })
}

impl Handler<CreateVmSnapshot> for FirecrackerActor {
    type Result = Atomic<VmmSnapshotInfo>;

    fn handle(&mut self, msg: CreateVmSnapshot, _ctx: &mut Context<Self>) -> Self::Result {
        if !self.state.is_running() {
            return fail(FirecrackerError::InvalidState {
                state: self.state,
                op: "snapshot",
            });
        }
        let body = match (
            json_path("snapshot path", &msg.snapshot_path),
            json_path("memory file path", &msg.mem_path),
        ) {
            (Ok(s), Ok(m)) => SnapshotCreateParams {
                snapshot_type: Some(SnapshotType::Full),
                snapshot_path: s.into(),
                mem_file_path: m.into(),
            },
            (Err(e), _) | (_, Err(e)) => return fail(e),
        };
        let mut client = match self.take_api("snapshot") {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let log = self.log.clone();
        let fut = async move {
            let res = create_snapshot(&mut client, &body).await;
            match &res {
                Ok(info) => {
                    slog::info!(log, "snapshot created"; "path" => &body.snapshot_path, "ms" => info.create.as_millis());
                }
                Err(e) => slog::warn!(log, "snapshot failed"; "error" => %e),
            }
            (client, res)
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            |(client, res), act, _| {
                act.api = Some(client);
                res
            },
        )))
    }
}

impl FirecrackerActor {
    /// What a restore checks before spawning anything (state, version, compatibility, paths),
    /// and the load body with the vsock socket it names.
    fn restore_body(
        &self,
        msg: &RestoreVm,
    ) -> Result<(SnapshotLoadParams, PathBuf), FirecrackerError> {
        if !self.state.can_spawn() {
            return Err(FirecrackerError::InvalidState {
                state: self.state,
                op: "restore into",
            });
        }
        if self.binary.version < MIN_RESTORE_VERSION {
            return Err(FirecrackerError::InvalidConfig {
                what: "restore",
                detail: format!(
                    "Firecracker {} cannot override the vsock socket on load; hearth needs {} \
                     or later to restore",
                    self.binary.version, MIN_RESTORE_VERSION
                ),
            });
        }
        check_compat(&msg.compat, &self.binary, &msg.snapshot_path)?;
        let vsock = msg
            .vsock_uds_path
            .clone()
            .unwrap_or_else(|| self.run_dir.vsock_socket());
        // Jailed (issue 16): the VMM sees the files and its socket at their paths in the jail.
        let (snapshot, mem, vsock_inside) = match self.jail_restore_paths(
            &msg.snapshot_path,
            &msg.mem_path,
            msg.vsock_uds_path.as_deref(),
        ) {
            Some(paths) => paths?,
            None => (
                msg.snapshot_path.clone(),
                msg.mem_path.clone(),
                vsock.clone(),
            ),
        };
        let body = load_body(
            &snapshot,
            &mem,
            &msg.network_overrides,
            &vsock_inside,
            msg.resume,
            msg.clock_realtime,
        )?;
        Ok((body, vsock))
    }
}

impl Handler<RestoreVm> for FirecrackerActor {
    type Result = Atomic<RestoreInfo>;

    fn handle(&mut self, msg: RestoreVm, ctx: &mut Context<Self>) -> Self::Result {
        let resume = msg.resume;
        let (body, vsock) = match self.restore_body(&msg) {
            Ok(b) => b,
            Err(e) => return fail(e),
        };
        let spawned: ResponseActFuture<Self, Result<(ApiClient, Duration, Duration), _>> =
            if self.jail.is_some() {
                // Jailed (issue 16): the jailer's spawn, then the TAPs to the VM's uid.
                let taps = msg.network_overrides.iter();
                self.spawn_jailed_for_restore(taps.map(|o| o.host_dev_name.clone()).collect())
            } else {
                let spawn = match self.spawn_now(ctx) {
                    Ok(d) => d,
                    Err(e) => return fail(e),
                };
                let ready = self.api_ready();
                Box::pin(
                    async move {
                        let (client, api_ready) = ready.await?;
                        Ok((client, spawn, api_ready))
                    }
                    .into_actor(self),
                )
            };
        let group = self.settings.socket_group;
        let fut = spawned.then(move |res, act, _| {
            async move {
                let (mut client, spawn, api_ready) = res?;
                let t0 = Instant::now();
                let loaded = client.put(Endpoint::SnapshotLoad, &body).await;
                let load = t0.elapsed();
                loaded.map(|()| (client, spawn, api_ready, load))
            }
            .into_actor(act)
        });
        let log = self.log.clone();
        let vsock_for_access = vsock.clone();
        AtomicResponse::new(Box::pin(
            fut.then(move |res, act, _| {
                    let failed = res.is_err();
                    // Read now: a jailed VMM is owned only once the jailer found it.
                    let exit = act.owned.as_ref().map(|o| o.exit.clone());
                    if let Err(e) = &res {
                        // Firecracker exits after most failed loads; make sure of it either
                        // way, then wait for the exit so no process is left when we answer.
                        act.kill_after_failure(e);
                        // Reported as stopped by hearth even when Firecracker beat the
                        // SIGKILL to it: the load hearth asked for ended it, not a crash.
                        act.stop_rung = Some(StopRung::Sigkill);
                    }
                    async move {
                        if failed {
                            if let Some(mut rx) = exit {
                                let _ =
                                    tokio::time::timeout(EXIT_WAIT, rx.wait_for(Option::is_some))
                                        .await;
                            }
                        }
                        res
                    }
                    .into_actor(act)
                })
                .map(move |res, act, _| match res {
                    Ok((client, spawn, api_ready, load)) => {
                        if let Some(gid) = group {
                            set_socket_access(&vsock_for_access, gid)?;
                        }
                        act.api = Some(client);
                        act.state = VmmState::Running;
                        act.paused = !resume;
                        let record = act.record().ok_or(FirecrackerError::InvalidState {
                            state: act.state,
                            op: "record",
                        })?;
                        slog::info!(log, "restored"; "pid" => record.pid, "load_ms" => load.as_millis());
                        Ok(RestoreInfo {
                            spawn: SpawnInfo {
                                record,
                                spawn,
                                api_ready,
                            },
                            load,
                        })
                    }
                    Err(e) => {
                        // The process is gone: clear what it left (sockets, FIFO); logs stay.
                        if !act.has_live_process() {
                            if let Err(err) = act.run_dir.remove_sockets() {
                                slog::warn!(log, "cannot remove sockets"; "error" => %err);
                            }
                        }
                        Err(e)
                    }
                }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(v: (u32, u32, u32)) -> FirecrackerBinary {
        FirecrackerBinary {
            path: "/usr/bin/firecracker".into(),
            version: VmmVersion {
                major: v.0,
                minor: v.1,
                patch: v.2,
            },
        }
    }

    fn compat(v: &str, t: CpuTemplate) -> SnapshotCompat {
        SnapshotCompat {
            fc_version: v.into(),
            cpu_template: t,
        }
    }

    #[test]
    fn compat_needs_same_version_and_template() {
        let b = binary((1, 17, 0));
        let s = Path::new("/d/s");
        assert!(check_compat(&compat("1.17.0-dev", CpuTemplate::None), &b, s).is_ok());
        let e = check_compat(&compat("1.16.2", CpuTemplate::None), &b, s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Snapshot /d/s was taken with Firecracker 1.16.2 (CPU template None); this VMM is \
             Firecracker v1.17.0 (CPU template None): version differs"
        );
        let e = check_compat(&compat("1.17.0", CpuTemplate::T2), &b, s).unwrap_err();
        assert!(e.to_string().ends_with("CPU template differs"), "{e}");
        assert!(check_compat(&compat("garbage", CpuTemplate::None), &b, s).is_err());
    }

    #[test]
    fn drive_path_body_checks_id_and_path() {
        let body = drive_path_body("rootfs", Path::new("/d/disk")).unwrap();
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"drive_id":"rootfs","path_on_host":"/d/disk"}"#
        );
        let rel = drive_path_body("rootfs", Path::new("disk")).unwrap_err();
        assert!(rel.to_string().contains("not an absolute path"), "{rel}");
        assert!(drive_path_body("../vm", Path::new("/d/disk")).is_err());
        assert!(drive_path_body("", Path::new("/d/disk")).is_err());
    }

    #[test]
    fn load_body_checks_paths_and_overrides() {
        let ov = |i: &str, t: &str| NetworkOverride {
            iface_id: i.into(),
            host_dev_name: t.into(),
        };
        let v = Path::new("/r/v.sock");
        let body = load_body(
            Path::new("/s"),
            Path::new("/m"),
            &[ov("eth0", "tap7")],
            v,
            true,
            false,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"snapshot_path":"/s","mem_backend":{"backend_path":"/m","backend_type":"File"},"resume_vm":true,"network_overrides":[{"iface_id":"eth0","host_dev_name":"tap7"}],"vsock_override":{"uds_path":"/r/v.sock"}}"#
        );
        let rel = load_body(Path::new("s"), Path::new("/m"), &[], v, true, false).unwrap_err();
        assert!(rel.to_string().contains("not an absolute path"), "{rel}");
        let bad = load_body(
            Path::new("/s"),
            Path::new("/m"),
            &[ov("eth/0", "tap7")],
            v,
            true,
            false,
        );
        assert!(bad.is_err());
        let long = load_body(
            Path::new("/s"),
            Path::new("/m"),
            &[ov("eth0", "a-very-long-tap-name")],
            v,
            true,
            true,
        );
        assert!(long.unwrap_err().to_string().contains("IFNAMSIZ"));
        let clock = load_body(Path::new("/s"), Path::new("/m"), &[], v, false, true).unwrap();
        assert_eq!(clock.clock_realtime, Some(true));
        assert!(clock.network_overrides.is_none());
    }
}

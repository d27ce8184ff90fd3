//! Turns an HTTP request into a VMM action, the way Firecracker's `ParsedRequest` does:
//! route on method + first path segment, check path IDs, deserialise the body into the shared
//! `hearth_proto::firecracker` types (unknown fields rejected), and compare path and body IDs.
//! Errors here carry Firecracker's wording and never reach the VMM.

use hearth_proto::firecracker::{
    self as fc, BootSource, Drive, InstanceActionInfo, Logger, MachineConfig, MachineConfigUpdate,
    MemoryBackend, Metrics, NetworkInterface, PartialDrive, PartialNetworkInterface,
    SnapshotCreateParams, SnapshotLoadParams, Vm, Vsock,
};
use serde::de::DeserializeOwned;

use crate::http::Request;

/// What a request asks the VMM to do.
#[derive(Debug)]
pub enum Action {
    /// `GET /`.
    GetInstanceInfo,
    /// `GET /version`.
    GetVersion,
    /// `GET /vm/config`.
    GetVmConfig,
    /// `GET /machine-config`.
    GetMachineConfig,
    /// `PUT /machine-config`.
    PutMachineConfig(MachineConfig),
    /// `PATCH /machine-config`.
    PatchMachineConfig(MachineConfigUpdate),
    /// `PUT /boot-source`.
    PutBootSource(BootSource),
    /// `PUT /drives/{id}`.
    PutDrive(Drive),
    /// `PATCH /drives/{id}`.
    PatchDrive(PartialDrive),
    /// `PUT /network-interfaces/{id}`.
    PutNet(NetworkInterface),
    /// `PATCH /network-interfaces/{id}`.
    PatchNet(PartialNetworkInterface),
    /// `PUT /vsock`.
    PutVsock(Vsock),
    /// `PUT /actions`.
    Action(InstanceActionInfo),
    /// `PATCH /vm`.
    PatchVm(Vm),
    /// `PUT /snapshot/create`.
    CreateSnapshot(SnapshotCreateParams),
    /// `PUT /snapshot/load`, with its memory backend (whichever memory field was given).
    LoadSnapshot(SnapshotLoadParams, MemoryBackend),
    /// `PUT /logger`.
    PutLogger(Logger),
    /// `PUT /metrics`.
    PutMetrics(Metrics),
    /// An endpoint real Firecracker has but the simulator does not model (balloon, mmds,
    /// snapshot, ...): answered as `NotSupported`.
    NotSimulated(String),
    /// A request rejected by [`parse`]; the VMM thread logs it and answers 400.
    Rejected(RequestError),
}

/// A request rejected before reaching the VMM: Firecracker's `RequestError`. `Display` is
/// Firecracker's `fault_message` (always status 400).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A path ID breaking the ID rules, IDs that differ, or an empty PATCH.
    #[error("{source}")]
    Invalid {
        /// The broken rule.
        #[from]
        source: fc::ValidationError,
    },
    /// The body is not valid JSON for the resource (unknown field, wrong type, bad enum...).
    #[error("An error occurred when deserializing the json body of a request: {source}.")]
    Body {
        /// The serde error.
        #[from]
        source: serde_json::Error,
    },
    /// `PUT /snapshot` without `create` or `load`.
    #[error("Missing snapshot operation type.")]
    MissingSnapshotOp,
    /// A `GET` with a body.
    #[error("GET request cannot have a body.")]
    GetWithBody,
    /// A `PUT` without a body.
    #[error("Empty PUT request.")]
    EmptyPut,
    /// A `PATCH` without a body.
    #[error("Empty PATCH request.")]
    EmptyPatch,
    /// No such endpoint for that method.
    #[error("Invalid request method and/or path: {method} {path}.")]
    InvalidPathMethod {
        /// The method.
        method: String,
        /// The first path segment, as Firecracker reports it.
        path: String,
    },
}

/// Firecracker's `checked_id` plus "missing ID" handling.
fn path_id(id: Option<&str>) -> Result<&str, RequestError> {
    let id = id.ok_or(fc::ValidationError::EmptyId)?;
    fc::check_id(id)?;
    Ok(id)
}

fn body<T: DeserializeOwned>(raw: &[u8]) -> Result<T, RequestError> {
    Ok(serde_json::from_slice(raw)?)
}

fn same_id(path: &str, body: &str) -> Result<(), RequestError> {
    Ok(fc::check_path_id(path, body)?)
}

/// Parses a request into an [`Action`].
pub fn parse(req: &Request) -> Result<Action, RequestError> {
    let path = req.path.split('?').next().unwrap_or_default();
    let mut tokens = path.trim_start_matches('/').split_terminator('/');
    let first = tokens.next().unwrap_or("");
    let method = req.method.as_str();
    let b = req.body.as_deref();
    match (method, first, b) {
        ("GET", "", None) => Ok(Action::GetInstanceInfo),
        ("GET", "version", None) => Ok(Action::GetVersion),
        ("GET", "vm", None) if tokens.next() == Some("config") => Ok(Action::GetVmConfig),
        ("GET", "machine-config", None) => Ok(Action::GetMachineConfig),
        ("GET", "balloon" | "mmds", None) => Ok(Action::NotSimulated(format!("GET /{first}"))),
        ("GET", _, Some(_)) => Err(RequestError::GetWithBody),
        ("PUT", "actions", Some(b)) => Ok(Action::Action(body(b)?)),
        ("PUT", "boot-source", Some(b)) => Ok(Action::PutBootSource(body(b)?)),
        ("PUT", "drives", Some(b)) => {
            let id = path_id(tokens.next())?;
            let d: Drive = body(b)?;
            same_id(id, &d.drive_id)?;
            Ok(Action::PutDrive(d))
        }
        ("PUT", "logger", Some(b)) => Ok(Action::PutLogger(body(b)?)),
        ("PUT", "machine-config", Some(b)) => Ok(Action::PutMachineConfig(body(b)?)),
        ("PUT", "metrics", Some(b)) => Ok(Action::PutMetrics(body(b)?)),
        ("PUT", "network-interfaces", Some(b)) => {
            let id = path_id(tokens.next())?;
            let n: NetworkInterface = body(b)?;
            same_id(id, &n.iface_id)?;
            Ok(Action::PutNet(n))
        }
        ("PUT", "vsock", Some(b)) => Ok(Action::PutVsock(body(b)?)),
        ("PUT", "snapshot", Some(b)) => snapshot(tokens.next(), path, b),
        (
            "PUT",
            "balloon" | "cpu-config" | "pmem" | "serial" | "mmds" | "entropy" | "hotplug",
            Some(_),
        ) => Ok(Action::NotSimulated(format!("PUT /{first}"))),
        ("PUT", _, None) => Err(RequestError::EmptyPut),
        ("PATCH", "drives", Some(b)) => {
            let id = path_id(tokens.next())?;
            let d: PartialDrive = body(b)?;
            same_id(id, &d.drive_id)?;
            Ok(Action::PatchDrive(d))
        }
        ("PATCH", "machine-config", Some(b)) => {
            let u: MachineConfigUpdate = body(b)?;
            u.validate()?;
            Ok(Action::PatchMachineConfig(u))
        }
        ("PATCH", "network-interfaces", Some(b)) => {
            let id = path_id(tokens.next())?;
            let n: PartialNetworkInterface = body(b)?;
            same_id(id, &n.iface_id)?;
            Ok(Action::PatchNet(n))
        }
        ("PATCH", "vm", Some(b)) => Ok(Action::PatchVm(body(b)?)),
        ("PATCH", "balloon" | "mmds" | "hotplug", Some(_)) => {
            Ok(Action::NotSimulated(format!("PATCH /{first}")))
        }
        ("PATCH", _, None) => Err(RequestError::EmptyPatch),
        (m, uri, _) => Err(RequestError::InvalidPathMethod {
            method: m.to_owned(),
            path: uri.to_owned(),
        }),
    }
}

/// `PUT /snapshot/{create|load}`. Firecracker checks the two memory fields after parsing and
/// reports a violation as a body error without a position; an unknown operation names the
/// whole path.
fn snapshot(op: Option<&str>, path: &str, b: &[u8]) -> Result<Action, RequestError> {
    match op {
        Some("create") => Ok(Action::CreateSnapshot(body(b)?)),
        Some("load") => {
            let p: SnapshotLoadParams = body(b)?;
            let mem = p.check_mem().map_err(|msg| RequestError::Body {
                source: <serde_json::Error as serde::de::Error>::custom(msg),
            })?;
            Ok(Action::LoadSnapshot(p, mem))
        }
        None => Err(RequestError::MissingSnapshotOp),
        Some(_) => Err(RequestError::InvalidPathMethod {
            method: "PUT".into(),
            path: path.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, body: Option<&str>) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            body: body.map(|b| b.as_bytes().to_vec()),
            close: false,
        }
    }

    #[test]
    fn routes_the_boot_sequence() {
        assert!(matches!(
            parse(&req("GET", "/", None)),
            Ok(Action::GetInstanceInfo)
        ));
        assert!(matches!(
            parse(&req("GET", "/vm/config", None)),
            Ok(Action::GetVmConfig)
        ));
        assert!(matches!(
            parse(&req(
                "PUT",
                "/machine-config",
                Some(r#"{"vcpu_count":1,"mem_size_mib":64}"#)
            )),
            Ok(Action::PutMachineConfig(_))
        ));
        assert!(matches!(
            parse(&req(
                "PUT",
                "/drives/rootfs",
                Some(r#"{"drive_id":"rootfs","is_root_device":true,"path_on_host":"/x"}"#)
            )),
            Ok(Action::PutDrive(_))
        ));
    }

    #[test]
    fn firecracker_parse_errors() {
        let err = |r: Request| parse(&r).unwrap_err().to_string();
        let e = err(req("GET", "/nope", None));
        assert_eq!(e, "Invalid request method and/or path: GET nope.");
        let e = err(req("PUT", "/boot-source", None));
        assert_eq!(e, "Empty PUT request.");
        let e = err(req("GET", "/", Some("{}")));
        assert_eq!(e, "GET request cannot have a body.");
        let e = err(req(
            "PUT",
            "/drives/a-b",
            Some(r#"{"drive_id":"a-b","is_root_device":true}"#),
        ));
        assert_eq!(
            e,
            "API Resource IDs can only contain alphanumeric characters and underscores."
        );
        let e = err(req(
            "PUT",
            "/network-interfaces/eth0",
            Some(r#"{"iface_id":"eth1","host_dev_name":"tap0"}"#),
        ));
        assert_eq!(
            e,
            "The id from the path does not match the id from the body!"
        );
        let e = err(req(
            "PUT",
            "/vsock",
            Some(r#"{"guest_cid":3,"uds_path":"/v","extra":1}"#),
        ));
        assert!(
            e.starts_with("An error occurred when deserializing the json body of a request: unknown field `extra`"),
            "{e}"
        );
        let e = err(req("PATCH", "/machine-config", Some("{}")));
        assert_eq!(e, "Empty PATCH request.");
        let e = err(req("PUT", "/drives", Some("{}")));
        assert_eq!(e, "The ID cannot be empty.");
    }

    /// Texts observed on the real v1.17.0-dev (see `docs/sim.md`, "Snapshots").
    #[test]
    fn snapshot_parse_errors() {
        let err = |r: Request| parse(&r).unwrap_err().to_string();
        let prefix = "An error occurred when deserializing the json body of a request: ";
        let e = err(req("PUT", "/snapshot", Some("{}")));
        assert_eq!(e, "Missing snapshot operation type.");
        let e = err(req("PUT", "/snapshot/foo", Some("{}")));
        assert_eq!(e, "Invalid request method and/or path: PUT /snapshot/foo.");
        let e = err(req("GET", "/snapshot/create", None));
        assert_eq!(e, "Invalid request method and/or path: GET snapshot.");
        let e = err(req(
            "PUT",
            "/snapshot/load",
            Some(
                r#"{"snapshot_path":"/tmp/pr/nonexist","mem_file_path":"/tmp/pr/m","mem_backend":{"backend_type":"File","backend_path":"/tmp/pr/m"}}"#,
            ),
        ));
        assert_eq!(e, format!("{prefix}too many fields: either `mem_backend` or `mem_file_path` exclusively is required."));
        let e = err(req(
            "PUT",
            "/snapshot/load",
            Some(r#"{"snapshot_path":"/tmp/pr/nonexist"}"#),
        ));
        assert_eq!(
            e,
            format!("{prefix}missing field: either `mem_backend` or `mem_file_path` is required.")
        );
        let e = err(req(
            "PUT",
            "/snapshot/load",
            Some(r#"{"mem_backend":{"backend_type":"File","backend_path":"/tmp/pr/m"}}"#),
        ));
        assert_eq!(
            e,
            format!("{prefix}missing field `snapshot_path` at line 1 column 66.")
        );
        let e = err(req(
            "PUT",
            "/snapshot/load",
            Some(
                r#"{"snapshot_path":"/tmp/pr/s","mem_backend":{"backend_type":"File","backend_path":"/tmp/pr/m","zz":1}}"#,
            ),
        ));
        assert_eq!(e, format!("{prefix}unknown field `zz`, expected `backend_path` or `backend_type` at line 1 column 97."));
        let e = err(req(
            "PUT",
            "/snapshot/create",
            Some(
                r#"{"snapshot_path":"/tmp/pr/s","mem_file_path":"/tmp/pr/m","snapshot_type":"Foo"}"#,
            ),
        ));
        assert_eq!(
            e,
            format!(
                "{prefix}unknown variant `Foo`, expected `Diff` or `Full` at line 1 column 78."
            )
        );
        let e = err(req("PATCH", "/vm", Some(r#"{"state":"Foo"}"#)));
        assert_eq!(e, format!("{prefix}unknown variant `Foo`, expected `Paused` or `Resumed` at line 1 column 14."));
    }
}

//! Row types of the store and the queries that assemble them.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hearth_actors::lease::NetLease;
use hearth_actors::supervisor::{DiskRecord, PolicyState, VmRecord, VmmProcessRecord};
use hearth_proto::api::{CreateVm, Event, EventReason, VmState};
use rusqlite::{params, Connection};

use super::StoreError;

pub(super) fn load_all(conn: &Connection) -> Result<Vec<VmRecord>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT v.name, v.spec, v.state, v.nat, v.last_error,
                l.tap, l.mac, l.guest_ip, l.gateway, l.prefix_len,
                d.path, d.backend,
                p.pid, p.start_time, p.api_socket, p.binary, p.vsock_cid, p.left_frozen
         FROM vms v
         LEFT JOIN leases l ON l.vm = v.name
         LEFT JOIN disks d ON d.vm = v.name
         LEFT JOIN processes p ON p.vm = v.name
         ORDER BY v.name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(RawRow {
            name: r.get(0)?,
            spec: r.get(1)?,
            state: r.get(2)?,
            nat: r.get(3)?,
            last_error: r.get(4)?,
            tap: r.get(5)?,
            mac: r.get(6)?,
            guest_ip: r.get(7)?,
            gateway: r.get(8)?,
            prefix_len: r.get(9)?,
            disk_path: r.get(10)?,
            disk_backend: r.get(11)?,
            pid: r.get(12)?,
            start_time: r.get(13)?,
            api_socket: r.get(14)?,
            binary: r.get(15)?,
            vsock_cid: r.get(16)?,
            left_frozen: r.get(17)?,
        })
    })?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row?.decode()?);
    }
    let mut stmt =
        conn.prepare(
        "SELECT vm, attempts, last_start_ms, deadline_ms, created_ms, restart_due_ms FROM vm_policy",
    )?;
    let policies = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            PolicyState {
                attempts: r.get(1)?,
                last_start: r.get::<_, Option<i64>>(2)?.map(from_ms),
                deadline: r.get::<_, Option<i64>>(3)?.map(from_ms),
                created: r.get::<_, Option<i64>>(4)?.map(from_ms),
                restart_due: r.get::<_, Option<i64>>(5)?.map(from_ms),
            },
        ))
    })?;
    for row in policies {
        let (vm, policy) = row?;
        if let Some(rec) = out.iter_mut().find(|r| r.spec.name == vm) {
            rec.policy = policy;
        }
    }
    super::uids::load_into(conn, &mut out)?;
    Ok(out)
}

/// Wall-clock milliseconds since the Unix epoch, as stored (times before it store as 0).
pub(super) fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

struct RawRow {
    name: String,
    spec: String,
    state: String,
    nat: bool,
    last_error: Option<String>,
    tap: Option<String>,
    mac: Option<String>,
    guest_ip: Option<String>,
    gateway: Option<String>,
    prefix_len: Option<u8>,
    disk_path: Option<String>,
    disk_backend: Option<String>,
    pid: Option<u32>,
    start_time: Option<i64>,
    api_socket: Option<String>,
    binary: Option<String>,
    vsock_cid: Option<u32>,
    left_frozen: Option<bool>,
}

impl RawRow {
    fn decode(self) -> Result<VmRecord, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            vm: self.name.clone(),
            reason,
        };
        let spec: CreateVm =
            serde_json::from_str(&self.spec).map_err(|e| corrupt(format!("spec: {e}")))?;
        let state: VmState = self.state.parse().map_err(corrupt)?;
        let lease = match (
            &self.tap,
            &self.mac,
            &self.guest_ip,
            &self.gateway,
            self.prefix_len,
        ) {
            (Some(tap), Some(mac), Some(ip), Some(gw), Some(prefix_len)) => Some(NetLease {
                tap: tap.clone(),
                mac: mac.parse().map_err(|e| corrupt(format!("mac: {e}")))?,
                guest_ip: ip
                    .parse::<Ipv4Addr>()
                    .map_err(|e| corrupt(format!("guest_ip: {e}")))?,
                gateway: gw
                    .parse::<Ipv4Addr>()
                    .map_err(|e| corrupt(format!("gateway: {e}")))?,
                prefix_len,
            }),
            _ => None,
        };
        let disk = match (&self.disk_path, &self.disk_backend) {
            (Some(path), Some(backend)) => Some(DiskRecord {
                path: PathBuf::from(path),
                backend: backend
                    .parse()
                    .map_err(|e| corrupt(format!("disk backend: {e}")))?,
            }),
            _ => None,
        };
        let process = match (&self.api_socket, &self.binary, self.vsock_cid) {
            (Some(api), Some(binary), Some(cid)) => Some(VmmProcessRecord {
                pid: self.pid,
                start_time: self.start_time.map(|t| t as u64),
                api_socket: PathBuf::from(api),
                binary: PathBuf::from(binary),
                vsock_cid: cid,
                left_frozen: self.left_frozen.unwrap_or(false),
            }),
            _ => None,
        };
        Ok(VmRecord {
            spec,
            state,
            nat: self.nat,
            last_error: self.last_error,
            lease,
            disk,
            process,
            policy: PolicyState::default(),
            uid: None,
        })
    }
}

pub(super) fn events_since(
    conn: &Connection,
    since: u64,
    limit: u32,
) -> Result<Vec<Event>, StoreError> {
    // Sequence numbers are SQLite integers: nothing lies above i64::MAX, and `as i64` would
    // wrap a larger `since` negative and return the log from its start.
    let Ok(since) = i64::try_from(since) else {
        return Ok(Vec::new());
    };
    let mut stmt = conn.prepare(
        "SELECT seq, at_ms, vm, state, reason, detail FROM events
         WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![since, limit], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, at_ms, vm, state, reason, detail) = row?;
        let corrupt = |reason: String| StoreError::Corrupt {
            vm: vm.clone(),
            reason,
        };
        let state: VmState = state.parse().map_err(corrupt)?;
        let reason: EventReason = serde_json::from_value(serde_json::Value::String(reason))
            .map_err(|e| corrupt(format!("event reason: {e}")))?;
        out.push(Event {
            seq: seq as u64,
            at_ms: at_ms as u64,
            vm,
            state,
            reason,
            exit_status: hearth_proto::api::exit_status_of(state, detail.as_deref()),
            detail,
        });
    }
    Ok(out)
}

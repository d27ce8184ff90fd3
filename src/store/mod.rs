//! hearthd's state: an embedded SQLite database (WAL, synchronous writes) holding the VM table
//! and the resources each VM holds. Every side effect is preceded by a resource row (lease,
//! disk, process), so after a crash at any instant hearthd can tell what it owns. Also the
//! persisted event log and the idempotency keys of API requests. [`Store`] implements the
//! supervisor's store port, `supervisor::VmStore`.

mod migrations;
mod records;
mod snapshots;
mod uids;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use hearth_actors::lease::NetLease;
use hearth_proto::api::{CreateVm, Event, EventReason, VmState};
use rusqlite::{params, Connection, OptionalExtension};

pub use hearth_actors::supervisor::{
    DiskRecord, PolicyState, SnapshotRecord, VmRecord, VmmProcessRecord,
};
use hearth_actors::supervisor::{VmStore, VmStoreError};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or migrated.
    #[error("Cannot open the state database {path}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The database was written by a newer hearth.
    #[error("The state database has schema version {found}, newer than this hearth's {supported}")]
    TooNew {
        /// Version found in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// A VM with that name exists already.
    #[error("A VM named {0:?} already exists")]
    Exists(String),
    /// No VM with that name.
    #[error("No VM named {0:?}")]
    NotFound(String),
    /// A snapshot with that name exists already.
    #[error("A snapshot named {0:?} already exists")]
    SnapshotExists(String),
    /// No snapshot with that name.
    #[error("No snapshot named {0:?}")]
    SnapshotNotFound(String),
    /// A stored row does not decode (hand-edited or corrupt database).
    #[error("Corrupt row for VM {vm:?}: {reason}")]
    Corrupt {
        /// The VM the row belongs to.
        vm: String,
        /// What did not decode.
        reason: String,
    },
    /// Any other SQLite failure.
    #[error("State database operation failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `synchronous=NORMAL` in WAL mode: a commit is written to the WAL (in the OS) before it
    /// returns, so it survives any crash of hearthd, including `kill -9`; only a power loss or
    /// kernel crash can roll back the newest commits, and those also end every VM (the leak
    /// sweep finds disks by name). About 10 µs per commit.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is fsynced, surviving power loss too; measured at
    /// ~4 ms per commit on this project's machines (a create makes about a dozen).
    Full,
}

/// The state database. Owned by one actor (the supervisor); not shared.
pub struct Store {
    conn: Connection,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, Durability::default())
    }

    /// [`Store::open`] with a chosen durability.
    pub fn open_with(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        Self::init(conn, durability).map_err(|e| match e {
            StoreError::Sqlite(source) => open_err(source),
            other => other,
        })
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?, Durability::default())
    }

    fn init(mut conn: Connection, durability: Durability) -> Result<Self, StoreError> {
        // WAL lets readers proceed during a write. Either durability makes a commit survive
        // a crash of hearthd before the side effect it records happens (see `Durability`).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let sync = match durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::migrate(&mut conn)?;
        Ok(Store { conn })
    }

    /// Records a new VM in `Creating`. Fails with `Exists` if the name is taken.
    ///
    /// # Panics
    ///
    /// Never in practice: a `CreateVm` (strings, numbers, a string map) always serialises.
    pub fn insert_vm(&self, spec: &CreateVm) -> Result<(), StoreError> {
        let spec_json = serde_json::to_string(spec).expect("CreateVm serialises");
        let res = self.conn.execute(
            "INSERT INTO vms (name, spec, state, nat, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                spec.name,
                spec_json,
                VmState::Creating.as_str(),
                spec.nat,
                now_ms() as i64
            ],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Exists(spec.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sets a VM's state and last error.
    pub fn set_state(
        &self,
        vm: &str,
        state: VmState,
        last_error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.update(
            vm,
            "UPDATE vms SET state = ?2, last_error = ?3 WHERE name = ?1",
            params![vm, state.as_str(), last_error],
        )
    }

    /// Sets whether NAT is wanted for a VM.
    pub fn set_nat(&self, vm: &str, nat: bool) -> Result<(), StoreError> {
        self.update(
            vm,
            "UPDATE vms SET nat = ?2 WHERE name = ?1",
            params![vm, nat],
        )
    }

    /// Records the network lease a VM holds (before the VM uses it).
    pub fn put_lease(&self, vm: &str, lease: &NetLease) -> Result<(), StoreError> {
        self.conn.execute(
            // An upsert on the VM only: a clash on the TAP or IP with another VM is an error,
            // where INSERT OR REPLACE would silently delete that VM's lease.
            "INSERT INTO leases (vm, tap, mac, guest_ip, gateway, prefix_len)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(vm) DO UPDATE SET tap = excluded.tap, mac = excluded.mac,
               guest_ip = excluded.guest_ip, gateway = excluded.gateway,
               prefix_len = excluded.prefix_len",
            params![
                vm,
                lease.tap,
                lease.mac.to_string(),
                lease.guest_ip.to_string(),
                lease.gateway.to_string(),
                lease.prefix_len
            ],
        )?;
        Ok(())
    }

    /// Forgets a VM's lease (after it was released).
    pub fn clear_lease(&self, vm: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM leases WHERE vm = ?1", params![vm])?;
        Ok(())
    }

    /// Records a VM's root disk (before it is made, so a half-made one is found later).
    pub fn put_disk(&self, vm: &str, disk: &DiskRecord) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO disks (vm, path, backend) VALUES (?1, ?2, ?3)
             ON CONFLICT(vm) DO UPDATE SET path = excluded.path, backend = excluded.backend",
            params![vm, disk.path.to_string_lossy(), disk.backend.to_string()],
        )?;
        Ok(())
    }

    /// Forgets a VM's disk (after it was removed).
    pub fn clear_disk(&self, vm: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM disks WHERE vm = ?1", params![vm])?;
        Ok(())
    }

    /// Records a VM's VMM process: paths before spawn, pid and start time right after.
    pub fn put_process(&self, vm: &str, p: &VmmProcessRecord) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO processes (vm, pid, start_time, api_socket, binary, vsock_cid,
               left_frozen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(vm) DO UPDATE SET pid = excluded.pid, start_time = excluded.start_time,
               api_socket = excluded.api_socket, binary = excluded.binary,
               vsock_cid = excluded.vsock_cid, left_frozen = excluded.left_frozen",
            params![
                vm,
                p.pid,
                p.start_time.map(|t| t as i64),
                p.api_socket.to_string_lossy(),
                p.binary.to_string_lossy(),
                p.vsock_cid,
                p.left_frozen
            ],
        )?;
        Ok(())
    }

    /// Forgets a VM's process (after it exited and its files were removed).
    pub fn clear_process(&self, vm: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM processes WHERE vm = ?1", params![vm])?;
        Ok(())
    }

    /// Replaces a VM's spec.
    ///
    /// # Panics
    ///
    /// Never in practice: a `CreateVm` always serialises.
    pub fn put_spec(&self, vm: &str, spec: &CreateVm) -> Result<(), StoreError> {
        let spec_json = serde_json::to_string(spec).expect("CreateVm serialises");
        self.update(
            vm,
            "UPDATE vms SET spec = ?2 WHERE name = ?1",
            params![vm, spec_json],
        )
    }

    /// Records a VM's lifecycle-policy bookkeeping.
    pub fn put_policy(&self, vm: &str, policy: &PolicyState) -> Result<(), StoreError> {
        let exists: Option<i64> = self
            .conn
            .query_row("SELECT 1 FROM vms WHERE name = ?1", params![vm], |r| {
                r.get(0)
            })
            .optional()?;
        if exists.is_none() {
            return Err(StoreError::NotFound(vm.to_owned()));
        }
        self.conn.execute(
            "INSERT INTO vm_policy
               (vm, attempts, last_start_ms, deadline_ms, created_ms, restart_due_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(vm) DO UPDATE
             SET attempts = ?2, last_start_ms = ?3, deadline_ms = ?4, created_ms = ?5,
                 restart_due_ms = ?6",
            params![
                vm,
                policy.attempts,
                policy.last_start.map(records::to_ms),
                policy.deadline.map(records::to_ms),
                policy.created.map(records::to_ms),
                policy.restart_due.map(records::to_ms)
            ],
        )?;
        Ok(())
    }

    /// The host's cordon reason, when it is cordoned.
    pub fn cordon(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM node WHERE key = 'cordon'", [], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Cordons the host with `reason`, or with `None` uncordons it.
    pub fn put_cordon(&self, reason: Option<&str>) -> Result<(), StoreError> {
        match reason {
            Some(r) => self.conn.execute(
                "INSERT INTO node (key, value) VALUES ('cordon', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = ?1",
                params![r],
            )?,
            None => self
                .conn
                .execute("DELETE FROM node WHERE key = 'cordon'", [])?,
        };
        Ok(())
    }

    /// The value stored under `key` in the host's own settings (`node` table).
    pub fn node_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM node WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Stores `value` under `key` in the host's own settings, or with `None` removes it.
    pub fn put_node_value(&self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        match value {
            Some(v) => self.conn.execute(
                "INSERT INTO node (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = ?2",
                params![key, v],
            )?,
            None => self
                .conn
                .execute("DELETE FROM node WHERE key = ?1", params![key])?,
        };
        Ok(())
    }

    /// Removes a VM and its resource rows.
    pub fn delete_vm(&self, vm: &str) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        for table in ["leases", "disks", "processes", "vm_policy", "jail_uids"] {
            tx.execute(&format!("DELETE FROM {table} WHERE vm = ?1"), params![vm])?;
        }
        let n = tx.execute("DELETE FROM vms WHERE name = ?1", params![vm])?;
        tx.commit()?;
        if n == 0 {
            return Err(StoreError::NotFound(vm.to_owned()));
        }
        Ok(())
    }

    /// Every VM with its resource rows, ordered by name.
    pub fn load_all(&self) -> Result<Vec<VmRecord>, StoreError> {
        records::load_all(&self.conn)
    }

    /// Appends an event and returns it with its sequence number.
    pub fn append_event(
        &self,
        vm: &str,
        state: VmState,
        reason: EventReason,
        detail: Option<&str>,
    ) -> Result<Event, StoreError> {
        let at_ms = now_ms();
        let reason_text = serde_json::to_value(reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.conn.execute(
            "INSERT INTO events (at_ms, vm, state, reason, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![at_ms as i64, vm, state.as_str(), reason_text, detail],
        )?;
        Ok(Event {
            seq: self.conn.last_insert_rowid() as u64,
            at_ms,
            vm: vm.to_owned(),
            state,
            reason,
            detail: detail.map(str::to_owned),
            exit_status: hearth_proto::api::exit_status_of(state, detail),
        })
    }

    /// Events with a sequence number above `since`, oldest first, at most `limit`.
    pub fn events_since(&self, since: u64, limit: u32) -> Result<Vec<Event>, StoreError> {
        records::events_since(&self.conn, since, limit)
    }

    /// The response stored for an idempotency key, with the hash of the request that made it.
    pub fn idempotent_response(&self, key: &str) -> Result<Option<(String, String)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT request_hash, response FROM idempotency WHERE key = ?1",
                params![key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Stores the response to a request made with an idempotency key.
    pub fn put_idempotent_response(
        &self,
        key: &str,
        request_hash: &str,
        response: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO idempotency (key, request_hash, response, at_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![key, request_hash, response, now_ms() as i64],
        )?;
        Ok(())
    }

    fn update(&self, vm: &str, sql: &str, params: impl rusqlite::Params) -> Result<(), StoreError> {
        match self.conn.execute(sql, params)? {
            0 => Err(StoreError::NotFound(vm.to_owned())),
            _ => Ok(()),
        }
    }
}

impl From<StoreError> for VmStoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists(name) => VmStoreError::Exists(name),
            StoreError::NotFound(name) => VmStoreError::NotFound(name),
            StoreError::SnapshotExists(name) => VmStoreError::SnapshotExists(name),
            StoreError::SnapshotNotFound(name) => VmStoreError::SnapshotNotFound(name),
            other => VmStoreError::Storage(other.to_string()),
        }
    }
}

/// The supervisor's persistence port, on SQLite.
impl VmStore for Store {
    fn insert_vm(&mut self, spec: &CreateVm) -> Result<(), VmStoreError> {
        Ok(Store::insert_vm(self, spec)?)
    }
    fn set_state(
        &mut self,
        vm: &str,
        state: VmState,
        last_error: Option<&str>,
    ) -> Result<(), VmStoreError> {
        Ok(Store::set_state(self, vm, state, last_error)?)
    }
    fn set_nat(&mut self, vm: &str, nat: bool) -> Result<(), VmStoreError> {
        Ok(Store::set_nat(self, vm, nat)?)
    }
    fn put_lease(&mut self, vm: &str, lease: &NetLease) -> Result<(), VmStoreError> {
        Ok(Store::put_lease(self, vm, lease)?)
    }
    fn clear_lease(&mut self, vm: &str) -> Result<(), VmStoreError> {
        Ok(Store::clear_lease(self, vm)?)
    }
    fn put_disk(&mut self, vm: &str, disk: &DiskRecord) -> Result<(), VmStoreError> {
        Ok(Store::put_disk(self, vm, disk)?)
    }
    fn clear_disk(&mut self, vm: &str) -> Result<(), VmStoreError> {
        Ok(Store::clear_disk(self, vm)?)
    }
    fn put_process(&mut self, vm: &str, process: &VmmProcessRecord) -> Result<(), VmStoreError> {
        Ok(Store::put_process(self, vm, process)?)
    }
    fn clear_process(&mut self, vm: &str) -> Result<(), VmStoreError> {
        Ok(Store::clear_process(self, vm)?)
    }
    fn put_spec(&mut self, vm: &str, spec: &CreateVm) -> Result<(), VmStoreError> {
        Ok(Store::put_spec(self, vm, spec)?)
    }
    fn put_policy(&mut self, vm: &str, policy: &PolicyState) -> Result<(), VmStoreError> {
        Ok(Store::put_policy(self, vm, policy)?)
    }
    fn put_uid(&mut self, vm: &str, uid: Option<u32>) -> Result<(), VmStoreError> {
        Ok(Store::put_uid(self, vm, uid)?)
    }
    fn cordon(&mut self) -> Result<Option<String>, VmStoreError> {
        Ok(Store::cordon(self)?)
    }
    fn put_cordon(&mut self, reason: Option<&str>) -> Result<(), VmStoreError> {
        Ok(Store::put_cordon(self, reason)?)
    }
    fn node_value(&mut self, key: &str) -> Result<Option<String>, VmStoreError> {
        Ok(Store::node_value(self, key)?)
    }
    fn put_node_value(&mut self, key: &str, value: Option<&str>) -> Result<(), VmStoreError> {
        Ok(Store::put_node_value(self, key, value)?)
    }
    fn delete_vm(&mut self, vm: &str) -> Result<(), VmStoreError> {
        Ok(Store::delete_vm(self, vm)?)
    }
    fn load_all(&mut self) -> Result<Vec<VmRecord>, VmStoreError> {
        Ok(Store::load_all(self)?)
    }
    fn append_event(
        &mut self,
        vm: &str,
        state: VmState,
        reason: EventReason,
        detail: Option<&str>,
    ) -> Result<Event, VmStoreError> {
        Ok(Store::append_event(self, vm, state, reason, detail)?)
    }
    fn events_since(&mut self, since: u64, limit: u32) -> Result<Vec<Event>, VmStoreError> {
        Ok(Store::events_since(self, since, limit)?)
    }
    fn idempotent_response(&mut self, key: &str) -> Result<Option<(String, String)>, VmStoreError> {
        Ok(Store::idempotent_response(self, key)?)
    }
    fn put_idempotent_response(
        &mut self,
        key: &str,
        request_hash: &str,
        response: &str,
    ) -> Result<(), VmStoreError> {
        Ok(Store::put_idempotent_response(
            self,
            key,
            request_hash,
            response,
        )?)
    }
    fn insert_snapshot(&mut self, snapshot: &SnapshotRecord) -> Result<(), VmStoreError> {
        Ok(Store::insert_snapshot(self, snapshot)?)
    }
    fn put_snapshot(&mut self, snapshot: &SnapshotRecord) -> Result<(), VmStoreError> {
        Ok(Store::put_snapshot(self, snapshot)?)
    }
    fn delete_snapshot(&mut self, name: &str) -> Result<(), VmStoreError> {
        Ok(Store::delete_snapshot(self, name)?)
    }
    fn load_snapshots(&mut self) -> Result<Vec<SnapshotRecord>, VmStoreError> {
        Ok(Store::load_snapshots(self)?)
    }
}

#[cfg(test)]
mod tests;

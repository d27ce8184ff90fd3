//! Schema migrations, applied in order; `PRAGMA user_version` records how many have run.

use rusqlite::Connection;

use super::StoreError;

/// Each entry moves the schema one version forward. Never edit a released entry; append.
const MIGRATIONS: &[&str] = &[
    // 1: VMs and the resources they hold, events, idempotency keys.
    "CREATE TABLE vms (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        nat INTEGER NOT NULL,
        last_error TEXT,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE leases (
        vm TEXT PRIMARY KEY REFERENCES vms(name),
        tap TEXT NOT NULL UNIQUE,
        mac TEXT NOT NULL,
        guest_ip TEXT NOT NULL UNIQUE,
        gateway TEXT NOT NULL,
        prefix_len INTEGER NOT NULL
    );
    CREATE TABLE disks (
        vm TEXT PRIMARY KEY REFERENCES vms(name),
        path TEXT NOT NULL,
        backend TEXT NOT NULL
    );
    CREATE TABLE processes (
        vm TEXT PRIMARY KEY REFERENCES vms(name),
        pid INTEGER,
        start_time INTEGER,
        api_socket TEXT NOT NULL,
        binary TEXT NOT NULL,
        vsock_cid INTEGER NOT NULL
    );
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        vm TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT NOT NULL,
        detail TEXT
    );
    CREATE TABLE idempotency (
        key TEXT PRIMARY KEY,
        request_hash TEXT NOT NULL,
        response TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    );",
    // 2: VM snapshots, recorded before their files are written. The record (what the
    // snapshot was taken with and of) is JSON; name, state and source are columns to query.
    "CREATE TABLE snapshots (
        name TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        source_vm TEXT NOT NULL,
        record TEXT NOT NULL
    );",
    // 3: lifecycle-policy bookkeeping, one row
    // per VM that has any: restart history and the time limit's deadline (wall clock, ms); the
    // host's own settings (`cordon` = its reason while cordoned).
    "CREATE TABLE vm_policy (
        vm TEXT PRIMARY KEY REFERENCES vms(name),
        attempts INTEGER NOT NULL,
        last_start_ms INTEGER,
        deadline_ms INTEGER,
        created_ms INTEGER
    );
    CREATE TABLE node (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    // 4, jailer: the uid (and gid of the same number) each jailed VM runs as, leased for the
    // VM's life; UNIQUE so that no two VMs ever hold one uid.
    "CREATE TABLE jail_uids (
        vm TEXT PRIMARY KEY REFERENCES vms(name),
        uid INTEGER NOT NULL UNIQUE
    );",
    // 5, policy: when a pending restart is due (wall clock, ms), so its backoff survives a
    // restart of hearthd.
    "ALTER TABLE vm_policy ADD COLUMN restart_due_ms INTEGER;",
    // 6, snapshots: a VMM process a snapshot left paused with its guest's root filesystem
    // frozen, whose snapshot was then removed: its next resume still thaws (1).
    "ALTER TABLE processes ADD COLUMN left_frozen INTEGER NOT NULL DEFAULT 0;",
];

/// Brings the schema to the newest version, each step in its own transaction.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let supported = MIGRATIONS.len() as i64;
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > supported {
        return Err(StoreError::TooNew { found, supported });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

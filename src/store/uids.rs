//! The uid each jailed VM runs as (issue 16): one row per VM holding a lease, removed with the
//! VM. The supervisor's `UidPool` is rebuilt from these rows at `Open`.

use hearth_actors::supervisor::VmRecord;
use rusqlite::{params, Connection};

use super::{Store, StoreError};

impl Store {
    /// Records the uid `vm` runs as when jailed, or with `None` forgets it (released).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] for an unknown VM; an SQLite error when another VM holds the
    /// uid (the column is unique).
    pub fn put_uid(&self, vm: &str, uid: Option<u32>) -> Result<(), StoreError> {
        match uid {
            Some(uid) => {
                let known: bool = self.conn.query_row(
                    "SELECT EXISTS(SELECT 1 FROM vms WHERE name = ?1)",
                    params![vm],
                    |r| r.get(0),
                )?;
                if !known {
                    return Err(StoreError::NotFound(vm.to_owned()));
                }
                self.conn.execute(
                    "INSERT INTO jail_uids (vm, uid) VALUES (?1, ?2)
                     ON CONFLICT(vm) DO UPDATE SET uid = ?2",
                    params![vm, uid],
                )?;
            }
            None => {
                self.conn
                    .execute("DELETE FROM jail_uids WHERE vm = ?1", params![vm])?;
            }
        }
        Ok(())
    }
}

/// Fills in the recorded uid of each VM in `records`.
pub(super) fn load_into(conn: &Connection, records: &mut [VmRecord]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare("SELECT vm, uid FROM jail_uids")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?;
    for row in rows {
        let (vm, uid) = row?;
        if let Some(rec) = records.iter_mut().find(|r| r.spec.name == vm) {
            rec.uid = Some(uid);
        }
    }
    Ok(())
}

//! The `snapshots` table: one row per VM snapshot, written before its files are (see
//! `hearth_actors::supervisor::SnapshotRecord`).

use rusqlite::params;

use super::{SnapshotRecord, Store, StoreError};

impl Store {
    /// Records a new snapshot. Fails with `SnapshotExists` if the name is taken.
    pub fn insert_snapshot(&self, s: &SnapshotRecord) -> Result<(), StoreError> {
        let res = self.conn.execute(
            "INSERT INTO snapshots (name, state, source_vm, record) VALUES (?1, ?2, ?3, ?4)",
            params![s.name, s.state.as_str(), s.source_vm, encode(s)?],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::SnapshotExists(s.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces a snapshot's record.
    pub fn put_snapshot(&self, s: &SnapshotRecord) -> Result<(), StoreError> {
        let n = self.conn.execute(
            "UPDATE snapshots SET state = ?2, source_vm = ?3, record = ?4 WHERE name = ?1",
            params![s.name, s.state.as_str(), s.source_vm, encode(s)?],
        )?;
        if n == 0 {
            return Err(StoreError::SnapshotNotFound(s.name.clone()));
        }
        Ok(())
    }

    /// Forgets a snapshot.
    pub fn delete_snapshot(&self, name: &str) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM snapshots WHERE name = ?1", params![name])?;
        if n == 0 {
            return Err(StoreError::SnapshotNotFound(name.to_owned()));
        }
        Ok(())
    }

    /// Every snapshot, ordered by name.
    pub fn load_snapshots(&self) -> Result<Vec<SnapshotRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, record FROM snapshots ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, json) = row?;
            out.push(
                serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                    vm: format!("snapshot {name}"),
                    reason: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }
}

fn encode(s: &SnapshotRecord) -> Result<String, StoreError> {
    serde_json::to_string(s).map_err(|e| StoreError::Corrupt {
        vm: format!("snapshot {}", s.name),
        reason: e.to_string(),
    })
}

//! Per-name updates of the table: [`SetName`] and [`RemoveName`] change one VM's name and
//! swap in a table rebuilt from the actor's map (the same atomic swap as [`ReplaceRecords`]),
//! so a capability can publish or withdraw one name without knowing the others.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use actix::prelude::*;

use super::table::RecordTable;
use super::{DnsActor, DnsError, ReplaceRecords};

/// Answers `<name>.<zone>` with `ip` from now on (replacing an earlier address). A bad name
/// or address changes nothing.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), DnsError>")]
pub struct SetName {
    /// The VM name (one DNS label, case-insensitive).
    pub name: String,
    /// The guest's address.
    pub ip: Ipv4Addr,
}

/// Stops answering `<name>.<zone>`. Removing a name that is not there does nothing.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), DnsError>")]
pub struct RemoveName {
    /// The VM name.
    pub name: String,
}

impl DnsActor {
    /// Builds a table from `records` and swaps it in; on error the table in use stays.
    pub(super) fn install(
        &mut self,
        records: HashMap<String, Ipv4Addr>,
        ctx: &mut Context<Self>,
    ) -> Result<(), DnsError> {
        let serial = self.serial.wrapping_add(1);
        let table = RecordTable::build(&self.zone, &records, serial)?;
        let names = table.len();
        let old = self.table.swap(Arc::new(table));
        // Freeing 1000 names takes a while: do it after the reply has gone out (unless a
        // request handler still answering from the old table frees it last).
        ctx.spawn(fut::wrap_future(async move { drop(old) }));
        self.serial = serial;
        self.names = records
            .into_iter()
            .map(|(name, ip)| (name.to_ascii_lowercase(), ip))
            .collect();
        slog::debug!(self.logger, "DNS records replaced"; "names" => names, "serial" => serial);
        Ok(())
    }
}

impl Handler<ReplaceRecords> for DnsActor {
    type Result = Result<(), DnsError>;

    fn handle(&mut self, msg: ReplaceRecords, ctx: &mut Self::Context) -> Self::Result {
        self.install(msg.records, ctx)
    }
}

impl Handler<SetName> for DnsActor {
    type Result = Result<(), DnsError>;

    fn handle(&mut self, msg: SetName, ctx: &mut Self::Context) -> Self::Result {
        let key = msg.name.to_ascii_lowercase();
        if self.names.get(&key) == Some(&msg.ip) {
            return Ok(());
        }
        let mut records = self.names.clone();
        records.insert(key, msg.ip);
        self.install(records, ctx)
    }
}

impl Handler<RemoveName> for DnsActor {
    type Result = Result<(), DnsError>;

    fn handle(&mut self, msg: RemoveName, ctx: &mut Self::Context) -> Self::Result {
        let key = msg.name.to_ascii_lowercase();
        if !self.names.contains_key(&key) {
            return Ok(());
        }
        let mut records = self.names.clone();
        records.remove(&key);
        self.install(records, ctx)
    }
}

//! `DnsActor`'s message handlers (the actor in `mod.rs`, messages in `messages.rs`).

use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;
use slog::info;

use super::table::RecordTable;
use super::{DnsActor, DnsError, ReplaceRecords, Start, Stop};

impl Handler<Start> for DnsActor {
    type Result = AtomicResponse<Self, Result<SocketAddr, DnsError>>;

    fn handle(&mut self, msg: Start, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(running) = &self.server {
            if running.local_addr() == msg.listen {
                let local = running.local_addr();
                return AtomicResponse::new(Box::pin(fut::ready(Ok(local))));
            }
        }
        match self.start_server(msg.listen) {
            Err(e) => AtomicResponse::new(Box::pin(fut::ready(Err(e)))),
            Ok((local, old)) => AtomicResponse::new(Box::pin(
                async move {
                    if let Some(old) = old {
                        old.stop().await;
                    }
                    Ok(local)
                }
                .into_actor(self),
            )),
        }
    }
}

impl Handler<Stop> for DnsActor {
    type Result = AtomicResponse<Self, Result<(), DnsError>>;

    fn handle(&mut self, _msg: Stop, _ctx: &mut Self::Context) -> Self::Result {
        let running = self.server.take();
        if let Some(running) = &running {
            info!(self.logger, "DNS stopping"; "listen" => %running.local_addr());
        }
        AtomicResponse::new(Box::pin(
            async move {
                if let Some(running) = running {
                    running.stop().await;
                }
                Ok(())
            }
            .into_actor(self),
        ))
    }
}

impl Handler<ReplaceRecords> for DnsActor {
    type Result = Result<(), DnsError>;

    fn handle(&mut self, msg: ReplaceRecords, ctx: &mut Self::Context) -> Self::Result {
        let serial = self.serial.wrapping_add(1);
        let table = RecordTable::build(&self.zone, &msg.records, serial)?;
        let names = table.len();
        let old = self.table.swap(Arc::new(table));
        // Freeing 1000 names takes a while: do it after the reply has gone out (unless a
        // request handler still answering from the old table frees it last).
        ctx.spawn(fut::wrap_future(async move { drop(old) }));
        self.serial = serial;
        slog::debug!(self.logger, "DNS records replaced"; "names" => names, "serial" => serial);
        Ok(())
    }
}

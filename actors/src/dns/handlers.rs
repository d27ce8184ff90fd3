//! `DnsActor`'s message handlers (the actor in `mod.rs`, messages in `messages.rs`).

use std::net::SocketAddr;

use actix::prelude::*;
use slog::info;

use super::{DnsActor, DnsError, Start, Stop};

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

//! Fork: a snapshot of a running VM (left running) under an internal name, restored as a new
//! VM, in one call. The internal snapshot (`<new VM>.fork`, a name no user can give) lives as
//! long as the new VM does: deleting that VM removes it. If the restore fails, the new VM is
//! left `failed` (like a failed create) and still holds the snapshot until it is deleted.

use actix::fut::{ready, ActorFutureExt, WrapFuture};
use actix::{AsyncContext, Context, Handler, ResponseActFuture};
use hearth_proto::api::{CreateVm, VmInfo};
use hearth_proto::api_snapshot::SnapshotLeave;

use super::{ForkVm, RestoreSnapshot, SupervisorError, VmSupervisor};

/// Internal: takes a snapshot with a name the API would refuse (a fork's own).
#[derive(Debug, actix::Message)]
#[rtype(result = "Result<hearth_proto::api_snapshot::SnapshotInfo, SupervisorError>")]
pub(super) struct TakeForkSnapshot {
    vm: String,
    name: String,
}

impl Handler<TakeForkSnapshot> for VmSupervisor {
    type Result = actix::ResponseActFuture<
        Self,
        Result<hearth_proto::api_snapshot::SnapshotInfo, SupervisorError>,
    >;

    fn handle(&mut self, msg: TakeForkSnapshot, _ctx: &mut Context<Self>) -> Self::Result {
        self.take_snapshot(msg.vm, msg.name, SnapshotLeave::Running, true)
    }
}

impl Handler<ForkVm> for VmSupervisor {
    type Result = ResponseActFuture<Self, Result<VmInfo, SupervisorError>>;

    fn handle(&mut self, msg: ForkVm, ctx: &mut Context<Self>) -> Self::Result {
        let key = msg.idempotency;
        let replay = self
            .check_open()
            .and_then(|()| msg.spec.validate().map_err(SupervisorError::from))
            .and_then(|()| self.idempotent_replay(key.as_ref()));
        match replay {
            Err(e) => return Box::pin(ready(Err(e))),
            // The first fork's VM again, not a second one (nor "name taken").
            Ok(Some(info)) => return Box::pin(ready(Ok(info))),
            Ok(None) => {}
        }
        let checked = (|| {
            let source = self.entry(&msg.source)?;
            if self.vms.contains_key(&msg.spec.name) {
                return Err(SupervisorError::Conflict {
                    message: format!("A VM named {:?} already exists", msg.spec.name),
                });
            }
            Ok(source.record.spec.clone())
        })();
        let source_spec = match checked {
            Ok(s) => s,
            Err(e) => {
                self.idempotent_store(key, &Err(e.clone()));
                return Box::pin(ready(Err(e)));
            }
        };
        let me = ctx.address();
        let snapshot = format!("{}.fork", msg.spec.name);
        Box::pin(
            async move {
                let mailbox = |e| SupervisorError::step("fork", e);
                me.send(TakeForkSnapshot {
                    vm: msg.source,
                    name: snapshot.clone(),
                })
                .await
                .map_err(mailbox)??;
                // The machine is the snapshot's (filled in by the restore); NAT, the probe and
                // the labels are the source's.
                let spec = CreateVm {
                    name: msg.spec.name,
                    kernel: String::new(),
                    rootfs: String::new(),
                    disk_size: None,
                    boot_args: None,
                    from_snapshot: Some(snapshot.clone()),
                    ..source_spec
                };
                let restored = me.send(RestoreSnapshot { spec }).await.map_err(mailbox)?;
                if restored.is_err() {
                    // Refused before a VM was recorded (e.g. the name was taken meanwhile): the
                    // snapshot has no user and goes; a failed VM keeps it until deleted.
                    let _ = me.send(super::DeleteSnapshot { name: snapshot }).await;
                }
                restored
            }
            .into_actor(self)
            .map(move |res, act, _| {
                act.idempotent_store(key, &res);
                res
            }),
        )
    }
}

//! `PublishPort` / `UnpublishPort`: a run-time change of a VM's published ports. Under the
//! VM's lock: the new list is checked whole, applied to a live VM through its capabilities'
//! `reconfigure` (nothing changes on a conflict), then recorded in the spec. A VM that is not
//! alive only has its spec changed; its next boot publishes.

use actix::{AsyncContext, Context, Handler, Message, ResponseActFuture};
use futures::FutureExt;
use hearth_proto::api::VmState;
use hearth_proto::api_publish::PortMapping;

use super::hooks::{self, spec_with_nat};
use super::{Change, SupervisorError, VmSupervisor};

/// Publishes one more port of a VM (running or not). Answers the VM's ports. Publishing a
/// port it already has changes nothing.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<PortMapping>, SupervisorError>")]
pub struct PublishPort {
    /// The VM.
    pub name: String,
    /// The port.
    pub mapping: PortMapping,
}

/// Withdraws one published port of a VM. Answers the VM's ports; `NotPublished` (HTTP 404)
/// when it has no such port.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<PortMapping>, SupervisorError>")]
pub struct UnpublishPort {
    /// The VM.
    pub name: String,
    /// The port.
    pub mapping: PortMapping,
}

/// Internal: records `publish` as the VM's ports (only that field of the spec, so a
/// concurrent label or policy change is kept).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), SupervisorError>")]
struct CommitPublish {
    vm: String,
    publish: Vec<PortMapping>,
}

impl Handler<CommitPublish> for VmSupervisor {
    type Result = Result<(), SupervisorError>;

    fn handle(&mut self, msg: CommitPublish, _: &mut Context<Self>) -> Self::Result {
        let mut spec = self.entry(&msg.vm)?.record.spec.clone();
        spec.publish = msg.publish;
        self.apply(&msg.vm, Change::Spec(Box::new(spec)))
    }
}

impl VmSupervisor {
    /// Changes `name`'s ports to what `edit` makes of them (or its error).
    fn change_ports(
        &mut self,
        name: String,
        edit: impl FnOnce(&mut Vec<PortMapping>) -> Result<(), SupervisorError> + 'static,
    ) -> ResponseActFuture<Self, Result<Vec<PortMapping>, SupervisorError>> {
        let n = name.clone();
        self.locked(
            &name.clone(),
            move |act, ctx| {
                act.check_open()?;
                let entry = act.entry(&n)?;
                if entry.record.state == VmState::Deleting {
                    return Err(SupervisorError::InvalidState {
                        name: n.clone(),
                        state: entry.record.state,
                        op: "change published ports",
                    });
                }
                let previous = spec_with_nat(&entry.record.spec, entry.record.nat);
                let mut spec = previous.clone();
                edit(&mut spec.publish)?;
                hearth_proto::api_publish::validate_publish("publish", &spec.publish)?;
                // Only a live VM has ports on the host.
                let lease = entry
                    .record
                    .lease
                    .clone()
                    .filter(|_| entry.record.state.is_alive());
                let ports = act.ports(ctx);
                let me = ctx.address();
                let n = n.clone();
                Ok(async move {
                    if spec.publish != previous.publish {
                        hooks::reconfigure(&ports, &n, lease.as_ref(), &previous, &spec).await?;
                        let commit = CommitPublish {
                            vm: n.clone(),
                            publish: spec.publish.clone(),
                        };
                        let recorded = me
                            .send(commit)
                            .await
                            .map_err(|e| SupervisorError::step("record state", e))
                            .and_then(|r| r);
                        if let Err(e) = recorded {
                            // Not recorded: the host goes back to the recorded ports.
                            let _ =
                                hooks::reconfigure(&ports, &n, lease.as_ref(), &spec, &previous)
                                    .await;
                            return Err(e);
                        }
                    }
                    Ok(())
                }
                .boxed_local())
            },
            move |act| Ok(act.entry(&name)?.record.spec.publish.clone()),
        )
    }
}

impl Handler<PublishPort> for VmSupervisor {
    type Result = ResponseActFuture<Self, Result<Vec<PortMapping>, SupervisorError>>;

    fn handle(&mut self, msg: PublishPort, _: &mut Context<Self>) -> Self::Result {
        let mapping = msg.mapping;
        self.change_ports(msg.name, move |ports| {
            if !ports.contains(&mapping) {
                ports.push(mapping);
            }
            Ok(())
        })
    }
}

impl Handler<UnpublishPort> for VmSupervisor {
    type Result = ResponseActFuture<Self, Result<Vec<PortMapping>, SupervisorError>>;

    fn handle(&mut self, msg: UnpublishPort, _: &mut Context<Self>) -> Self::Result {
        let (mapping, name) = (msg.mapping, msg.name.clone());
        self.change_ports(msg.name, move |ports| {
            let before = ports.len();
            ports.retain(|m| *m != mapping);
            if ports.len() == before {
                return Err(SupervisorError::NotPublished {
                    name,
                    mapping: mapping.to_string(),
                });
            }
            Ok(())
        })
    }
}

//! `PublishPort` / `UnpublishPort`: a run-time change of a VM's published ports
//! ([`super::live_change`]: nothing changes on a conflict; a VM that is not alive only has
//! its spec changed, and its next boot publishes).

use actix::{Context, Handler, Message, ResponseActFuture};
use hearth_proto::api_publish::PortMapping;

use super::live_change::{LiveChange, Record};
use super::{SupervisorError, VmSupervisor};

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

impl VmSupervisor {
    /// Changes `name`'s ports to what `edit` makes of them (or its error).
    fn change_ports(
        &mut self,
        name: String,
        edit: impl FnOnce(&mut Vec<PortMapping>) -> Result<(), SupervisorError> + 'static,
    ) -> ResponseActFuture<Self, Result<Vec<PortMapping>, SupervisorError>> {
        self.change_live(
            name,
            "change published ports",
            move |recorded| {
                let mut next = recorded.clone();
                edit(&mut next.publish)?;
                let publish = next.publish.clone();
                Ok(LiveChange {
                    next,
                    from: None,
                    record: Record::Spec(Box::new(move |spec| spec.publish = publish)),
                })
            },
            |act, name| Ok(act.entry(name)?.record.spec.publish.clone()),
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

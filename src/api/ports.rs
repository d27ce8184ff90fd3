//! The supervisor as the HTTP layer sees it: one mailbox per message it sends. Built from the
//! `Addr` of any actor that answers them all ([`SupervisorPorts::new`]), so the handlers run
//! unchanged against `VmSupervisor` or a test double.

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Recipient};
use hearth_actors::supervisor as sup;

/// The supervisor's mailboxes, one per message the API sends.
#[derive(Clone)]
pub struct SupervisorPorts {
    /// `POST /v1/vms`.
    pub create: Recipient<sup::CreateVm>,
    /// `POST /v1/vms/{name}/{action}`.
    pub action: Recipient<sup::RunAction>,
    /// `DELETE /v1/vms/{name}`.
    pub delete: Recipient<sup::DeleteVm>,
    /// `PUT /v1/vms/{name}/nat`.
    pub nat: Recipient<sup::SetNat>,
    /// `GET /v1/vms/{name}`.
    pub get: Recipient<sup::GetVm>,
    /// `GET /v1/vms`.
    pub list: Recipient<sup::ListVms>,
    /// `GET /v1/vms/{name}/wait`.
    pub wait: Recipient<sup::WaitForState>,
    /// `GET /v1/events` and the replay of the event stream.
    pub events: Recipient<sup::EventsSince>,
    /// The live part of the event stream.
    pub subscribe: Recipient<sup::Subscribe>,
    /// `GET /metrics`.
    pub metrics: Recipient<sup::GetMetrics>,
    /// Where a running VM's agent is (exec and archive endpoints, through `GuestActor`).
    pub guest: Recipient<sup::GuestEndpoint>,
    /// `PATCH /v1/vms/{name}`.
    pub update: Recipient<sup::UpdateVm>,
    /// `POST /v1/node/cordon|uncordon`.
    pub cordon: Recipient<sup::SetCordon>,
    /// `GET /v1/node`, `/v1/health`.
    pub node: Recipient<sup::GetNode>,
    /// `POST /v1/node/drain`.
    pub drain: Recipient<sup::Drain>,
    /// `POST /v1/vms/{name}/ports`.
    pub publish: Recipient<sup::PublishPort>,
    /// `DELETE /v1/vms/{name}/ports`.
    pub unpublish: Recipient<sup::UnpublishPort>,
    /// `PUT /v1/vms/{name}/egress`.
    pub egress: Recipient<sup::SetEgress>,
    /// `GET /v1/vms/{name}/egress`.
    pub get_egress: Recipient<sup::GetEgress>,
}

impl SupervisorPorts {
    /// The ports of `addr`.
    pub fn new<A>(addr: &Addr<A>) -> Self
    where
        A: Actor
            + Handler<sup::CreateVm>
            + Handler<sup::RunAction>
            + Handler<sup::DeleteVm>
            + Handler<sup::SetNat>
            + Handler<sup::GetVm>
            + Handler<sup::ListVms>
            + Handler<sup::WaitForState>
            + Handler<sup::EventsSince>
            + Handler<sup::Subscribe>
            + Handler<sup::GetMetrics>
            + Handler<sup::GuestEndpoint>
            + Handler<sup::UpdateVm>
            + Handler<sup::SetCordon>
            + Handler<sup::GetNode>
            + Handler<sup::Drain>
            + Handler<sup::PublishPort>
            + Handler<sup::UnpublishPort>
            + Handler<sup::SetEgress>
            + Handler<sup::GetEgress>,
        A::Context: ToEnvelope<A, sup::CreateVm>
            + ToEnvelope<A, sup::RunAction>
            + ToEnvelope<A, sup::DeleteVm>
            + ToEnvelope<A, sup::SetNat>
            + ToEnvelope<A, sup::GetVm>
            + ToEnvelope<A, sup::ListVms>
            + ToEnvelope<A, sup::WaitForState>
            + ToEnvelope<A, sup::EventsSince>
            + ToEnvelope<A, sup::Subscribe>
            + ToEnvelope<A, sup::GetMetrics>
            + ToEnvelope<A, sup::GuestEndpoint>
            + ToEnvelope<A, sup::UpdateVm>
            + ToEnvelope<A, sup::SetCordon>
            + ToEnvelope<A, sup::GetNode>
            + ToEnvelope<A, sup::Drain>
            + ToEnvelope<A, sup::PublishPort>
            + ToEnvelope<A, sup::UnpublishPort>
            + ToEnvelope<A, sup::SetEgress>
            + ToEnvelope<A, sup::GetEgress>,
    {
        SupervisorPorts {
            create: addr.clone().recipient(),
            action: addr.clone().recipient(),
            delete: addr.clone().recipient(),
            nat: addr.clone().recipient(),
            get: addr.clone().recipient(),
            list: addr.clone().recipient(),
            wait: addr.clone().recipient(),
            events: addr.clone().recipient(),
            subscribe: addr.clone().recipient(),
            metrics: addr.clone().recipient(),
            guest: addr.clone().recipient(),
            update: addr.clone().recipient(),
            cordon: addr.clone().recipient(),
            node: addr.clone().recipient(),
            drain: addr.clone().recipient(),
            publish: addr.clone().recipient(),
            unpublish: addr.clone().recipient(),
            egress: addr.clone().recipient(),
            get_egress: addr.clone().recipient(),
        }
    }
}

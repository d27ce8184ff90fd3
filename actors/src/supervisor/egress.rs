//! `SetEgress`: a live change of a VM's egress policy ([`super::live_change`]: the egress
//! capability changes the firewall and DNS), and `GetEgress`, the policy with its drop count.

use actix::{Context, Handler, ResponseActFuture};
use futures::FutureExt;
use hearth_proto::api::{CreateVm, VmInfo};

use hearth_proto::api_egress::EgressStatus;

use super::live_change::{LiveChange, Record};
use super::{GetEgress, SetEgress, SupervisorError, VmSupervisor};
use crate::nat::egress::GetEgressDenied;

impl Handler<SetEgress> for VmSupervisor {
    type Result = ResponseActFuture<Self, Result<VmInfo, SupervisorError>>;

    fn handle(&mut self, msg: SetEgress, _ctx: &mut Context<Self>) -> Self::Result {
        let policy = msg.policy;
        self.change_live(
            msg.name,
            "set egress policy",
            move |recorded| {
                let next = CreateVm {
                    egress: policy.clone(),
                    ..recorded.clone()
                };
                Ok(LiveChange {
                    next,
                    from: None,
                    record: Record::Spec(Box::new(move |spec| spec.egress = policy)),
                })
            },
            VmSupervisor::info_of,
        )
    }
}

impl Handler<GetEgress> for VmSupervisor {
    type Result = ResponseActFuture<Self, Result<EgressStatus, SupervisorError>>;

    fn handle(&mut self, msg: GetEgress, _ctx: &mut Context<Self>) -> Self::Result {
        use actix::fut::WrapFuture;
        let found = self.entry(&msg.name).map(|entry| {
            let policy = entry.record.spec.egress.clone().unwrap_or_default();
            let guest = entry.record.lease.as_ref().map(|l| l.guest_ip);
            (policy, guest)
        });
        let nat = self.deps.nat.clone();
        Box::pin(
            async move {
                let (policy, guest) = found?;
                let denied_packets = match guest {
                    Some(ip) if policy.is_deny() => {
                        // A counter that cannot be read is left out rather than failing
                        // the read of the policy.
                        match nat.send(GetEgressDenied).await {
                            Ok(Ok(counts)) => Some(counts.get(&ip).copied().unwrap_or(0)),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                Ok(EgressStatus {
                    policy,
                    denied_packets,
                })
            }
            .into_actor(self),
        )
    }
}

impl VmSupervisor {
    /// The denied-packet counters of the VMs in deny mode with a lease, by VM name, for
    /// `/metrics`: one read of the firewall for all of them. Counters that cannot be read
    /// leave the list empty rather than failing the whole metrics read.
    pub(super) fn egress_denied_counters(
        &self,
    ) -> futures::future::LocalBoxFuture<'static, Vec<(String, u64)>> {
        let guests: Vec<(String, std::net::Ipv4Addr)> = self
            .vms
            .iter()
            .filter(|(_, e)| {
                e.record
                    .spec
                    .egress
                    .as_ref()
                    .is_some_and(hearth_proto::api_egress::EgressPolicy::is_deny)
            })
            .filter_map(|(name, e)| e.record.lease.as_ref().map(|l| (name.clone(), l.guest_ip)))
            .collect();
        if guests.is_empty() {
            return futures::future::ready(Vec::new()).boxed_local();
        }
        let counters = self.deps.nat.send(GetEgressDenied);
        async move {
            match counters.await {
                Ok(Ok(counts)) => guests
                    .into_iter()
                    .map(|(name, ip)| {
                        let n = counts.get(&ip).copied().unwrap_or(0);
                        (name, n)
                    })
                    .collect(),
                _ => Vec::new(),
            }
        }
        .boxed_local()
    }
}

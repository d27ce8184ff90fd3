//! The host as a whole: cordon (refuse new VMs, with a reason, persisted so a restart of
//! hearthd keeps it) and drain (cordon, then stop every running VM, a few at a time, through
//! the same stop as `vm stop`; its progress is readable while it runs).

use actix::fut::{ActorFutureExt, WrapFuture};
use actix::{AsyncContext, Context, Handler, Message, ResponseActFuture};
use futures::StreamExt;

use super::{RunAction, SupervisorError, VmAction, VmSupervisor};

/// How many VMs a drain stops at once.
pub const DRAIN_PARALLELISM: usize = 4;

/// The host's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeStatus {
    /// Whether it refuses new VMs.
    pub cordoned: bool,
    /// Why, when it is cordoned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The running or last drain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainProgress>,
}

/// How far a drain got.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DrainProgress {
    /// VMs it set out to stop.
    pub total: usize,
    /// Stopped so far.
    pub stopped: usize,
    /// Whose stop failed, with why.
    pub failed: Vec<(String, String)>,
    /// Whether it has finished.
    pub done: bool,
}

/// Cordons the host (`Some` reason) or uncordons it (`None`); answers with its state.
#[derive(Debug, Message)]
#[rtype(result = "Result<NodeStatus, SupervisorError>")]
pub struct SetCordon {
    /// Why; `None` uncordons.
    pub reason: Option<String>,
}

/// The host's state.
#[derive(Debug, Message)]
#[rtype(result = "NodeStatus")]
pub struct GetNode;

/// Cordons the host, then stops every VM that runs; answers when all stops are done.
#[derive(Debug, Message)]
#[rtype(result = "Result<NodeStatus, SupervisorError>")]
pub struct Drain {
    /// The cordon's reason.
    pub reason: String,
}

impl VmSupervisor {
    /// The host's state now.
    pub(super) fn node_status(&self) -> NodeStatus {
        NodeStatus {
            cordoned: self.cordon.is_some(),
            reason: self.cordon.clone(),
            drain: self.drain.clone(),
        }
    }

    /// Refuses a create while cordoned.
    pub(super) fn check_cordon(&self) -> Result<(), SupervisorError> {
        match &self.cordon {
            Some(reason) => Err(SupervisorError::Cordoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn set_cordon(&mut self, reason: Option<String>) -> Result<(), SupervisorError> {
        if reason.as_deref().is_some_and(|r| r.len() > 1024) {
            return Err(SupervisorError::InvalidField(
                hearth_proto::api::FieldError {
                    field: "reason",
                    reason: "at most 1024 bytes".into(),
                },
            ));
        }
        self.store.put_cordon(reason.as_deref())?;
        self.cordon = reason;
        Ok(())
    }
}

impl Handler<SetCordon> for VmSupervisor {
    type Result = Result<NodeStatus, SupervisorError>;

    fn handle(&mut self, msg: SetCordon, _ctx: &mut Context<Self>) -> Self::Result {
        self.set_cordon(msg.reason)?;
        Ok(self.node_status())
    }
}

impl Handler<GetNode> for VmSupervisor {
    type Result = actix::MessageResult<GetNode>;

    fn handle(&mut self, _msg: GetNode, _ctx: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(self.node_status())
    }
}

impl Handler<Drain> for VmSupervisor {
    type Result = ResponseActFuture<Self, Result<NodeStatus, SupervisorError>>;

    fn handle(&mut self, msg: Drain, ctx: &mut Context<Self>) -> Self::Result {
        if self.drain.as_ref().is_some_and(|d| !d.done) {
            return Box::pin(actix::fut::ready(Err(SupervisorError::Conflict {
                message: "A drain is already running".into(),
            })));
        }
        if let Err(e) = self
            .check_open()
            .and_then(|()| self.set_cordon(Some(msg.reason)))
        {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        let names: Vec<String> = self
            .vms
            .values()
            .filter(|e| {
                e.record.state.can_stop()
                    || self.policy_rt.pending.contains_key(&e.record.spec.name)
            })
            .map(|e| e.record.spec.name.clone())
            .collect();
        self.drain = Some(DrainProgress {
            total: names.len(),
            ..DrainProgress::default()
        });
        let me = ctx.address();
        let stops = futures::stream::iter(names.into_iter().map(move |name| {
            let me = me.clone();
            async move {
                let res = match me
                    .send(RunAction {
                        name: name.clone(),
                        action: VmAction::Stop,
                        idempotency: None,
                    })
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                // Counted as it comes, so `GetNode` shows the progress.
                me.do_send(DrainStep {
                    name: name.clone(),
                    res: res.clone(),
                });
                (name, res)
            }
        }))
        .buffer_unordered(DRAIN_PARALLELISM)
        .collect::<Vec<_>>();
        Box::pin(stops.into_actor(self).map(|outcomes, act, _| {
            // The whole outcome, whatever progress steps are still in the mailbox.
            let total = act.drain.as_ref().map_or(outcomes.len(), |d| d.total);
            let mut progress = DrainProgress {
                total,
                done: true,
                ..DrainProgress::default()
            };
            for (name, res) in outcomes {
                match res {
                    Ok(()) => progress.stopped += 1,
                    Err(e) => progress.failed.push((name, e)),
                }
            }
            act.drain = Some(progress);
            Ok(act.node_status())
        }))
    }
}

/// Internal: one drained VM's outcome.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct DrainStep {
    name: String,
    res: Result<(), String>,
}

impl Handler<DrainStep> for VmSupervisor {
    type Result = ();

    fn handle(&mut self, msg: DrainStep, _ctx: &mut Context<Self>) {
        if let Some(d) = self.drain.as_mut().filter(|d| !d.done) {
            match msg.res {
                Ok(()) => d.stopped += 1,
                Err(e) => d.failed.push((msg.name, e)),
            }
        }
    }
}

//! [`FakeSupervisor`]: an in-memory stand-in for `VmSupervisor` answering every message the
//! API sends, for tests of the HTTP layer and of hearthctl. VMs are "running" as soon as they
//! are created; idempotency keys, events and subscriptions behave like the real ones. Tests
//! steer it with [`FailNext`] (the next lifecycle message fails with a chosen error) and
//! [`ForceState`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use actix::prelude::*;
use hearth_actors::supervisor::metrics::Histogram;
use hearth_actors::supervisor::{self as sup, Idempotency, SupervisorError, VmAction};
use hearth_proto::api::{Event, EventReason, VmInfo, VmState};

mod snapshots;

/// The next lifecycle message (create, action, delete, nat, get) fails with `error`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FailNext {
    /// The error to answer with.
    pub error: SupervisorError,
}

/// Puts a VM into `state` (and records an event), as if its lifecycle had moved.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), SupervisorError>")]
pub struct ForceState {
    /// The VM.
    pub name: String,
    /// Its new state.
    pub state: VmState,
}

/// Points a VM's agent at `uds` (a hybrid-vsock stand-in the test runs): `GuestEndpoint`
/// answers it while the VM is running (port 52).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetAgentSocket {
    /// The VM.
    pub name: String,
    /// The socket.
    pub uds: std::path::PathBuf,
}

/// How many `WaitForState` requests have arrived so far (lets a test wait until a long
/// poll is really waiting, instead of sleeping).
#[derive(Debug, Message)]
#[rtype(result = "u64")]
pub struct CountWaits;

/// The in-memory supervisor.
#[derive(Default)]
pub struct FakeSupervisor {
    waits: u64,
    vms: BTreeMap<String, VmInfo>,
    events: Vec<Event>,
    /// Idempotency key -> (request hash, the answer as JSON: a VM or a snapshot).
    keys: BTreeMap<String, (String, String)>,
    snapshots: BTreeMap<String, hearth_proto::api_snapshot::SnapshotInfo>,
    subscribers: Vec<Recipient<sup::EventPublished>>,
    fail_next: Option<SupervisorError>,
    creates: Histogram,
    errors: u64,
    agent_sockets: BTreeMap<String, std::path::PathBuf>,
    cordon: Option<String>,
}

impl Actor for FakeSupervisor {
    type Context = Context<Self>;
}

impl FakeSupervisor {
    fn take_failure(&mut self) -> Result<(), SupervisorError> {
        match self.fail_next.take() {
            Some(e) => {
                self.errors += 1;
                Err(e)
            }
            None => Ok(()),
        }
    }

    fn publish(&mut self, vm: &str, state: VmState) {
        let event = Event {
            seq: self.events.len() as u64 + 1,
            at_ms: 1_700_000_000_000 + self.events.len() as u64,
            vm: vm.to_owned(),
            state,
            reason: EventReason::User,
            detail: None,
            exit_status: None,
        };
        self.events.push(event.clone());
        self.subscribers.retain(actix::Recipient::connected);
        for s in &self.subscribers {
            s.do_send(sup::EventPublished {
                event: event.clone(),
            });
        }
    }

    fn set_state(&mut self, name: &str, state: VmState) -> Result<VmInfo, SupervisorError> {
        let vm = self
            .vms
            .get_mut(name)
            .ok_or_else(|| SupervisorError::NotFound {
                name: name.to_owned(),
            })?;
        vm.state = state;
        vm.pid = state.has_process().then_some(4242);
        let info = vm.clone();
        self.publish(name, state);
        Ok(info)
    }

    fn vm(&self, name: &str) -> Result<&VmInfo, SupervisorError> {
        self.vms.get(name).ok_or_else(|| SupervisorError::NotFound {
            name: name.to_owned(),
        })
    }

    /// The stored answer of a keyed request, a conflict, or `None` to go ahead.
    fn replay(&self, key: Option<&Idempotency>) -> Option<Result<VmInfo, SupervisorError>> {
        self.replay_as(key)
    }

    /// [`Self::replay`] of a request answering a `T`.
    fn replay_as<T: serde::de::DeserializeOwned>(
        &self,
        key: Option<&Idempotency>,
    ) -> Option<Result<T, SupervisorError>> {
        let key = key?;
        let (hash, info) = self.keys.get(&key.key)?;
        Some(if *hash == key.request_hash {
            serde_json::from_str(info).map_err(|e| SupervisorError::step("idempotent replay", e))
        } else {
            Err(SupervisorError::Conflict {
                message: format!(
                    "Idempotency key {:?} was used with another request",
                    key.key
                ),
            })
        })
    }

    fn remember<T: serde::Serialize>(
        &mut self,
        key: Option<Idempotency>,
        res: &Result<T, SupervisorError>,
    ) {
        if let (Some(key), Ok(info)) = (key, res) {
            let json = serde_json::to_string(info).expect("API answers serialise");
            self.keys.insert(key.key, (key.request_hash, json));
        }
    }
}

impl Handler<FailNext> for FakeSupervisor {
    type Result = ();

    fn handle(&mut self, msg: FailNext, _: &mut Self::Context) {
        self.fail_next = Some(msg.error);
    }
}

impl Handler<CountWaits> for FakeSupervisor {
    type Result = u64;

    fn handle(&mut self, _: CountWaits, _: &mut Self::Context) -> u64 {
        self.waits
    }
}

impl Handler<ForceState> for FakeSupervisor {
    type Result = Result<(), SupervisorError>;

    fn handle(&mut self, msg: ForceState, _: &mut Self::Context) -> Self::Result {
        self.set_state(&msg.name, msg.state).map(|_| ())
    }
}

impl Handler<sup::CreateVm> for FakeSupervisor {
    type Result = Result<VmInfo, SupervisorError>;

    fn handle(&mut self, msg: sup::CreateVm, _: &mut Self::Context) -> Self::Result {
        if let Some(res) = self.replay(msg.idempotency.as_ref()) {
            return res;
        }
        self.take_failure()?;
        if let Some(reason) = &self.cordon {
            return Err(SupervisorError::Cordoned {
                reason: reason.clone(),
            });
        }
        msg.spec.validate()?;
        let name = msg.spec.name.clone();
        if self.vms.contains_key(&name) {
            return Err(SupervisorError::Conflict {
                message: format!("A VM named {name:?} already exists"),
            });
        }
        let n = self.vms.len() as u8;
        self.vms.insert(
            name.clone(),
            VmInfo {
                name: name.clone(),
                state: VmState::Creating,
                nat: msg.spec.nat,
                spec: msg.spec,
                guest_ip: Some(Ipv4Addr::new(172, 30, 0, 2 + n)),
                tap: Some(format!("hth{n}")),
                pid: None,
                last_error: None,
                exit_status: None,
                restart_attempts: 0,
                restart_in_secs: None,
                expires_at: None,
                time_left_secs: None,
                parked_snapshot: None,
            },
        );
        self.publish(&name, VmState::Creating);
        self.creates.observe(Duration::from_millis(3));
        let res = self.set_state(&name, VmState::Running);
        self.remember(msg.idempotency, &res);
        res
    }
}

impl Handler<sup::RunAction> for FakeSupervisor {
    type Result = Result<VmInfo, SupervisorError>;

    fn handle(&mut self, msg: sup::RunAction, _: &mut Self::Context) -> Self::Result {
        if let Some(res) = self.replay(msg.idempotency.as_ref()) {
            return res;
        }
        self.take_failure()?;
        let state = self.vm(&msg.name)?.state;
        let allowed = match msg.action {
            VmAction::Start => state.can_start(),
            VmAction::Stop | VmAction::Kill => state.can_stop(),
            VmAction::Restart => state.can_restart(),
            VmAction::Pause => state.can_pause(),
            VmAction::Resume => state.can_resume(),
        };
        if !allowed {
            return Err(SupervisorError::InvalidState {
                name: msg.name,
                state,
                op: msg.action.as_str(),
            });
        }
        let res = match msg.action {
            VmAction::Start | VmAction::Restart => self.set_state(&msg.name, VmState::Running),
            VmAction::Stop | VmAction::Kill => self.set_state(&msg.name, VmState::Stopped),
            VmAction::Pause => self.set_state(&msg.name, VmState::Paused),
            VmAction::Resume => self.set_state(&msg.name, VmState::Running),
        };
        self.remember(msg.idempotency, &res);
        res
    }
}

impl Handler<sup::DeleteVm> for FakeSupervisor {
    type Result = Result<(), SupervisorError>;

    fn handle(&mut self, msg: sup::DeleteVm, _: &mut Self::Context) -> Self::Result {
        self.take_failure()?;
        let state = self.vm(&msg.name)?.state;
        if !state.can_delete() {
            return Err(SupervisorError::InvalidState {
                name: msg.name,
                state,
                op: "delete",
            });
        }
        self.vms.remove(&msg.name);
        self.publish(&msg.name, VmState::Deleting);
        Ok(())
    }
}

impl Handler<sup::SetNat> for FakeSupervisor {
    type Result = Result<VmInfo, SupervisorError>;

    fn handle(&mut self, msg: sup::SetNat, _: &mut Self::Context) -> Self::Result {
        self.take_failure()?;
        self.vm(&msg.name)?;
        let vm = self.vms.get_mut(&msg.name).expect("checked above");
        vm.nat = msg.enabled;
        Ok(vm.clone())
    }
}

impl Handler<sup::PublishPort> for FakeSupervisor {
    type Result = Result<Vec<hearth_proto::api_publish::PortMapping>, SupervisorError>;

    fn handle(&mut self, msg: sup::PublishPort, _: &mut Self::Context) -> Self::Result {
        self.take_failure()?;
        self.vm(&msg.name)?;
        let vm = self.vms.get_mut(&msg.name).expect("checked above");
        let mut publish = vm.spec.publish.clone();
        if !publish.contains(&msg.mapping) {
            publish.push(msg.mapping);
        }
        hearth_proto::api_publish::validate_publish("publish", &publish)?;
        vm.spec.publish.clone_from(&publish);
        Ok(publish)
    }
}

impl Handler<sup::SetEgress> for FakeSupervisor {
    type Result = Result<VmInfo, SupervisorError>;

    fn handle(&mut self, msg: sup::SetEgress, _: &mut Self::Context) -> Self::Result {
        self.take_failure()?;
        self.vm(&msg.name)?;
        let vm = self.vms.get_mut(&msg.name).expect("checked above");
        let mut spec = vm.spec.clone();
        spec.egress = msg.policy;
        spec.validate()?;
        vm.spec = spec;
        Ok(vm.clone())
    }
}

impl Handler<sup::GetEgress> for FakeSupervisor {
    type Result = Result<hearth_proto::api_egress::EgressStatus, SupervisorError>;

    fn handle(&mut self, msg: sup::GetEgress, _: &mut Self::Context) -> Self::Result {
        self.take_failure()?;
        let vm = self.vm(&msg.name)?;
        Ok(hearth_proto::api_egress::EgressStatus {
            policy: vm.spec.egress.clone().unwrap_or_default(),
            denied_packets: None,
        })
    }
}

impl Handler<sup::UnpublishPort> for FakeSupervisor {
    type Result = Result<Vec<hearth_proto::api_publish::PortMapping>, SupervisorError>;

    fn handle(&mut self, msg: sup::UnpublishPort, _: &mut Self::Context) -> Self::Result {
        self.take_failure()?;
        self.vm(&msg.name)?;
        let vm = self.vms.get_mut(&msg.name).expect("checked above");
        if !vm.spec.publish.contains(&msg.mapping) {
            return Err(SupervisorError::NotPublished {
                name: msg.name,
                mapping: msg.mapping.to_string(),
            });
        }
        vm.spec.publish.retain(|m| *m != msg.mapping);
        Ok(vm.spec.publish.clone())
    }
}

impl Handler<sup::UpdateVm> for FakeSupervisor {
    type Result = Result<VmInfo, SupervisorError>;

    fn handle(&mut self, msg: sup::UpdateVm, _: &mut Self::Context) -> Self::Result {
        self.take_failure()?;
        self.vm(&msg.name)?;
        let vm = self.vms.get_mut(&msg.name).expect("checked above");
        let mut spec = vm.spec.clone();
        if let Some(labels) = msg.labels {
            spec.labels = labels;
        }
        if let Some(restart) = msg.restart {
            spec.restart = restart;
        }
        if let Some(on_expiry) = msg.on_expiry {
            spec.on_expiry = on_expiry;
        }
        spec.validate()?;
        vm.spec = spec;
        // The fake keeps no clock: a time limit shows as its full length.
        if let Some(
            hearth_proto::api_policy::TtlChange::Set(d)
            | hearth_proto::api_policy::TtlChange::Extend(d),
        ) = msg.ttl
        {
            vm.time_left_secs = Some(d.as_secs());
        }
        Ok(vm.clone())
    }
}

impl Handler<sup::SetCordon> for FakeSupervisor {
    type Result = Result<sup::NodeStatus, SupervisorError>;

    fn handle(&mut self, msg: sup::SetCordon, _: &mut Self::Context) -> Self::Result {
        self.take_failure()?;
        self.cordon = msg.reason;
        Ok(self.node())
    }
}

impl Handler<sup::GetNode> for FakeSupervisor {
    type Result = MessageResult<sup::GetNode>;

    fn handle(&mut self, _: sup::GetNode, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.node())
    }
}

impl Handler<sup::Drain> for FakeSupervisor {
    type Result = Result<sup::NodeStatus, SupervisorError>;

    fn handle(&mut self, msg: sup::Drain, _: &mut Self::Context) -> Self::Result {
        self.take_failure()?;
        self.cordon = Some(msg.reason);
        let running: Vec<String> = self
            .vms
            .values()
            .filter(|v| v.state.can_stop())
            .map(|v| v.name.clone())
            .collect();
        for name in &running {
            let _ = self.set_state(name, VmState::Stopped);
        }
        let mut node = self.node();
        // The fake's snapshots are names only: what a `snapshot` drain would report.
        let snapshots = match msg.mode {
            hearth_proto::api_policy::DrainMode::Stop => Vec::new(),
            hearth_proto::api_policy::DrainMode::Snapshot => running
                .iter()
                .map(|n| {
                    let at = std::time::SystemTime::now();
                    let snap = sup::policy::policy_snapshot_name(n, sup::policy::DRAINED_TAG, at);
                    (n.clone(), snap)
                })
                .collect(),
        };
        node.drain = Some(sup::DrainProgress {
            mode: msg.mode,
            total: running.len(),
            stopped: running.len(),
            snapshots,
            failed: Vec::new(),
            done: true,
            resumed: false,
        });
        Ok(node)
    }
}

impl FakeSupervisor {
    fn node(&self) -> sup::NodeStatus {
        sup::NodeStatus {
            cordoned: self.cordon.is_some(),
            reason: self.cordon.clone(),
            drain: None,
            policy_ticks: 0,
        }
    }
}

impl Handler<sup::GetVm> for FakeSupervisor {
    type Result = Result<VmInfo, SupervisorError>;

    fn handle(&mut self, msg: sup::GetVm, _: &mut Self::Context) -> Self::Result {
        self.take_failure()?;
        self.vm(&msg.name).cloned()
    }
}

impl Handler<SetAgentSocket> for FakeSupervisor {
    type Result = ();

    fn handle(&mut self, msg: SetAgentSocket, _: &mut Self::Context) {
        self.agent_sockets.insert(msg.name, msg.uds);
    }
}

impl Handler<sup::GuestEndpoint> for FakeSupervisor {
    type Result = Result<sup::AgentEndpoint, SupervisorError>;

    fn handle(&mut self, msg: sup::GuestEndpoint, _: &mut Self::Context) -> Self::Result {
        let state = self.vm(&msg.name)?.state;
        if state != VmState::Running {
            return Err(SupervisorError::InvalidState {
                name: msg.name,
                state,
                op: "reach the agent of",
            });
        }
        // Without a socket set, a path where nothing listens: the agent is unreachable.
        let uds = self
            .agent_sockets
            .get(&msg.name)
            .cloned()
            .unwrap_or_else(|| std::path::PathBuf::from("/nonexistent/hearth-agent.sock"));
        Ok(sup::AgentEndpoint {
            uds,
            port: hearth_proto::agent::DEFAULT_PORT,
        })
    }
}

impl Handler<sup::ListVms> for FakeSupervisor {
    type Result = MessageResult<sup::ListVms>;

    fn handle(&mut self, msg: sup::ListVms, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.vms
                .values()
                .filter(|vm| match &msg.label {
                    Some((k, v)) => vm.spec.labels.get(k) == Some(v),
                    None => true,
                })
                .cloned()
                .collect(),
        )
    }
}

impl Handler<sup::WaitForState> for FakeSupervisor {
    type Result = ResponseActFuture<Self, Result<VmInfo, SupervisorError>>;

    fn handle(&mut self, msg: sup::WaitForState, _: &mut Self::Context) -> Self::Result {
        self.waits += 1;
        // Polls its own table every 10 ms until the state comes or the time is up.
        let deadline = std::time::Instant::now() + msg.timeout;
        wait_loop(self, msg.name, msg.state, deadline)
    }
}

fn wait_loop(
    act: &mut FakeSupervisor,
    name: String,
    want: VmState,
    deadline: std::time::Instant,
) -> ResponseActFuture<FakeSupervisor, Result<VmInfo, SupervisorError>> {
    match act.vm(&name) {
        Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        Ok(vm) if vm.state == want => return Box::pin(actix::fut::ready(Ok(vm.clone()))),
        Ok(_) => {}
    }
    if std::time::Instant::now() >= deadline {
        return Box::pin(actix::fut::ready(Err(SupervisorError::Timeout {
            name,
            state: want,
        })));
    }
    Box::pin(
        actix::clock::sleep(Duration::from_millis(10))
            .into_actor(act)
            .then(move |(), act, _| wait_loop(act, name, want, deadline)),
    )
}

impl Handler<sup::EventsSince> for FakeSupervisor {
    type Result = Result<Vec<Event>, SupervisorError>;

    fn handle(&mut self, msg: sup::EventsSince, _: &mut Self::Context) -> Self::Result {
        Ok(self
            .events
            .iter()
            .filter(|e| e.seq > msg.since)
            .take(msg.limit as usize)
            .cloned()
            .collect())
    }
}

impl Handler<sup::Subscribe> for FakeSupervisor {
    type Result = ();

    fn handle(&mut self, msg: sup::Subscribe, _: &mut Self::Context) {
        self.subscribers.push(msg.subscriber);
    }
}

impl Handler<sup::GetMetrics> for FakeSupervisor {
    type Result = MessageResult<sup::GetMetrics>;

    fn handle(&mut self, _: sup::GetMetrics, _: &mut Self::Context) -> Self::Result {
        let mut by_state: BTreeMap<&'static str, (VmState, u64)> = BTreeMap::new();
        for vm in self.vms.values() {
            by_state.entry(vm.state.as_str()).or_insert((vm.state, 0)).1 += 1;
        }
        MessageResult(sup::SupervisorMetrics {
            vms_by_state: by_state.into_values().collect(),
            phase_seconds: vec![("create", self.creates.clone())],
            errors: vec![("create", self.errors)],
            snapshots: Vec::new(),
            pool: None,
            cordoned: self.cordon.is_some(),
            policy: hearth_actors::supervisor::metrics::PolicyCounters::default(),
            egress_denied: Vec::new(),
        })
    }
}

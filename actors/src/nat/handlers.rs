//! `NatActor`'s message handlers (the actor in `mod.rs`, messages in `messages.rs`, rule texts
//! in `rules.rs`).

use actix::{Context, Handler};

use super::{
    EnsureNat, GetStatus, NatActor, NatError, NatStatus, Reconcile, RegisterGuest, SetEgress,
    Teardown, UnregisterGuest,
};

impl Handler<Reconcile> for NatActor {
    type Result = Result<(), NatError>;

    fn handle(&mut self, msg: Reconcile, _: &mut Context<Self>) -> Self::Result {
        self.reconcile(&msg.desired)
    }
}

impl Handler<EnsureNat> for NatActor {
    type Result = Result<(), NatError>;

    fn handle(&mut self, msg: EnsureNat, _: &mut Context<Self>) -> Self::Result {
        self.ensure_nat(&msg)
    }
}

impl Handler<RegisterGuest> for NatActor {
    type Result = Result<(), NatError>;

    fn handle(&mut self, msg: RegisterGuest, _: &mut Context<Self>) -> Self::Result {
        self.register(msg.lease.guest_ip, msg.lease.mac, &msg.lease.tap)
    }
}

impl Handler<UnregisterGuest> for NatActor {
    type Result = Result<(), NatError>;

    fn handle(&mut self, msg: UnregisterGuest, _: &mut Context<Self>) -> Self::Result {
        self.unregister(msg.lease.guest_ip, msg.lease.mac, &msg.lease.tap)
    }
}

impl Handler<SetEgress> for NatActor {
    type Result = Result<(), NatError>;

    fn handle(&mut self, msg: SetEgress, _: &mut Context<Self>) -> Self::Result {
        self.set_egress(msg.interface)
    }
}

impl Handler<Teardown> for NatActor {
    type Result = Result<(), NatError>;

    fn handle(&mut self, _: Teardown, _: &mut Context<Self>) -> Self::Result {
        self.teardown()
    }
}

impl Handler<GetStatus> for NatActor {
    type Result = Result<NatStatus, NatError>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        Ok(NatStatus {
            ready: self.ready,
            nat: self.nat.clone(),
            guests: self
                .guests
                .iter()
                .map(|(ip, (mac, _))| (*ip, *mac))
                .collect(),
            egress: self.egress.clone(),
        })
    }
}

//! Driving one `FirecrackerActor` in tests as the supervisor's saga does.

use std::time::Duration;

use actix::Addr;
use hearth_actors::firecracker::{
    ConfigureVm, FirecrackerActor, SpawnProcess, StartVm, VmConfig, VmProcessEvent, VmmProcess,
};
use tokio::sync::mpsc::UnboundedReceiver;

/// Whether `pid` runs (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

/// The next event of a VM; panics after 10 s without one.
pub async fn next_event(rx: &mut UnboundedReceiver<VmProcessEvent>) -> VmProcessEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no VM event within 10 s")
        .expect("event channel closed")
}

/// Brings the VM up with the saga's messages: spawn, configure, start.
pub async fn bring_up(vm: &Addr<FirecrackerActor>, config: VmConfig) -> VmmProcess {
    let spawned = vm.send(SpawnProcess {}).await.unwrap().expect("spawn");
    vm.send(ConfigureVm { config })
        .await
        .unwrap()
        .expect("configure");
    vm.send(StartVm {}).await.unwrap().expect("start");
    spawned.record
}

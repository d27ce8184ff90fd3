//! The hearthd adapter against a real hearthd (the `hearthd` binary, with `firecracker-sim`
//! as its VMM) in a private network namespace: keyed create, start and stop, delete of a VM
//! that is gone, the event log, an unreachable hearthd; and `plan` executed against it until
//! nothing is left to do. Needs root; build first with
//! `cargo build -p hearth --bins -p firecracker-sim -p hearth-agent`.

mod common;

use std::time::Duration;

use common::Host;
use hearth_operator::crd::{MicroVmSpec, MicroVmStatus};
use hearth_operator::hearthd::Hearthd;
use hearth_operator::plan::{plan, vm_name, Action, Desired, ObjectRef, Observed, UID_LABEL};
use hearth_proto::api::VmState;
use hearth_testkit::privileged;

fn desired(uid: &str) -> Desired {
    Desired {
        object: ObjectRef {
            namespace: "default".into(),
            name: "web".into(),
            uid: uid.into(),
        },
        generation: 1,
        spec: MicroVmSpec {
            kernel: "vmlinux".into(),
            rootfs: "base".into(),
            vcpus: 1,
            memory_mib: 128,
            disk_size: None,
            boot_args: None,
            nat: false,
            labels: [("app".to_owned(), "web".to_owned())].into(),
            ready_probe: true,
            init: None,
            running: true,
            restart: None,
        },
        deleting: false,
        has_finalizer: true,
        status: MicroVmStatus::default(),
    }
}

async fn state_of(h: &Hearthd, vm: &str) -> Option<VmState> {
    h.list()
        .await
        .unwrap()
        .into_iter()
        .find(|v| v.name == vm)
        .map(|v| v.state)
}

async fn wait_state(h: &Hearthd, vm: &str, want: VmState) {
    for _ in 0..200 {
        if state_of(h, vm).await == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{vm} never reached {want:?}: {:?}", state_of(h, vm).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapter_against_real_hearthd() {
    if !privileged("adapter_against_real_hearthd") {
        return;
    }
    let host = Host::start();
    let h = Hearthd::new(host.socket());
    assert!(h.list().await.unwrap().is_empty());

    let d = desired("5e0c9a52-0b8e-4e0f-8f55-1b2a3c4d5e6f");
    let body = hearth_operator::plan::create_body(&d);
    let vm = vm_name(&d.object.uid);
    let key = hearth_operator::plan::create_key(&body, 0);
    let first = h.create(body.clone(), key.clone()).await.expect("create");
    assert_eq!(first.name, vm);
    // The same key again: the recorded answer, not a second VM nor a name conflict.
    let again = h
        .create(body.clone(), key.clone())
        .await
        .expect("replayed create");
    assert_eq!(again.name, vm);
    let vms = h.list().await.unwrap();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].uid(), Some(d.object.uid.as_str()));
    assert_eq!(
        vms[0].spec.labels.get("app").map(String::as_str),
        Some("web")
    );
    wait_state(&h, &vm, VmState::Running).await;

    h.lifecycle(vm.clone(), "stop", "k.1.stop".into())
        .await
        .expect("stop");
    wait_state(&h, &vm, VmState::Stopped).await;
    h.lifecycle(vm.clone(), "start", "k.1.start".into())
        .await
        .expect("start");
    wait_state(&h, &vm, VmState::Running).await;
    // A key reused for another request is refused (hearthd answers 409), and nothing changes.
    let reused = h.lifecycle(vm.clone(), "stop", "k.1.start".into()).await;
    assert!(reused.is_err(), "{reused:?}");
    assert_eq!(state_of(&h, &vm).await, Some(VmState::Running));

    let events = h.events_since(0).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.vm == vm && e.state == VmState::Running),
        "{events:?}"
    );
    let last = events.last().unwrap().seq;
    assert!(h.events_since(last).await.unwrap().is_empty());

    h.delete(vm.clone()).await.expect("delete");
    wait_until_gone(&h, &vm).await;
    // Deleting what is gone is done, not an error.
    h.delete(vm.clone()).await.expect("delete of a gone VM");
    // An error from hearthd is not mistaken for hearthd being down.
    let bad = h
        .lifecycle("no-such-vm".into(), "start", "x".into())
        .await
        .unwrap_err();
    assert!(bad.is_not_found() && !bad.is_unreachable(), "{bad}");

    drop(host);
    let down = h.list().await.unwrap_err();
    assert!(down.is_unreachable(), "{down}");
}

async fn wait_until_gone(h: &Hearthd, vm: &str) {
    for _ in 0..200 {
        if state_of(h, vm).await.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{vm} was not deleted");
}

/// Carries out the VM actions of a plan (what `NodeAgent` does, minus the Kubernetes side).
async fn execute(h: &Hearthd, actions: &[Action]) {
    for a in actions {
        match a {
            Action::Create { spec, key, .. } => {
                h.create((**spec).clone(), key.clone())
                    .await
                    .expect("create");
            }
            Action::Start { vm, key } => h
                .lifecycle(vm.clone(), "start", key.clone())
                .await
                .map(|_| ())
                .expect("start"),
            Action::Stop { vm, key } => h
                .lifecycle(vm.clone(), "stop", key.clone())
                .await
                .map(|_| ())
                .expect("stop"),
            Action::Delete { vm, .. } => h.delete(vm.clone()).await.expect("delete"),
            Action::AddFinalizer(_) | Action::RemoveFinalizer(_) | Action::SetStatus { .. } => {}
        }
    }
}

fn vm_effects(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Create { .. }
                    | Action::Start { .. }
                    | Action::Stop { .. }
                    | Action::Delete { .. }
            )
        })
        .count()
}

/// Passes of plan + execute until hearthd matches, with the status each pass wrote fed back.
async fn converge(h: &Hearthd, node: &str, desired: &mut [Desired]) {
    for _ in 0..100 {
        let observed = Observed::Up(h.list().await.unwrap());
        // Wait out transitions, as the agent's next pass would.
        if let Observed::Up(vms) = &observed {
            if vms.iter().any(|v| {
                matches!(
                    v.state,
                    VmState::Creating | VmState::Starting | VmState::Stopping | VmState::Deleting
                )
            }) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let actions = plan(node, desired, &observed);
        for a in &actions {
            if let Action::SetStatus { object, status } = a {
                let d = desired.iter_mut().find(|d| d.object == *object).unwrap();
                d.status = (**status).clone();
            }
        }
        if vm_effects(&actions) == 0 {
            return;
        }
        execute(h, &actions).await;
    }
    panic!("plan did not converge against hearthd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_converges_against_real_hearthd() {
    if !privileged("plan_converges_against_real_hearthd") {
        return;
    }
    let host = Host::start();
    let h = Hearthd::new(host.socket());
    let mut ds = vec![desired("aaaa-1"), desired("bbbb-2")];
    converge(&h, "n1", &mut ds).await;
    let vms = h.list().await.unwrap();
    assert_eq!(vms.len(), 2);
    assert!(vms.iter().all(|v| v.state == VmState::Running), "{vms:?}");
    assert_eq!(ds[0].status.phase.as_deref(), Some("Running"));

    // Generation 2: the first stops (same machine), the second gets 2 vCPUs (replaced).
    ds[0].generation = 2;
    ds[0].spec.running = false;
    ds[1].generation = 2;
    ds[1].spec.vcpus = 2;
    converge(&h, "n1", &mut ds).await;
    let vms = h.list().await.unwrap();
    let by = |uid: &str| vms.iter().find(|v| v.uid() == Some(uid)).unwrap().clone();
    assert_eq!(by("aaaa-1").state, VmState::Stopped);
    assert_eq!(
        (by("bbbb-2").state, by("bbbb-2").spec.vcpus),
        (VmState::Running, 2)
    );

    // The VM of the first vanishes behind the agent's back: made again, counted as lost.
    ds[0].spec.running = true;
    ds[0].generation = 3;
    h.delete(vm_name("aaaa-1")).await.unwrap();
    wait_until_gone(&h, &vm_name("aaaa-1")).await;
    converge(&h, "n1", &mut ds).await;
    assert_eq!(ds[0].status.lost, 1);
    assert_eq!(
        state_of(&h, &vm_name("aaaa-1")).await,
        Some(VmState::Running)
    );

    // The second object goes: finalizing deletes its VM; once gone, the finalizer comes off.
    ds[1].deleting = true;
    converge(&h, "n1", &mut ds).await;
    assert_eq!(state_of(&h, &vm_name("bbbb-2")).await, None);
    assert_eq!(
        plan("n1", &ds[1..], &Observed::Up(vec![])),
        vec![Action::RemoveFinalizer(ds[1].object.clone())]
    );

    // An object that disappeared while the agent was away: its VM is an orphan, deleted;
    // a VM hearth-operator did not make is left alone.
    let mut foreign = hearth_operator::plan::create_body(&desired("cccc-3"));
    foreign.name = "hand-made".into();
    foreign.labels.remove(UID_LABEL);
    h.create(foreign, "hand-made".into()).await.unwrap();
    converge(&h, "n1", &mut ds[1..]).await;
    let left: Vec<String> = h
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(left, ["hand-made"]);
}

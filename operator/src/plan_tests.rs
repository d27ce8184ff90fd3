//! Unit tests of [`super::plan`]: one per rule, plus a fixpoint check (a planned status fed
//! back in plans nothing more).

use std::net::Ipv4Addr;

use hearth_proto::api::VmState;

use super::*;
use crate::crd::MicroVmSpec;

const NODE: &str = "node-a";
const UID: &str = "0f6f3c1e-6d1a-4b7e-9a51-3f7d2b1c9e10";

fn spec() -> MicroVmSpec {
    MicroVmSpec {
        kernel: "vmlinux".into(),
        rootfs: "base".into(),
        vcpus: 2,
        memory_mib: 256,
        disk_size: None,
        boot_args: None,
        nat: false,
        labels: [("team".to_owned(), "a".to_owned())].into(),
        ready_probe: true,
        init: None,
        running: true,
        restart: Some("on-failure:3".into()),
    }
}

fn desired() -> Desired {
    Desired {
        object: ObjectRef {
            namespace: "default".into(),
            name: "web".into(),
            uid: UID.into(),
        },
        generation: 1,
        spec: spec(),
        deleting: false,
        has_finalizer: true,
        status: MicroVmStatus::default(),
    }
}

fn vm_of(d: &Desired, state: VmState) -> ObservedVm {
    ObservedVm {
        name: vm_name(&d.object.uid),
        state,
        guest_ip: Some(Ipv4Addr::new(10, 0, 0, 2)),
        spec: create_body(d),
    }
}

/// The create key for `d`, checked to be uid, generation, digest and lost count.
fn key_for(d: &Desired, lost: u32) -> String {
    let body = create_body(d);
    let key = create_key(&body, lost);
    let want = format!(
        "{}.{}.{}.create.{lost}",
        d.object.uid, d.generation, body.labels[SPEC_LABEL]
    );
    assert_eq!(key, want);
    key
}

/// Generation 2 of [`desired`] with 4 vCPUs.
fn d2_for_key() -> Desired {
    let mut d = desired();
    d.generation = 2;
    d.spec.vcpus = 4;
    d
}

fn up(vms: Vec<ObservedVm>) -> Observed {
    Observed::Up(vms)
}

/// The actions other than status updates.
fn effects(actions: &[Action]) -> Vec<&Action> {
    actions
        .iter()
        .filter(|a| !matches!(a, Action::SetStatus { .. }))
        .collect()
}

fn status(actions: &[Action]) -> Option<&MicroVmStatus> {
    actions.iter().find_map(|a| match a {
        Action::SetStatus { status, .. } => Some(&**status),
        _ => None,
    })
}

fn ready(s: &MicroVmStatus) -> (&str, Option<&str>) {
    let c = s
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    (c.status.as_str(), c.reason.as_deref())
}

#[test]
fn new_object_gets_finalizer_before_create() {
    let d = Desired {
        has_finalizer: false,
        ..desired()
    };
    let a = plan(NODE, std::slice::from_ref(&d), &up(vec![]));
    let e = effects(&a);
    assert_eq!(e.len(), 2, "{a:?}");
    assert_eq!(e[0], &Action::AddFinalizer(d.object.clone()));
    match e[1] {
        Action::Create { object, spec, key } => {
            assert_eq!(object, &d.object);
            assert_eq!(key, &key_for(&desired(), 0));
            assert_eq!(spec.name, vm_name(UID));
            assert_eq!((spec.vcpus, spec.memory_mib), (2, 256));
            assert_eq!(spec.labels.get(UID_LABEL).map(String::as_str), Some(UID));
            assert_eq!(
                spec.labels.get(GENERATION_LABEL).map(String::as_str),
                Some("1")
            );
            assert_eq!(spec.labels.get("team").map(String::as_str), Some("a"));
            assert_eq!(spec.restart.to_string(), "on-failure:3");
        }
        other => panic!("expected a create, got {other:?}"),
    }
    let s = status(&a).expect("status");
    assert_eq!(s.phase.as_deref(), Some("Creating"));
    assert_eq!(s.node.as_deref(), Some(NODE));
    assert_eq!(s.observed_generation, Some(1));
}

#[test]
fn create_body_passes_hearthd_validation() {
    let body = create_body(&desired());
    body.validate().expect("hearthd accepts the body");
    assert!(body.name.len() <= 63 && body.name.starts_with("k-"));
    // Odd uids still give a DNS label.
    for uid in ["ABC_def", "x---", &"a".repeat(100)] {
        hearth_proto::api::validate_vm_name(&vm_name(uid)).expect(uid);
    }
}

#[test]
fn user_labels_cannot_claim_another_objects_vm() {
    let mut d = desired();
    d.spec
        .labels
        .insert(UID_LABEL.into(), "someone-else".into());
    let body = create_body(&d);
    assert_eq!(body.labels.get(UID_LABEL).map(String::as_str), Some(UID));
}

#[test]
fn running_vm_that_matches_needs_nothing_once_status_is_written() {
    let d = desired();
    let observed = up(vec![vm_of(&d, VmState::Running)]);
    let first = plan(NODE, std::slice::from_ref(&d), &observed);
    assert!(effects(&first).is_empty(), "{first:?}");
    let s = status(&first)
        .expect("first pass writes the status")
        .clone();
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(s.guest_ip.as_deref(), Some("10.0.0.2"));
    assert_eq!(s.vm.as_deref(), Some(vm_name(UID).as_str()));
    assert_eq!(ready(&s), ("True", Some("Running")));
    // Fed back, the status plans nothing: no patch storm.
    let d = Desired { status: s, ..d };
    assert_eq!(plan(NODE, &[d], &observed), vec![]);
}

#[test]
fn generation_change_of_running_only_stops_without_replacing() {
    let d1 = desired();
    let vm = vm_of(&d1, VmState::Running);
    let mut d2 = d1.clone();
    d2.generation = 2;
    d2.spec.running = false;
    let a = plan(NODE, &[d2], &up(vec![vm]));
    assert_eq!(
        effects(&a),
        vec![&Action::Stop {
            vm: vm_name(UID),
            key: format!("{UID}.2.stop"),
        }]
    );
}

#[test]
fn generation_change_of_the_machine_replaces_the_vm() {
    let d1 = desired();
    let vm = vm_of(&d1, VmState::Running);
    let mut d2 = d1.clone();
    d2.generation = 2;
    d2.spec.vcpus = 4;
    let a = plan(NODE, &[d2.clone()], &up(vec![vm]));
    assert_eq!(
        effects(&a),
        vec![&Action::Delete {
            vm: vm_name(UID),
            reason: DeleteReason::Replaced,
        }]
    );
    assert_eq!(status(&a).unwrap().phase.as_deref(), Some("Replacing"));
    // Once it is gone, the next pass creates it from generation 2.
    let d2 = Desired {
        status: status(&a).unwrap().clone(),
        ..d2
    };
    let next = plan(NODE, &[d2], &up(vec![]));
    match effects(&next)[..] {
        [Action::Create { spec, key, .. }] => {
            assert_eq!(spec.vcpus, 4);
            assert_eq!(
                spec.labels.get(GENERATION_LABEL).map(String::as_str),
                Some("2")
            );
            assert_eq!(key, &key_for(&d2_for_key(), 0));
        }
        ref other => panic!("expected one create, got {other:?}"),
    }
    assert_eq!(status(&next).unwrap().phase.as_deref(), Some("Creating"));
}

#[test]
fn stopped_vm_that_should_run_is_started_once_per_generation() {
    let d = desired();
    let a = plan(
        NODE,
        std::slice::from_ref(&d),
        &up(vec![vm_of(&d, VmState::Stopped)]),
    );
    assert_eq!(
        effects(&a),
        vec![&Action::Start {
            vm: vm_name(UID),
            key: format!("{UID}.1.start"),
        }]
    );
}

#[test]
fn crashed_and_failed_vms_are_left_to_hearthds_policy_and_shown() {
    let d = desired();
    for (state, phase) in [(VmState::Crashed, "Crashed"), (VmState::Failed, "Failed")] {
        let a = plan(NODE, std::slice::from_ref(&d), &up(vec![vm_of(&d, state)]));
        assert!(effects(&a).is_empty(), "{state:?}: {a:?}");
        let s = status(&a).unwrap();
        assert_eq!(s.phase.as_deref(), Some(phase));
        assert_eq!(ready(s), ("False", Some(phase)));
    }
}

#[test]
fn deleting_object_deletes_its_vm_and_keeps_the_finalizer() {
    let d = Desired {
        deleting: true,
        ..desired()
    };
    let a = plan(
        NODE,
        std::slice::from_ref(&d),
        &up(vec![vm_of(&d, VmState::Running)]),
    );
    assert_eq!(
        a,
        vec![Action::Delete {
            vm: vm_name(UID),
            reason: DeleteReason::Finalizing,
        }]
    );
    // While hearthd deletes it: wait.
    let a = plan(
        NODE,
        std::slice::from_ref(&d),
        &up(vec![vm_of(&d, VmState::Deleting)]),
    );
    assert_eq!(a, vec![]);
}

#[test]
fn deleting_object_without_vm_loses_its_finalizer() {
    let d = Desired {
        deleting: true,
        ..desired()
    };
    let a = plan(NODE, std::slice::from_ref(&d), &up(vec![]));
    assert_eq!(a, vec![Action::RemoveFinalizer(d.object.clone())]);
    let gone = Desired {
        has_finalizer: false,
        ..d
    };
    assert_eq!(plan(NODE, &[gone], &up(vec![])), vec![]);
}

#[test]
fn hearthd_down_changes_nothing_and_keeps_finalizers() {
    let down = Observed::Down("hearthd is not running".into());
    let deleting = Desired {
        deleting: true,
        ..desired()
    };
    assert_eq!(plan(NODE, &[deleting], &down), vec![]);
    let fresh = Desired {
        has_finalizer: false,
        ..desired()
    };
    let a = plan(NODE, &[desired(), fresh], &down);
    assert!(effects(&a).is_empty(), "{a:?}");
    let s = status(&a).unwrap();
    assert_eq!(s.phase.as_deref(), Some("Unknown"));
    let c = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(c.status, "Unknown");
    assert_eq!(c.reason.as_deref(), Some("HearthdUnreachable"));
    assert_eq!(c.message.as_deref(), Some("hearthd is not running"));
}

#[test]
fn vanished_vm_is_created_again_under_a_new_key() {
    let d = desired();
    let observed = up(vec![vm_of(&d, VmState::Running)]);
    let s = status(&plan(NODE, std::slice::from_ref(&d), &observed))
        .unwrap()
        .clone();
    let d = Desired { status: s, ..d };
    let a = plan(NODE, &[d], &up(vec![]));
    match effects(&a)[..] {
        [Action::Create { key, .. }] => assert_eq!(key, &key_for(&desired(), 1)),
        ref other => panic!("expected one create, got {other:?}"),
    }
    let s = status(&a).unwrap();
    assert_eq!((s.phase.as_deref(), s.lost), (Some("Lost"), 1));
    assert_eq!((s.vm.as_deref(), s.guest_ip.as_deref()), (None, None));
    assert_eq!(ready(s), ("False", Some("VmLost")));
}

#[test]
fn status_from_another_node_is_not_a_lost_vm() {
    let mut d = desired();
    d.status.node = Some("node-b".into());
    d.status.vm = Some(vm_name(UID));
    let a = plan(NODE, &[d], &up(vec![]));
    match effects(&a)[..] {
        [Action::Create { key, .. }] => assert_eq!(key, &key_for(&desired(), 0)),
        ref other => panic!("expected one create, got {other:?}"),
    }
    assert_eq!(status(&a).unwrap().phase.as_deref(), Some("Creating"));
}

#[test]
fn orphans_are_deleted_and_foreign_vms_left_alone() {
    let d = desired();
    let gone = Desired {
        object: ObjectRef {
            uid: "gone-uid".into(),
            ..d.object.clone()
        },
        ..d.clone()
    };
    let orphan = vm_of(&gone, VmState::Running);
    let mut foreign = vm_of(&d, VmState::Running);
    foreign.name = "hand-made".into();
    foreign.spec.labels.clear();
    let mut dying = vm_of(&gone, VmState::Deleting);
    dying.name = "k-dying".into();
    dying
        .spec
        .labels
        .insert(UID_LABEL.into(), "dying-uid".into());
    let a = plan(NODE, &[], &up(vec![orphan.clone(), foreign, dying]));
    assert_eq!(
        a,
        vec![Action::Delete {
            vm: orphan.name,
            reason: DeleteReason::Orphaned,
        }]
    );
}

#[test]
fn every_vm_state_has_a_phase_and_no_state_panics() {
    let d = desired();
    for state in VmState::ALL {
        assert!(!phase_of(state).is_empty());
        let _ = plan(NODE, std::slice::from_ref(&d), &up(vec![vm_of(&d, state)]));
    }
}

#[test]
fn spec_hearthd_would_refuse_is_reported_and_not_sent() {
    let mut d = desired();
    d.spec.labels.insert("a=b".into(), "x".into());
    let a = plan(NODE, &[d], &up(vec![]));
    assert!(effects(&a).is_empty(), "{a:?}");
    let s = status(&a).unwrap();
    assert_eq!(s.phase.as_deref(), Some("Invalid"));
    let c = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(c.reason.as_deref(), Some("InvalidSpec"));
    assert!(
        c.message.as_deref().unwrap().starts_with("labels:"),
        "{c:?}"
    );
}

#[test]
fn hearthds_normalised_spec_does_not_replace_the_vm() {
    let d = desired();
    let mut vm = vm_of(&d, VmState::Running);
    // hearthd adds `init=` for an OCI image's init and may fill other defaults.
    vm.spec.boot_args = Some("init=/sbin/hearth-init".into());
    vm.spec.init = Some(hearth_proto::image_config::InitMode::Hearth);
    let a = plan(NODE, std::slice::from_ref(&d), &up(vec![vm]));
    assert!(effects(&a).is_empty(), "{a:?}");
}

#[test]
fn every_machine_field_changes_the_digest_and_running_does_not() {
    let base = create_body(&desired());
    let digest = |d: &Desired| create_body(d).labels[SPEC_LABEL].clone();
    let d0 = desired();
    type Change = Box<dyn Fn(&mut MicroVmSpec)>;
    let changes: Vec<Change> = vec![
        Box::new(|s| s.kernel = "k2".into()),
        Box::new(|s| s.rootfs = "r2".into()),
        Box::new(|s| s.vcpus = 3),
        Box::new(|s| s.memory_mib = 512),
        Box::new(|s| s.disk_size = Some(1 << 30)),
        Box::new(|s| s.boot_args = Some("quiet".into())),
        Box::new(|s| s.nat = true),
        Box::new(|s| s.ready_probe = false),
        Box::new(|s| s.init = Some(crate::crd::GuestInit::Image)),
        Box::new(|s| s.restart = Some("always".into())),
        Box::new(|s| {
            s.labels.insert("x".into(), "y".into());
        }),
    ];
    for (i, change) in changes.iter().enumerate() {
        let mut d = d0.clone();
        change(&mut d.spec);
        assert_ne!(digest(&d), base.labels[SPEC_LABEL], "change {i}");
    }
    let mut d = d0.clone();
    d.spec.running = false;
    d.generation = 7;
    assert_eq!(digest(&d), base.labels[SPEC_LABEL]);
    // A VM made without the digest (by hand, or an older operator) is not taken as current.
    let mut vm = vm_of(&d0, VmState::Running);
    vm.spec.labels.remove(SPEC_LABEL);
    let a = plan(NODE, std::slice::from_ref(&d0), &up(vec![vm]));
    assert!(
        matches!(
            effects(&a)[..],
            [Action::Delete {
                reason: DeleteReason::Replaced,
                ..
            }]
        ),
        "{a:?}"
    );
}

#[test]
fn a_replaced_vm_is_created_under_a_key_never_used_for_another_machine() {
    // Same generation, different machine (as after an operator upgrade changing the body):
    // the key differs, so hearthd neither replays nor refuses it.
    let d = desired();
    let mut old = vm_of(&d, VmState::Running);
    old.spec
        .labels
        .insert(SPEC_LABEL.into(), "0000000000000000".into());
    let a = plan(NODE, std::slice::from_ref(&d), &up(vec![old]));
    assert!(matches!(
        effects(&a)[..],
        [Action::Delete {
            reason: DeleteReason::Replaced,
            ..
        }]
    ));
    let mut previous = create_body(&d);
    previous
        .labels
        .insert(SPEC_LABEL.into(), "0000000000000000".into());
    assert_ne!(create_key(&previous, 0), key_for(&d, 0));
}

//! Unit tests of the VMM state machine, without sockets or processes.

use std::path::Path;
use std::time::Duration;

use hearth_proto::firecracker::{
    ActionType, BootSource, Drive, InstanceActionInfo, MachineConfig, MachineConfigUpdate, Metrics,
    NetworkInterface, Vm, VmPauseState, Vsock,
};

use super::*;

const NOT_AFTER_BOOT: &str = "The requested operation is not supported after starting the microVM.";
const NOT_BEFORE_BOOT: &str =
    "The requested operation is not supported before starting the microVM.";

fn vmm() -> Vmm {
    let knobs = Knobs {
        boot_delay: Duration::ZERO,
        reboot_delay: Duration::ZERO,
        ..Knobs::default()
    };
    let mut v = Vmm::new(
        VmmOptions {
            id: "vm1".into(),
            ..Default::default()
        },
        knobs,
    );
    v.log
        .configure(None, Some(hearth_proto::firecracker::LogLevel::Off), None)
        .unwrap();
    v
}

fn fault(r: Response) -> String {
    assert_eq!(r.status, 400, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
    v["fault_message"].as_str().unwrap().to_owned()
}

fn boot_source(dir: &Path) -> Action {
    let k = dir.join("vmlinux");
    std::fs::write(&k, crate::kernel::minimal_vmlinux()).unwrap();
    Action::PutBootSource(BootSource {
        kernel_image_path: k.to_str().unwrap().into(),
        boot_args: Some("console=ttyS0 reboot=k panic=1".into()),
        initrd_path: None,
    })
}

fn start() -> Action {
    Action::Action(InstanceActionInfo::new(ActionType::InstanceStart))
}

fn drive(dir: &Path, id: &str, root: bool) -> Drive {
    let p = dir.join(id);
    std::fs::write(&p, b"disk").unwrap();
    Drive {
        drive_id: id.into(),
        is_root_device: root,
        path_on_host: Some(p.to_str().unwrap().into()),
        is_read_only: Some(false),
        ..Default::default()
    }
}

#[test]
fn start_needs_a_kernel_and_succeeds_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vmm();
    assert_eq!(
        fault(v.handle(start())),
        "Start microvm error: Cannot start microvm without kernel configuration."
    );
    assert_eq!(v.handle(boot_source(dir.path())).status, 204);
    assert_eq!(v.handle(start()).status, 204);
    assert_eq!(v.state, InstanceState::Running);
    assert_eq!(fault(v.handle(start())), NOT_AFTER_BOOT);
    assert_eq!(fault(v.handle(boot_source(dir.path()))), NOT_AFTER_BOOT);
}

#[test]
fn missing_kernel_file_is_reported() {
    let mut v = vmm();
    let msg = fault(v.handle(Action::PutBootSource(BootSource {
        kernel_image_path: "/nonexistent/vmlinux".into(),
        ..Default::default()
    })));
    assert!(
        msg.starts_with("Boot source error: The kernel file cannot be opened: No such file"),
        "{msg}"
    );
}

#[test]
fn machine_config_rules_and_patch() {
    let mut v = vmm();
    let bad = MachineConfig {
        vcpu_count: 3,
        smt: Some(true),
        ..MachineConfig::default()
    };
    assert!(fault(v.handle(Action::PutMachineConfig(bad))).starts_with("Machine config error:"));
    let patch = MachineConfigUpdate {
        mem_size_mib: Some(256),
        ..Default::default()
    };
    assert_eq!(v.handle(Action::PatchMachineConfig(patch)).status, 204);
    let got = v.handle(Action::GetMachineConfig);
    assert_eq!(
        got.body.as_deref(),
        Some(
            r#"{"vcpu_count":1,"mem_size_mib":256,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}"#
        )
    );
}

#[test]
fn one_root_device_and_files_opened_at_put() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vmm();
    assert_eq!(
        v.handle(Action::PutDrive(drive(dir.path(), "rootfs", true)))
            .status,
        204
    );
    // Re-PUT of the same root drive replaces it.
    assert_eq!(
        v.handle(Action::PutDrive(drive(dir.path(), "rootfs", true)))
            .status,
        204
    );
    assert_eq!(
        fault(v.handle(Action::PutDrive(drive(dir.path(), "other", true)))),
        "Drive config error: A root block device already exists!"
    );
    let mut missing = drive(dir.path(), "data", false);
    missing.path_on_host = Some("/nonexistent/disk".into());
    let msg = fault(v.handle(Action::PutDrive(missing)));
    assert!(msg.contains("No such file or directory"), "{msg}");
    assert_eq!(v.drives.len(), 1);
}

#[test]
fn vsock_binds_at_put_and_refuses_existing_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vmm();
    let path = dir.path().join("v.sock");
    let vs = Vsock {
        guest_cid: 3,
        uds_path: path.to_str().unwrap().into(),
        vsock_id: None,
    };
    assert_eq!(v.handle(Action::PutVsock(vs.clone())).status, 204);
    assert!(path.exists());
    // Re-PUT replaces the device (the old socket is removed first).
    assert_eq!(v.handle(Action::PutVsock(vs)).status, 204);
    let taken = dir.path().join("taken");
    std::fs::write(&taken, b"").unwrap();
    let msg = fault(v.handle(Action::PutVsock(Vsock {
        guest_cid: 3,
        uds_path: taken.to_str().unwrap().into(),
        vsock_id: None,
    })));
    assert!(
        msg.starts_with("Vsock config error: Cannot create backend for vsock device: Error binding to the host-side Unix socket: "),
        "{msg}"
    );
    // The spec says >= 3; the real binary accepts any CID, 0 to 2 included.
    for cid in [0, 2, u32::MAX] {
        let vs = Vsock {
            guest_cid: cid,
            uds_path: dir
                .path()
                .join(format!("v{cid}.sock"))
                .to_str()
                .unwrap()
                .into(),
            vsock_id: None,
        };
        assert_eq!(v.handle(Action::PutVsock(vs)).status, 204, "CID {cid}");
    }
}

#[test]
fn after_boot_new_devices_need_pci_and_instance_info_is_in_firecrackers_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vmm();
    v.handle(boot_source(dir.path()));
    v.handle(start());
    // A hot-plug: the real binary refuses it for PCI before looking at the body.
    let mut missing = drive(dir.path(), "data", false);
    missing.path_on_host = Some("/nonexistent/disk".into());
    assert_eq!(
        fault(v.handle(Action::PutDrive(missing))),
        "PCI is not enabled"
    );
    let net = NetworkInterface {
        iface_id: "eth0".into(),
        host_dev_name: "nosuchtap".into(),
        ..Default::default()
    };
    assert_eq!(fault(v.handle(Action::PutNet(net))), "PCI is not enabled");
    assert_eq!(
        v.handle(Action::GetInstanceInfo).body.as_deref(),
        Some(
            r#"{"id":"vm1","state":"Running","vmm_version":"1.17.0-sim","app_name":"Firecracker"}"#
        )
    );
}

#[test]
fn patch_and_block_config_errors_use_firecrackers_texts() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vmm();
    let neither = Drive {
        drive_id: "d3".into(),
        ..Default::default()
    };
    assert_eq!(
        fault(v.handle(Action::PutDrive(neither))),
        "Drive config error: Unable to create the virtio block device: Invalid block config."
    );
    let bad_metrics = Metrics {
        metrics_path: "/nonexistent/dir/m".into(),
        ..Default::default()
    };
    assert_eq!(
        fault(v.handle(Action::PutMetrics(bad_metrics))),
        "Metrics error: Cannot initialize the metrics system due to bad user input: No such file or directory (os error 2)"
    );
    v.handle(Action::PutDrive(drive(dir.path(), "d2", false)));
    v.handle(boot_source(dir.path()));
    v.handle(start());
    let patch = |id: &str, path: Option<&str>| {
        Action::PatchDrive(
            serde_json::from_value(serde_json::json!({"drive_id": id, "path_on_host": path}))
                .unwrap(),
        )
    };
    assert_eq!(
        fault(v.handle(patch("nope", None))),
        "Drive config error: Unable to patch the block device: Failed perform action on device: Device not found Please verify the request arguments."
    );
    assert_eq!(
        fault(v.handle(patch("d2", Some("/nonexistent/no-such-drive")))),
        "Drive config error: Unable to patch the block device: Block: Virtio backend error: Error manipulating the backing file: No such file or directory (os error 2) /nonexistent/no-such-drive Please verify the request arguments."
    );
    let net_patch =
        Action::PatchNet(serde_json::from_value(serde_json::json!({"iface_id": "nope"})).unwrap());
    assert_eq!(
        fault(v.handle(net_patch)),
        "Network config error: Unable to update the net device: Failed perform action on device: Device not found"
    );
}

#[test]
fn mtu_out_of_range_uses_firecrackers_text() {
    let mut v = vmm();
    let net = NetworkInterface {
        iface_id: "eth0".into(),
        host_dev_name: "nosuchtap".into(),
        mtu: Some(10),
        ..Default::default()
    };
    assert_eq!(
        fault(v.handle(Action::PutNet(net))),
        "Network config error: Could not create the network device: MTU 10 is out of range [68, 65535]"
    );
}

#[test]
fn ctrl_alt_del_before_boot_fails_after_boot_reboots() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vmm();
    let cad = || Action::Action(InstanceActionInfo::new(ActionType::SendCtrlAltDel));
    assert_eq!(fault(v.handle(cad())), NOT_BEFORE_BOOT);
    v.handle(boot_source(dir.path()));
    v.handle(start());
    assert_eq!(v.handle(cad()).status, 204);
    // Boot, then the reboot: both timers are due immediately with zero delays.
    v.fire_timers();
    assert!(v.guest.booted());
    v.fire_timers();
    assert_eq!(v.exit_code(), Some(0));
}

#[test]
fn pause_defers_the_reboot_and_ignore_knob_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vmm();
    v.handle(boot_source(dir.path()));
    v.handle(start());
    v.fire_timers();
    let pause = |s| Action::PatchVm(Vm { state: s });
    assert_eq!(v.handle(pause(VmPauseState::Paused)).status, 204);
    assert_eq!(v.state, InstanceState::Paused);
    v.handle(Action::Action(InstanceActionInfo::new(
        ActionType::SendCtrlAltDel,
    )));
    v.fire_timers();
    assert_eq!(v.exit_code(), None);
    v.handle(pause(VmPauseState::Resumed));
    v.fire_timers();
    assert_eq!(v.exit_code(), Some(0));

    let mut v = vmm();
    v.knobs.ignore_ctrl_alt_del = true;
    v.handle(boot_source(dir.path()));
    v.handle(start());
    v.fire_timers();
    v.handle(Action::Action(InstanceActionInfo::new(
        ActionType::SendCtrlAltDel,
    )));
    v.fire_timers();
    assert_eq!(v.exit_code(), None);
    assert_eq!(v.next_deadline(), None);
}

#[test]
fn metrics_only_once_and_logger_pre_boot_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vmm();
    let m = Metrics {
        metrics_path: dir.path().join("m").to_str().unwrap().into(),
        ..Default::default()
    };
    assert_eq!(v.handle(Action::PutMetrics(m.clone())).status, 204);
    let second = Metrics {
        metrics_path: dir.path().join("m2").to_str().unwrap().into(),
        ..Default::default()
    };
    assert_eq!(
        fault(v.handle(Action::PutMetrics(second))),
        "Metrics error: Cannot initialize the metrics system due to bad user input: Reinitialization of metrics not allowed."
    );
    assert!(
        dir.path().join("m2").exists(),
        "opened before the refusal, as Firecracker does"
    );
    assert_eq!(
        fault(v.handle(Action::PutMetrics(m))),
        "Metrics error: Cannot initialize the metrics system due to bad user input: Reinitialization of metrics not allowed."
    );
    v.handle(boot_source(dir.path()));
    v.handle(start());
    assert_eq!(
        fault(v.handle(Action::PutLogger(Logger::default()))),
        NOT_AFTER_BOOT
    );
    assert_eq!(
        v.handle(Action::Action(InstanceActionInfo::new(
            ActionType::FlushMetrics
        )))
        .status,
        204
    );
    let text = std::fs::read_to_string(dir.path().join("m")).unwrap();
    assert!(text.contains("utc_timestamp_ms"), "{text}");
}

#[test]
fn pci_off_is_added_unless_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vmm();
    v.handle(boot_source(dir.path()));
    assert_eq!(
        v.kernel_cmdline().as_deref(),
        Some("console=ttyS0 reboot=k panic=1 pci=off")
    );
    v.opts.enable_pci = true;
    assert_eq!(
        v.kernel_cmdline().as_deref(),
        Some("console=ttyS0 reboot=k panic=1")
    );
}

#[test]
fn vm_config_is_in_the_real_binarys_full_form() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vmm();
    let empty = v.handle(Action::GetVmConfig);
    assert_eq!(
        empty.body.as_deref(),
        Some(concat!(
            r#"{"balloon":null,"drives":[],"boot-source":{"kernel_image_path":"","#,
            r#""initrd_path":null,"boot_args":null},"cpu-config":null,"logger":null,"#,
            r#""machine-config":{"vcpu_count":1,"mem_size_mib":128,"smt":false,"#,
            r#""track_dirty_pages":false,"huge_pages":"None"},"metrics":null,"#,
            r#""mmds-config":null,"network-interfaces":[],"vsock":null,"entropy":null,"#,
            r#""pmem":[],"memory-hotplug":null}"#
        ))
    );
    let mut d = drive(dir.path(), "d2", true);
    d.rate_limiter =
        Some(serde_json::from_str(r#"{"bandwidth":{"size":1000,"refill_time":100}}"#).unwrap());
    v.handle(Action::PutDrive(d));
    let m = Metrics {
        metrics_path: dir.path().join("m").to_str().unwrap().into(),
        ..Default::default()
    };
    v.handle(Action::PutMetrics(m));
    let body: serde_json::Value =
        serde_json::from_str(v.handle(Action::GetVmConfig).body.as_deref().unwrap()).unwrap();
    let path = dir.path().join("d2");
    assert_eq!(
        body["drives"][0],
        serde_json::json!({"drive_id": "d2", "partuuid": null, "is_root_device": true,
            "cache_type": "Unsafe", "is_read_only": false, "path_on_host": path.to_str().unwrap(),
            "rate_limiter": {"bandwidth": {"size": 1000, "one_time_burst": null, "refill_time": 100},
                "ops": null},
            "io_engine": "Sync", "socket": null})
    );
    assert!(
        body["metrics"].is_null(),
        "not reported, as in the real binary"
    );
}

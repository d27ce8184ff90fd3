//! Every request body the simulator's tests send, keyed by the `firecracker.yaml` definition
//! it must conform to. `@DIR@` stands for the test's working directory. The spec test
//! (`proto/tests/spec.rs`) validates [`VALID`] against the schema and checks that the schema
//! rejects every body in [`SCHEMA_INVALID`]; the simulator tests send both.

/// Bodies the spec accepts.
pub const VALID: &[(&str, &str)] = &[
    (
        "MachineConfiguration",
        r#"{"vcpu_count":2,"mem_size_mib":256}"#,
    ),
    (
        "MachineConfiguration",
        r#"{"vcpu_count":2,"mem_size_mib":256,"smt":true,"track_dirty_pages":false,"huge_pages":"2M"}"#,
    ),
    // PATCH /machine-config: the spec reuses MachineConfiguration; see the spec test.
    ("MachineConfiguration#patch", r#"{"mem_size_mib":512}"#),
    (
        "BootSource",
        r#"{"kernel_image_path":"@DIR@/vmlinux","boot_args":"console=ttyS0 reboot=k panic=1"}"#,
    ),
    (
        "Drive",
        r#"{"drive_id":"rootfs","path_on_host":"@DIR@/rootfs.ext4","is_root_device":true,"is_read_only":false}"#,
    ),
    (
        "Drive",
        r#"{"drive_id":"data","path_on_host":"@DIR@/data.ext4","is_root_device":false,"is_read_only":true,"cache_type":"Writeback","io_engine":"Sync","rate_limiter":{"bandwidth":{"size":1000,"refill_time":100},"ops":{"size":10,"one_time_burst":5,"refill_time":100}}}"#,
    ),
    (
        "PartialDrive",
        r#"{"drive_id":"data","path_on_host":"@DIR@/data2.ext4"}"#,
    ),
    ("Vsock", r#"{"guest_cid":3,"uds_path":"@DIR@/v.sock"}"#),
    (
        "NetworkInterface",
        r#"{"iface_id":"eth0","host_dev_name":"simtap0","guest_mac":"06:00:ac:10:00:02","mtu":1500}"#,
    ),
    (
        "NetworkInterface",
        r#"{"iface_id":"eth1","host_dev_name":"simtap1","guest_mac":"06:00:ac:10:00:02"}"#,
    ),
    (
        "PartialNetworkInterface",
        r#"{"iface_id":"eth0","rx_rate_limiter":{"bandwidth":{"size":1000,"refill_time":100}}}"#,
    ),
    ("InstanceActionInfo", r#"{"action_type":"InstanceStart"}"#),
    ("InstanceActionInfo", r#"{"action_type":"SendCtrlAltDel"}"#),
    ("InstanceActionInfo", r#"{"action_type":"FlushMetrics"}"#),
    ("Vm", r#"{"state":"Paused"}"#),
    ("Vm", r#"{"state":"Resumed"}"#),
    (
        "Logger",
        r#"{"log_path":"@DIR@/fc.log","level":"Debug","show_level":true,"show_log_origin":false}"#,
    ),
    ("Metrics", r#"{"metrics_path":"@DIR@/metrics.json"}"#),
];

/// Bodies the spec rejects. The simulator answers 400 to each except where the real
/// Firecracker accepts it, and so does the simulator: `Vsock` with CID 2 (the spec says >= 3).
pub const SCHEMA_INVALID: &[(&str, &str)] = &[
    (
        "MachineConfiguration",
        r#"{"vcpu_count":2,"mem_size_mib":256,"bogus":true}"#,
    ),
    (
        "MachineConfiguration",
        r#"{"vcpu_count":33,"mem_size_mib":256}"#,
    ),
    ("MachineConfiguration", r#"{"mem_size_mib":256}"#),
    ("InstanceActionInfo", r#"{"action_type":"Reboot"}"#),
    (
        "NetworkInterface",
        r#"{"iface_id":"eth0","host_dev_name":"simtap0","mtu":40}"#,
    ),
    ("Vsock", r#"{"guest_cid":2,"uds_path":"@DIR@/v2.sock"}"#),
    ("Vm", r#"{"state":"Stopped"}"#),
];

/// The body for `def` at index `nth` among those with that definition, with `@DIR@` replaced.
pub fn valid(def: &str, nth: usize, dir: &str) -> String {
    VALID
        .iter()
        .filter(|(d, _)| *d == def)
        .nth(nth)
        .map_or_else(
            || panic!("no body {def}#{nth}"),
            |(_, b)| b.replace("@DIR@", dir),
        )
}

/// Like [`valid`], from [`SCHEMA_INVALID`].
pub fn invalid(def: &str, nth: usize, dir: &str) -> String {
    SCHEMA_INVALID
        .iter()
        .filter(|(d, _)| *d == def)
        .nth(nth)
        .map_or_else(
            || panic!("no body {def}#{nth}"),
            |(_, b)| b.replace("@DIR@", dir),
        )
}

//! `GET /vm/config` in the real binary's exact form: every resource listed, absent ones as
//! `null` (or `[]`), drives with their defaults filled in, token buckets with
//! `one_time_burst: null`; logger and metrics are always `null` (the real binary does not
//! report them even when configured). Field order is Firecracker's.

use hearth_proto::firecracker::{
    BootSource, CacheType, Drive, IoEngine, MachineConfig, NetworkInterface, RateLimiter,
    TokenBucket, Vsock,
};
use serde::Serialize;

/// The whole body.
#[derive(Serialize)]
pub struct FullVmConfig<'a> {
    balloon: Option<()>,
    drives: Vec<DriveOut<'a>>,
    #[serde(rename = "boot-source")]
    boot_source: BootOut<'a>,
    #[serde(rename = "cpu-config")]
    cpu_config: Option<()>,
    logger: Option<()>,
    #[serde(rename = "machine-config")]
    machine_config: &'a MachineConfig,
    metrics: Option<()>,
    #[serde(rename = "mmds-config")]
    mmds_config: Option<()>,
    #[serde(rename = "network-interfaces")]
    network_interfaces: Vec<NetOut<'a>>,
    vsock: Option<&'a Vsock>,
    entropy: Option<()>,
    pmem: Vec<()>,
    #[serde(rename = "memory-hotplug")]
    memory_hotplug: Option<()>,
}

impl<'a> FullVmConfig<'a> {
    /// The body for this configuration.
    pub fn new(
        boot: Option<&'a BootSource>,
        drives: impl Iterator<Item = &'a Drive>,
        machine: &'a MachineConfig,
        nets: impl Iterator<Item = &'a NetworkInterface>,
        vsock: Option<&'a Vsock>,
    ) -> Self {
        FullVmConfig {
            balloon: None,
            drives: drives.map(DriveOut::from).collect(),
            boot_source: BootOut {
                kernel_image_path: boot.map_or("", |b| b.kernel_image_path.as_str()),
                initrd_path: boot.and_then(|b| b.initrd_path.as_deref()),
                boot_args: boot.and_then(|b| b.boot_args.as_deref()),
            },
            cpu_config: None,
            logger: None,
            machine_config: machine,
            metrics: None,
            mmds_config: None,
            network_interfaces: nets.map(NetOut::from).collect(),
            vsock,
            entropy: None,
            pmem: Vec::new(),
            memory_hotplug: None,
        }
    }
}

#[derive(Serialize)]
struct BootOut<'a> {
    kernel_image_path: &'a str,
    initrd_path: Option<&'a str>,
    boot_args: Option<&'a str>,
}

#[derive(Serialize)]
struct DriveOut<'a> {
    drive_id: &'a str,
    partuuid: Option<&'a str>,
    is_root_device: bool,
    cache_type: CacheType,
    is_read_only: bool,
    path_on_host: Option<&'a str>,
    rate_limiter: Option<LimiterOut>,
    io_engine: IoEngine,
    socket: Option<&'a str>,
}

impl<'a> From<&'a Drive> for DriveOut<'a> {
    fn from(d: &'a Drive) -> Self {
        DriveOut {
            drive_id: &d.drive_id,
            partuuid: d.partuuid.as_deref(),
            is_root_device: d.is_root_device,
            cache_type: d.cache_type.unwrap_or_default(),
            is_read_only: d.is_read_only.unwrap_or(false),
            path_on_host: d.path_on_host.as_deref(),
            rate_limiter: d.rate_limiter.as_ref().map(LimiterOut::from),
            io_engine: d.io_engine.unwrap_or_default(),
            socket: d.socket.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct NetOut<'a> {
    iface_id: &'a str,
    host_dev_name: &'a str,
    guest_mac: Option<&'a str>,
    mtu: Option<u32>,
    rx_rate_limiter: Option<LimiterOut>,
    tx_rate_limiter: Option<LimiterOut>,
}

impl<'a> From<&'a NetworkInterface> for NetOut<'a> {
    fn from(n: &'a NetworkInterface) -> Self {
        NetOut {
            iface_id: &n.iface_id,
            host_dev_name: &n.host_dev_name,
            guest_mac: n.guest_mac.as_deref(),
            mtu: n.mtu,
            rx_rate_limiter: n.rx_rate_limiter.as_ref().map(LimiterOut::from),
            tx_rate_limiter: n.tx_rate_limiter.as_ref().map(LimiterOut::from),
        }
    }
}

#[derive(Serialize)]
struct LimiterOut {
    bandwidth: Option<BucketOut>,
    ops: Option<BucketOut>,
}

impl From<&RateLimiter> for LimiterOut {
    fn from(r: &RateLimiter) -> Self {
        LimiterOut {
            bandwidth: r.bandwidth.as_ref().map(BucketOut::from),
            ops: r.ops.as_ref().map(BucketOut::from),
        }
    }
}

#[derive(Serialize)]
struct BucketOut {
    size: u64,
    one_time_burst: Option<u64>,
    refill_time: u64,
}

impl From<&TokenBucket> for BucketOut {
    fn from(b: &TokenBucket) -> Self {
        BucketOut {
            size: b.size,
            one_time_burst: b.one_time_burst,
            refill_time: b.refill_time,
        }
    }
}

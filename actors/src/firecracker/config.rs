//! What a VM is made of ([`VmConfig`]) and the pure functions that turn it into Firecracker API
//! bodies: boot arguments, drive, network interface, vsock. Validation happens here, before
//! anything is sent, with the proto types' own `validate()`.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use hearth_proto::firecracker::{
    BootSource, Drive, MachineConfig, NetworkInterface, RateLimiter, Vsock,
};

use crate::lease::NetLease;

use super::FirecrackerError;

/// Arguments every guest kernel gets: serial console on ttyS0 (captured into the console log),
/// and reboot = exit, so a guest reboot or panic ends the Firecracker process.
pub const BASE_BOOT_ARGS: &str = "console=ttyS0 reboot=k panic=1";

/// The drive id of the root disk.
pub const ROOT_DRIVE_ID: &str = "rootfs";

/// The interface id of the guest's eth0.
pub const IFACE_ID: &str = "eth0";

/// The guest's network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The lease: TAP, guest MAC and IP, gateway.
    pub lease: NetLease,
    /// Optional receive rate limiter.
    pub rx_rate_limiter: Option<RateLimiter>,
    /// Optional transmit rate limiter.
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// Everything needed to configure one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// vCPUs (1-32).
    pub vcpu_count: u8,
    /// Memory in MiB.
    pub mem_size_mib: u64,
    /// The guest kernel image.
    pub kernel: PathBuf,
    /// An optional initrd.
    pub initrd: Option<PathBuf>,
    /// Extra kernel arguments, appended after hearth's.
    pub extra_boot_args: String,
    /// The root disk.
    pub rootfs: PathBuf,
    /// Attach the root disk read-only.
    pub rootfs_read_only: bool,
    /// Optional root disk rate limiter.
    pub rootfs_rate_limiter: Option<RateLimiter>,
    /// The network interface, if any.
    pub net: Option<NetConfig>,
    /// The guest vsock CID (see [`cid_for_guest_ip`]); `None` = no vsock device, which also
    /// means no readiness probe (`ProbeReady` reaches the agent through it).
    pub vsock_cid: Option<u32>,
}

/// The full kernel command line: [`BASE_BOOT_ARGS`], the lease's `ip=` argument, then the
/// user's arguments.
pub fn boot_args(lease: Option<&NetLease>, extra: &str) -> String {
    let mut args = String::from(BASE_BOOT_ARGS);
    if let Some(lease) = lease {
        args.push(' ');
        args.push_str(&lease.kernel_ip_arg());
    }
    let extra = extra.trim();
    if !extra.is_empty() {
        args.push(' ');
        args.push_str(extra);
    }
    args
}

/// The user's kernel arguments after the one naming the guest (`hearth.hostname=<vm>`, which
/// hearth's init makes the hostname; other kernels and inits ignore it). A user's own
/// `hearth.hostname=` comes later and wins.
pub fn with_hostname_arg(vm: &str, user: &str) -> String {
    let user = user.trim();
    let named = format!("{}={vm}", hearth_proto::init::HOSTNAME_ARG);
    if user.is_empty() {
        named
    } else {
        format!("{named} {user}")
    }
}

/// A guest CID that is unique per guest IP without an allocation table: the IP as a u32.
/// Hybrid vsock CIDs only need to be unique per host for tools that address guests by CID;
/// deriving it from the lease keeps it stable across restarts. Reserved CIDs (0-2, `u32::MAX`)
/// are refused.
pub fn cid_for_guest_ip(ip: Ipv4Addr) -> Option<u32> {
    let cid = u32::from(ip);
    (3..u32::MAX).contains(&cid).then_some(cid)
}

fn invalid(
    what: &'static str,
) -> impl FnOnce(hearth_proto::firecracker::ValidationError) -> FirecrackerError {
    move |e| FirecrackerError::InvalidConfig {
        what,
        detail: e.to_string(),
    }
}

fn path_str(what: &'static str, p: &std::path::Path) -> Result<String, FirecrackerError> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| FirecrackerError::InvalidConfig {
            what,
            detail: format!("path {} is not UTF-8", p.display()),
        })
}

/// The API bodies for one VM, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiBodies {
    /// `PUT /machine-config`.
    pub machine: MachineConfig,
    /// `PUT /boot-source`.
    pub boot: BootSource,
    /// `PUT /drives/rootfs`.
    pub root: Drive,
    /// `PUT /network-interfaces/eth0`.
    pub net: Option<NetworkInterface>,
    /// `PUT /vsock`.
    pub vsock: Option<Vsock>,
}

impl VmConfig {
    /// Builds and validates the API bodies; `vsock_uds` is the run directory's vsock socket.
    pub fn api_bodies(&self, vsock_uds: &std::path::Path) -> Result<ApiBodies, FirecrackerError> {
        let machine = MachineConfig {
            vcpu_count: self.vcpu_count,
            mem_size_mib: self.mem_size_mib,
            smt: None,
            track_dirty_pages: None,
            huge_pages: None,
            cpu_template: None,
        };
        machine.validate().map_err(invalid("machine-config"))?;
        let boot = BootSource {
            kernel_image_path: path_str("kernel", &self.kernel)?,
            boot_args: Some(boot_args(
                self.net.as_ref().map(|n| &n.lease),
                &self.extra_boot_args,
            )),
            initrd_path: self
                .initrd
                .as_deref()
                .map(|p| path_str("initrd", p))
                .transpose()?,
        };
        let root = Drive {
            drive_id: ROOT_DRIVE_ID.into(),
            is_root_device: true,
            partuuid: None,
            cache_type: None,
            is_read_only: Some(self.rootfs_read_only),
            path_on_host: Some(path_str("rootfs", &self.rootfs)?),
            rate_limiter: self.rootfs_rate_limiter.clone(),
            io_engine: None,
            socket: None,
        };
        root.validate().map_err(invalid("rootfs drive"))?;
        let net = self
            .net
            .as_ref()
            .map(|n| {
                let iface = NetworkInterface {
                    iface_id: IFACE_ID.into(),
                    host_dev_name: n.lease.tap.clone(),
                    guest_mac: Some(n.lease.mac.to_string()),
                    mtu: None,
                    rx_rate_limiter: n.rx_rate_limiter.clone(),
                    tx_rate_limiter: n.tx_rate_limiter.clone(),
                };
                iface.validate().map_err(invalid("network interface"))?;
                Ok::<_, FirecrackerError>(iface)
            })
            .transpose()?;
        let vsock = self
            .vsock_cid
            .map(|cid| {
                let v = Vsock {
                    guest_cid: cid,
                    uds_path: path_str("vsock", vsock_uds)?,
                    vsock_id: None,
                };
                v.validate().map_err(invalid("vsock"))?;
                Ok::<_, FirecrackerError>(v)
            })
            .transpose()?;
        Ok(ApiBodies {
            machine,
            boot,
            root,
            net,
            vsock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::MacAddr;

    pub(crate) fn lease() -> NetLease {
        NetLease {
            tap: "hth0".into(),
            mac: MacAddr::for_guest(Ipv4Addr::new(172, 31, 240, 5)),
            guest_ip: Ipv4Addr::new(172, 31, 240, 5),
            gateway: Ipv4Addr::new(172, 31, 240, 1),
            prefix_len: 24,
        }
    }

    pub(crate) fn config() -> VmConfig {
        VmConfig {
            vcpu_count: 1,
            mem_size_mib: 128,
            kernel: "/k/vmlinux".into(),
            initrd: None,
            extra_boot_args: " quiet ".into(),
            rootfs: "/d/rootfs.ext4".into(),
            rootfs_read_only: true,
            rootfs_rate_limiter: None,
            net: Some(NetConfig {
                lease: lease(),
                rx_rate_limiter: None,
                tx_rate_limiter: None,
            }),
            vsock_cid: cid_for_guest_ip(Ipv4Addr::new(172, 31, 240, 5)),
        }
    }

    #[test]
    fn the_guest_is_named_before_the_users_arguments() {
        assert_eq!(with_hostname_arg("web", ""), "hearth.hostname=web");
        let extra = with_hostname_arg("web", " quiet hearth.hostname=other ");
        assert_eq!(extra, "hearth.hostname=web quiet hearth.hostname=other");
        let args = boot_args(Some(&lease()), &extra);
        assert_eq!(
            hearth_proto::init::cmdline_value(&args, hearth_proto::init::HOSTNAME_ARG),
            Some("other")
        );
        // What init parses from the line hearth builds.
        let ip = hearth_proto::init::parse_kernel_ip(&args).unwrap().unwrap();
        assert_eq!(ip.client, lease().guest_ip);
        assert_eq!(ip.gateway, Some(lease().gateway));
        assert_eq!(ip.prefix_len, lease().prefix_len);
        assert_eq!(ip.dns, Some(lease().gateway));
    }

    #[test]
    fn boot_args_order() {
        assert_eq!(boot_args(None, ""), "console=ttyS0 reboot=k panic=1");
        assert_eq!(
            boot_args(Some(&lease()), "quiet init=/sbin/init"),
            "console=ttyS0 reboot=k panic=1 \
             ip=172.31.240.5::172.31.240.1:255.255.255.0::eth0:off:172.31.240.1 \
             quiet init=/sbin/init"
        );
    }

    #[test]
    fn cids_skip_reserved() {
        assert_eq!(cid_for_guest_ip(Ipv4Addr::new(0, 0, 0, 2)), None);
        assert_eq!(cid_for_guest_ip(Ipv4Addr::BROADCAST), None);
        assert_eq!(
            cid_for_guest_ip(Ipv4Addr::new(10, 0, 0, 3)),
            Some(0x0a00_0003)
        );
    }

    #[test]
    fn bodies_from_config() {
        let b = config()
            .api_bodies(std::path::Path::new("/r/v.sock"))
            .unwrap();
        assert_eq!(b.root.is_read_only, Some(true));
        assert!(b
            .boot
            .boot_args
            .as_deref()
            .unwrap()
            .ends_with("172.31.240.1 quiet"));
        let net = b.net.unwrap();
        assert_eq!(net.host_dev_name, "hth0");
        assert_eq!(net.guest_mac.as_deref(), Some("06:00:ac:1f:f0:05"));
        assert_eq!(b.vsock.unwrap().uds_path, "/r/v.sock");
    }

    #[test]
    fn invalid_configs_are_rejected_before_sending() {
        let mut c = config();
        c.vcpu_count = 0;
        assert!(matches!(
            c.api_bodies(std::path::Path::new("/r/v.sock")),
            Err(FirecrackerError::InvalidConfig {
                what: "machine-config",
                ..
            })
        ));
        // No vsock device is a valid configuration (the VM then cannot be probed).
        let mut c = config();
        c.vsock_cid = None;
        assert!(c
            .api_bodies(std::path::Path::new("/r/v.sock"))
            .unwrap()
            .vsock
            .is_none());
    }
}

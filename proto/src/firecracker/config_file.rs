//! The `--config-file` JSON (Firecracker's `VmmConfig`, kebab-case keys), which is also the
//! shape of `GET /vm/config` (`definitions/FullVmConfiguration`). Only the resources hearth
//! uses are modelled; others (balloon, mmds-config, entropy, pmem, ...) are rejected as unknown.

use serde::{Deserialize, Serialize};

use super::{
    BootSource, Drive, Logger, MachineConfig, Metrics, NetworkInterface, ValidationError, Vsock,
};

/// A whole microVM configuration: what `--config-file` boots and `GET /vm/config` returns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfigFile {
    /// The kernel, its command line and initrd. Required in a config file.
    #[serde(
        rename = "boot-source",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub boot_source: Option<BootSource>,
    /// Configurations for all block devices.
    #[serde(default)]
    pub drives: Vec<Drive>,
    /// vCPUs and memory.
    #[serde(
        rename = "machine-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub machine_config: Option<MachineConfig>,
    /// Configurations for all net devices.
    #[serde(
        rename = "network-interfaces",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub network_interfaces: Vec<NetworkInterface>,
    /// The vsock device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<Vsock>,
    /// The logger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logger: Option<Logger>,
    /// The metrics target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
}

impl VmConfigFile {
    /// Validates every resource in it; the cross-resource rules (one root device, unique
    /// MACs) are the VMM's business, as they depend on state.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(m) = &self.machine_config {
            m.validate()?;
        }
        for d in &self.drives {
            d.validate()?;
        }
        for n in &self.network_interfaces {
            n.validate()?;
        }
        if let Some(v) = &self.vsock {
            v.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kebab_case_keys() {
        let json = r#"{
            "boot-source": {"kernel_image_path": "/vmlinux", "boot_args": "console=ttyS0"},
            "drives": [{"drive_id": "rootfs", "path_on_host": "/rootfs.ext4",
                        "is_root_device": true, "is_read_only": false}],
            "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
            "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0"}],
            "vsock": {"guest_cid": 3, "uds_path": "/v.sock"}
        }"#;
        let c: VmConfigFile = serde_json::from_str(json).unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.machine_config.as_ref().unwrap().vcpu_count, 2);
        let again: VmConfigFile =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        assert!(serde_json::from_str::<VmConfigFile>(r#"{"machine_config":{}}"#).is_err());
    }
}

//! The `--config-file` JSON (Firecracker's `VmmConfig`, kebab-case keys), which is also the
//! shape of `GET /vm/config` (`definitions/FullVmConfiguration`). The resources hearth uses are
//! typed; the others (balloon, cpu-config, memory-hotplug, mmds-config, pmem, entropy) are kept
//! as raw JSON so that a real Firecracker's `GET /vm/config` (which lists them, often as
//! `null`) still parses.

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
    /// The balloon device (not modelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<serde_json::Value>,
    /// The custom CPU template (not modelled).
    #[serde(
        rename = "cpu-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_config: Option<serde_json::Value>,
    /// The hotpluggable memory device (not modelled).
    #[serde(
        rename = "memory-hotplug",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_hotplug: Option<serde_json::Value>,
    /// The MMDS configuration (not modelled).
    #[serde(
        rename = "mmds-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mmds_config: Option<serde_json::Value>,
    /// The virtio-pmem devices (not modelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pmem: Option<serde_json::Value>,
    /// The entropy device (not modelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<serde_json::Value>,
}

impl VmConfigFile {
    /// The spec keys of the resources present but not modelled (hearth and the simulator do
    /// not use them).
    pub fn unmodelled(&self) -> Vec<&'static str> {
        [
            ("balloon", &self.balloon),
            ("cpu-config", &self.cpu_config),
            ("memory-hotplug", &self.memory_hotplug),
            ("mmds-config", &self.mmds_config),
            ("pmem", &self.pmem),
            ("entropy", &self.entropy),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k)
        .collect()
    }
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

    #[test]
    fn real_firecracker_vm_config_with_nulls_parses() {
        let json = r#"{"balloon":null,"drives":[],"boot-source":{"kernel_image_path":"/k","initrd_path":null,"boot_args":null},"cpu-config":null,"logger":null,"machine-config":{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"},"metrics":null,"mmds-config":null,"network-interfaces":[],"vsock":null,"entropy":null,"pmem":[]}"#;
        let c: VmConfigFile = serde_json::from_str(json).unwrap();
        assert_eq!(c.unmodelled(), vec!["pmem"]);
        assert_eq!(c.machine_config.unwrap().vcpu_count, 1);
    }
}

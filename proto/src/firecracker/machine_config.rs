//! `PUT /machine-config` ([`MachineConfig`]) and `PATCH /machine-config`
//! ([`MachineConfigUpdate`]), `definitions/MachineConfiguration`.

use serde::{Deserialize, Serialize};

use super::ValidationError;

/// Firecracker's limit on vCPUs per microVM.
pub const MAX_VCPUS: u8 = 32;
/// The default vCPU count when `/machine-config` is never set.
pub const DEFAULT_VCPU_COUNT: u8 = 1;
/// The default memory size (MiB) when `/machine-config` is never set.
pub const DEFAULT_MEM_SIZE_MIB: u64 = 128;

/// The CPU Template defines a set of flags to be disabled from the microvm so that the
/// features exposed to the guest are the same as in the selected instance type. This
/// parameter has been deprecated and it will be removed in future Firecracker release.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[expect(
    missing_docs,
    reason = "the variants are instance-type names from the spec"
)]
pub enum CpuTemplate {
    C3,
    T2,
    T2S,
    T2CL,
    T2A,
    V1N1,
    #[default]
    None,
}

/// Which huge pages configuration should be used to back guest memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HugePages {
    /// Regular 4K pages.
    #[default]
    None,
    /// Transparent huge pages via `madvise(MADV_HUGEPAGE)` (unreleased, spec 1.17.0-dev).
    Transparent,
    /// Explicit hugetlbfs 2 MiB pages; `mem_size_mib` must then be a multiple of 2.
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

/// Describes the number of vCPUs, memory size, SMT capabilities, huge page configuration and
/// the CPU template. Body of `PUT /machine-config` (optional fields default as documented) and
/// of `GET /machine-config`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// Number of vCPUs (either 1 or an even number). Range 1..=32.
    pub vcpu_count: u8,
    /// Memory size of VM.
    pub mem_size_mib: u64,
    /// Flag for enabling/disabling simultaneous multithreading. Can be enabled only on x86.
    /// Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// The CPU template (deprecated). Declared here, as in Firecracker, so the "expected one
    /// of" list of an unknown-field error names the fields in Firecracker's order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplate>,
    /// Enable dirty page tracking. If this is enabled, then incremental guest memory snapshots
    /// can be created. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Which huge pages configuration should be used to back guest memory. Default `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            vcpu_count: DEFAULT_VCPU_COUNT,
            mem_size_mib: DEFAULT_MEM_SIZE_MIB,
            smt: None,
            track_dirty_pages: None,
            huge_pages: None,
            cpu_template: None,
        }
    }
}

impl MachineConfig {
    /// Checks Firecracker's cross-field rules: vCPUs 1..=32 and 1 or even with SMT; memory
    /// non-zero and a multiple of the huge page size.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let smt = self.smt.unwrap_or(false);
        let v = self.vcpu_count;
        if v == 0 || v > MAX_VCPUS || (smt && v > 1 && v % 2 == 1) {
            return Err(ValidationError::InvalidVcpuCount { vcpu_count: v, smt });
        }
        let divisor = match self.huge_pages.unwrap_or_default() {
            HugePages::Hugetlbfs2M => 2,
            HugePages::None | HugePages::Transparent => 1,
        };
        if self.mem_size_mib == 0 || self.mem_size_mib % divisor != 0 {
            return Err(ValidationError::InvalidMemorySize {
                mem_size_mib: self.mem_size_mib,
            });
        }
        Ok(())
    }

    /// Applies a PATCH: fields set in `update` replace ours. Validate the result.
    #[must_use]
    pub fn apply(&self, update: &MachineConfigUpdate) -> MachineConfig {
        MachineConfig {
            vcpu_count: update.vcpu_count.unwrap_or(self.vcpu_count),
            mem_size_mib: update.mem_size_mib.unwrap_or(self.mem_size_mib),
            smt: update.smt.or(self.smt),
            track_dirty_pages: update.track_dirty_pages.or(self.track_dirty_pages),
            huge_pages: update.huge_pages.or(self.huge_pages),
            cpu_template: update.cpu_template.or(self.cpu_template),
        }
    }
}

/// Body of `PATCH /machine-config`: a subset of the machine configuration. All fields are
/// optional, but at least one must be given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigUpdate {
    /// Number of vCPUs (either 1 or an even number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_count: Option<u8>,
    /// Memory size of VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_size_mib: Option<u64>,
    /// Flag for enabling/disabling simultaneous multithreading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// Enable dirty page tracking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Which huge pages configuration should be used to back guest memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
    /// The CPU template (deprecated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplate>,
}

impl MachineConfigUpdate {
    /// Rejects an update that sets no field (Firecracker answers such a PATCH with 400).
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self == &Self::default() {
            return Err(ValidationError::EmptyUpdate {
                what: "machine config",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mc(vcpu_count: u8, smt: bool) -> MachineConfig {
        MachineConfig {
            vcpu_count,
            smt: Some(smt),
            ..MachineConfig::default()
        }
    }

    #[test]
    fn vcpu_rules() {
        assert!(mc(1, false).validate().is_ok());
        assert!(mc(3, false).validate().is_ok());
        assert!(mc(32, false).validate().is_ok());
        assert!(mc(1, true).validate().is_ok());
        assert!(mc(2, true).validate().is_ok());
        assert!(mc(0, false).validate().is_err());
        assert!(mc(33, false).validate().is_err());
        assert!(mc(3, true).validate().is_err());
    }

    #[test]
    fn memory_rules() {
        let mut m = MachineConfig {
            mem_size_mib: 0,
            ..MachineConfig::default()
        };
        assert!(matches!(
            m.validate(),
            Err(ValidationError::InvalidMemorySize { .. })
        ));
        m.mem_size_mib = 129;
        m.huge_pages = Some(HugePages::Hugetlbfs2M);
        assert!(m.validate().is_err());
        m.mem_size_mib = 128;
        assert!(m.validate().is_ok());
    }

    #[test]
    fn parses_spec_body_and_rejects_unknown_fields() {
        let m: MachineConfig =
            serde_json::from_str(r#"{"vcpu_count":2,"mem_size_mib":256,"huge_pages":"2M"}"#)
                .unwrap();
        assert_eq!(m.huge_pages, Some(HugePages::Hugetlbfs2M));
        assert!(serde_json::from_str::<MachineConfig>(
            r#"{"vcpu_count":2,"mem_size_mib":256,"bogus":1}"#
        )
        .is_err());
        assert!(serde_json::from_str::<MachineConfig>(r#"{"vcpu_count":2}"#).is_err());
    }

    #[test]
    fn patch_applies_and_empty_patch_is_rejected() {
        let base = MachineConfig::default();
        let up = MachineConfigUpdate {
            vcpu_count: Some(4),
            ..Default::default()
        };
        assert!(up.validate().is_ok());
        let next = base.apply(&up);
        assert_eq!(next.vcpu_count, 4);
        assert_eq!(next.mem_size_mib, DEFAULT_MEM_SIZE_MIB);
        assert!(MachineConfigUpdate::default().validate().is_err());
        assert_eq!(serde_json::to_string(&up).unwrap(), r#"{"vcpu_count":4}"#);
    }
}

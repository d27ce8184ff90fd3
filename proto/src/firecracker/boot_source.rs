//! `PUT /boot-source`, `definitions/BootSource`.

use serde::{Deserialize, Serialize};

/// The kernel command line Firecracker uses when `boot_args` is omitted. Supplied `boot_args`
/// replace it entirely (`src/vmm/src/vmm_config/boot_source.rs`).
pub const DEFAULT_BOOT_ARGS: &str =
    "reboot=k panic=1 nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.dumbkbd swiotlb=noforce";

/// Boot source descriptor. Firecracker opens the files when the request arrives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    /// Host level path to the kernel image used to boot the guest.
    pub kernel_image_path: String,
    // Firecracker's field order (its "expected one of" lists follow it).
    /// Host level path to the initrd image used to boot the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    /// Kernel boot arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
}

impl BootSource {
    /// The command line the guest will see: `boot_args`, or [`DEFAULT_BOOT_ARGS`] when omitted.
    pub fn effective_boot_args(&self) -> &str {
        self.boot_args.as_deref().unwrap_or(DEFAULT_BOOT_ARGS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_args_only_when_omitted() {
        let b: BootSource = serde_json::from_str(r#"{"kernel_image_path":"/k"}"#).unwrap();
        assert_eq!(b.effective_boot_args(), DEFAULT_BOOT_ARGS);
        let b: BootSource =
            serde_json::from_str(r#"{"kernel_image_path":"/k","boot_args":"console=ttyS0"}"#)
                .unwrap();
        assert_eq!(b.effective_boot_args(), "console=ttyS0");
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"kernel_image_path":"/k","boot_args":"console=ttyS0"}"#
        );
        assert!(serde_json::from_str::<BootSource>(r#"{"boot_args":"x"}"#).is_err());
    }
}

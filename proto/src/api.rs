//! hearth's own HTTP API bodies (`/v1/...`), shared by hearthd and hearthctl, and the VM
//! lifecycle state machine both sides reason about.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Where a VM is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// The create saga is running (disk, lease, process).
    Creating,
    /// The process is being spawned, configured and started, or is waiting for readiness.
    Starting,
    /// Started, and the agent answered (or the probe is disabled).
    Running,
    /// Started, but the agent did not answer within the readiness timeout.
    Unready,
    /// The stop ladder is running.
    Stopping,
    /// Stopped on request; the disk is kept, the network lease released.
    Stopped,
    /// The process exited without being asked to.
    Crashed,
    /// A create or start failed; `last_error` says why. Everything it made was undone.
    Failed,
    /// Delete is running.
    Deleting,
    /// The guest's vCPUs are paused (`PATCH /vm`): it keeps its process, memory, disk and
    /// network lease but runs no code; its agent does not answer.
    Paused,
}

impl VmState {
    /// Every state, for tests and metrics.
    pub const ALL: [VmState; 10] = [
        VmState::Creating,
        VmState::Starting,
        VmState::Running,
        VmState::Unready,
        VmState::Stopping,
        VmState::Stopped,
        VmState::Crashed,
        VmState::Failed,
        VmState::Deleting,
        VmState::Paused,
    ];

    /// The name used on the wire and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Creating => "creating",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Unready => "unready",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
            VmState::Crashed => "crashed",
            VmState::Failed => "failed",
            VmState::Deleting => "deleting",
            VmState::Paused => "paused",
        }
    }

    /// A VMM process exists for the VM in this state (it may need stopping).
    pub fn has_process(self) -> bool {
        matches!(
            self,
            VmState::Starting
                | VmState::Running
                | VmState::Unready
                | VmState::Stopping
                | VmState::Paused
        )
    }

    /// `start` is allowed: the VM is at rest.
    pub fn can_start(self) -> bool {
        matches!(self, VmState::Stopped | VmState::Crashed | VmState::Failed)
    }

    /// `stop` (and `kill`) is allowed: a process is up and not already being stopped. A
    /// paused VM is resumed first, so its guest can shut down cleanly.
    pub fn can_stop(self) -> bool {
        matches!(
            self,
            VmState::Starting | VmState::Running | VmState::Unready | VmState::Paused
        )
    }

    /// `pause` is allowed: the guest runs (ready or not).
    pub fn can_pause(self) -> bool {
        matches!(self, VmState::Running | VmState::Unready)
    }

    /// `resume` is allowed: the VM is paused.
    pub fn can_resume(self) -> bool {
        self == VmState::Paused
    }

    /// A snapshot can be taken: the guest runs, or is paused.
    pub fn can_snapshot(self) -> bool {
        matches!(self, VmState::Running | VmState::Unready | VmState::Paused)
    }

    /// `restart` is allowed.
    pub fn can_restart(self) -> bool {
        self.can_stop() || self.can_start()
    }

    /// `delete` is allowed: anything but a lifecycle step already in flight.
    pub fn can_delete(self) -> bool {
        !matches!(
            self,
            VmState::Creating | VmState::Stopping | VmState::Deleting
        )
    }

    /// NAT can be switched: the VM holds a network lease.
    pub fn can_set_nat(self) -> bool {
        matches!(
            self,
            VmState::Starting
                | VmState::Running
                | VmState::Unready
                | VmState::Stopped
                | VmState::Paused
        )
    }

    /// The VM counts as alive for DNS (its name resolves). A paused VM keeps its name: it
    /// answers again once resumed.
    pub fn is_alive(self) -> bool {
        matches!(
            self,
            VmState::Starting | VmState::Running | VmState::Unready | VmState::Paused
        )
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for VmState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VmState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown VM state {s:?}"))
    }
}

/// `POST /v1/vms`: what a VM is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVm {
    /// The VM's name: a DNS label (1-63 of `a-z`, `0-9`, `-`), unique on the host.
    pub name: String,
    /// Name of a kernel image in the image store. Required, unless `from_snapshot` is given
    /// (the snapshot's source VM's is used).
    #[serde(default)]
    pub kernel: String,
    /// Name of a root filesystem image in the image store. Required, unless `from_snapshot`
    /// is given (the snapshot's source VM's is used).
    #[serde(default)]
    pub rootfs: String,
    /// Number of vCPUs (1-32).
    #[serde(default = "default_vcpus", deserialize_with = "whole::number")]
    pub vcpus: u8,
    /// Guest memory in MiB.
    #[serde(default = "default_memory", deserialize_with = "whole::number")]
    pub memory_mib: u32,
    /// Root disk size in bytes; default: the image's size.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::optional"
    )]
    pub disk_size: Option<u64>,
    /// Extra kernel command-line arguments (hearth always adds `reboot=k panic=1` and `ip=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    /// For a root filesystem built from an OCI image: which init the guest boots. Default: the
    /// one the image was built for; `hearth` adds `init=/sbin/hearth-init` before
    /// `boot_args` (so `init=` there still wins), `image` boots the image's own init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<crate::image_config::InitMode>,
    /// Give the guest outbound access through NAT.
    #[serde(default)]
    pub nat: bool,
    /// Wait for the guest agent before calling the VM running.
    #[serde(default = "default_true")]
    pub ready_probe: bool,
    /// Free-form labels, filterable on list.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Restore this snapshot (see `GET /v1/snapshots`) as a new VM instead of booting: the
    /// machine (kernel, root filesystem, vCPUs, memory, disk size, boot arguments) is the
    /// snapshot's source VM's, so `kernel` and `rootfs` must be left out; the VM gets its
    /// own network lease, vsock, disk (copy-on-write from the snapshot's) and name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_snapshot: Option<String>,
    /// What hearthd does when the VMM exits without being asked to: `no` (default),
    /// `on-failure`, `on-failure:N`, `always`.
    #[serde(
        default,
        skip_serializing_if = "crate::api_policy::RestartPolicy::is_no"
    )]
    pub restart: crate::api_policy::RestartPolicy,
    /// A time limit from creation (`30m`, `1h30m`); at expiry `on_expiry` happens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// What happens at the time limit: `stop` (default) or `delete`.
    #[serde(default, skip_serializing_if = "crate::api_policy::OnExpiry::is_stop")]
    pub on_expiry: crate::api_policy::OnExpiry,
    /// Guest ports published on the host (`[HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|udp]` in
    /// hearthctl), at most 64, no two on the same host port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<crate::api_publish::PortMapping>,
    /// Where the guest may connect (`mode` `allow`, the default, or `deny` with `allow` CIDRs
    /// and `allow_domains`); left out: allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<crate::api_egress::EgressPolicy>,
}

/// Integer fields as JSON Schema defines integers: any number with no fractional part, so
/// `2.0` is 2 (a generated client may send it), while `2.5`, negatives and values beyond the
/// field's type are refused naming what was expected.
pub(crate) mod whole {
    use serde::de::{self, Deserializer, Visitor};
    use std::fmt;
    use std::marker::PhantomData;

    struct Whole<T>(PhantomData<T>);

    impl<T: TryFrom<u64>> Visitor<'_> for Whole<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(
                f,
                "a whole number from 0 to {}",
                max::<T>().map_or("?".into(), |m| m.to_string())
            )
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            let u =
                u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))?;
            self.visit_u64(u)
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            // 2^64 is the first float above u64::MAX.
            if v.fract() != 0.0 || !(0.0..18_446_744_073_709_551_616.0).contains(&v) {
                return Err(E::invalid_value(de::Unexpected::Float(v), &self));
            }
            self.visit_u64(v as u64)
        }
    }

    /// The largest value of `T`, for messages.
    fn max<T: TryFrom<u64>>() -> Option<u64> {
        [
            u64::from(u8::MAX),
            u64::from(u16::MAX),
            u64::from(u32::MAX),
            u64::MAX,
        ]
        .into_iter()
        .take_while(|m| T::try_from(*m).is_ok())
        .last()
    }

    pub fn number<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
        d.deserialize_any(Whole(PhantomData))
    }

    pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        struct Opt<T>(PhantomData<T>);
        impl<'de, T: TryFrom<u64>> Visitor<'de> for Opt<T> {
            type Value = Option<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number or null")
            }
            fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
                number(d).map(Some)
            }
        }
        d.deserialize_option(Opt(PhantomData))
    }
}

fn default_vcpus() -> u8 {
    1
}
fn default_memory() -> u32 {
    128
}
fn default_true() -> bool {
    true
}

/// A field of a request body that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid `{field}`: {reason}")]
pub struct FieldError {
    /// The field's name.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// Most vCPUs a VM may have (Firecracker's limit).
pub const MAX_VCPUS: u8 = 32;
/// Least guest memory, MiB.
pub const MIN_MEMORY_MIB: u32 = 16;
/// Most guest memory, MiB (1 TiB): beyond what any host here backs, and far from the sizes
/// that overflow when Firecracker turns MiB into bytes.
pub const MAX_MEMORY_MIB: u32 = 1 << 20;
/// Disks are whole 512-byte sectors.
pub const SECTOR: u64 = 512;
/// Largest root disk, bytes (8 TiB): a sparse file of that size fits ext4 (whose limit is
/// 16 TiB) and xfs, and a device-mapper table; `2^63` or `u64::MAX` fit nothing.
pub const MAX_DISK_SIZE: u64 = 8 << 40;
/// Longest `boot_args`, bytes. Firecracker refuses a command line of 2048 bytes or more
/// ("Invalid cmdline capacity", measured against v1.17.0-dev) and adds to it what hearth
/// and it need (`console=ttyS0 reboot=k panic=1`, the `ip=` argument, `pci=off` and one
/// `virtio_mmio.device=...` per device, about 300 bytes); 1024 leaves room for all of it.
pub const MAX_BOOT_ARGS: usize = 1024;

impl CreateVm {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_vm_name(&self.name)?;
        if let Some(snapshot) = &self.from_snapshot {
            crate::api_snapshot::validate_snapshot_name(snapshot, "from_snapshot")?;
        }
        for (field, image) in [("kernel", &self.kernel), ("rootfs", &self.rootfs)] {
            match (image.is_empty(), self.from_snapshot.is_some()) {
                (true, false) => {
                    return Err(FieldError {
                        field,
                        reason: "must name an image".into(),
                    })
                }
                (false, true) => {
                    return Err(FieldError {
                        field,
                        reason: "must be left out with `from_snapshot`: the snapshot's is used"
                            .into(),
                    })
                }
                _ => {}
            }
        }
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(FieldError {
                field: "vcpus",
                reason: format!("{} is outside 1..={MAX_VCPUS}", self.vcpus),
            });
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(FieldError {
                field: "memory_mib",
                reason: format!(
                    "{} MiB is outside {MIN_MEMORY_MIB}..={MAX_MEMORY_MIB}",
                    self.memory_mib
                ),
            });
        }
        if let Some(size) = self.disk_size {
            if !(SECTOR..=MAX_DISK_SIZE).contains(&size) || size % SECTOR != 0 {
                return Err(FieldError {
                    field: "disk_size",
                    reason: format!(
                        "{size} must be a multiple of {SECTOR} in {SECTOR}..={MAX_DISK_SIZE} \
                         (and at least the root filesystem image's size)"
                    ),
                });
            }
        }
        if let Some(args) = &self.boot_args {
            check_boot_args(args)?;
        }
        for (k, v) in &self.labels {
            let key_len = k.chars().count();
            if key_len == 0 || key_len > 63 || k.contains('=') || v.chars().count() > 255 {
                return Err(FieldError {
                    field: "labels",
                    reason: format!(
                        "label {k:?} must be 1-63 characters without '=', value at most 255"
                    ),
                });
            }
        }
        if let Some(ttl) = &self.ttl {
            crate::api_policy::parse_ttl(ttl).map_err(|e| FieldError {
                field: "ttl",
                reason: e.to_string(),
            })?;
        }
        crate::api_publish::validate_publish("publish", &self.publish)?;
        if let Some(egress) = &self.egress {
            crate::api_egress::validate_egress("egress", egress)?;
        }
        Ok(())
    }
}

/// `boot_args`: at most [`MAX_BOOT_ARGS`] bytes of printable ASCII (a kernel command line
/// is ASCII; Firecracker refuses anything else).
pub fn check_boot_args(args: &str) -> Result<(), FieldError> {
    if args.len() > MAX_BOOT_ARGS {
        return Err(FieldError {
            field: "boot_args",
            reason: format!(
                "{} bytes is outside the allowed length 0..={MAX_BOOT_ARGS}",
                args.len()
            ),
        });
    }
    if let Some(c) = args.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(FieldError {
            field: "boot_args",
            reason: format!(
                "{c:?} is not allowed: printable ASCII (space to '~') only, 0..={MAX_BOOT_ARGS} bytes"
            ),
        });
    }
    Ok(())
}

/// A label filter or assignment `key=value` (the `label` query parameter of `GET /v1/vms`,
/// hearthctl's `--label`): split at the first `=`, the key not empty; the value may be empty
/// and may itself contain `=`.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

/// VM names double as DNS labels: 1-63 of `a-z`, `0-9` and `-`, not starting or ending with `-`.
pub fn validate_vm_name(name: &str) -> Result<(), FieldError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(FieldError {
            field: "name",
            reason: format!(
                "{name:?} must be 1-63 of a-z, 0-9 and '-', not starting or ending with '-'"
            ),
        })
    }
}

/// A VM as the API reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmInfo {
    /// The VM's name.
    pub name: String,
    /// Its lifecycle state.
    pub state: VmState,
    /// What it was created with.
    pub spec: CreateVm,
    /// Guest IP while it holds a lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_ip: Option<Ipv4Addr>,
    /// TAP device while it holds a lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// The VMM's pid while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Whether NAT is on.
    pub nat: bool,
    /// Why the VM is failed/crashed/unready, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// How the image's command ended, when the VM stopped because hearth's init reported it
    /// and powered off ([`exit_status_of`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<crate::init::ExitReport>,
    /// Restarts the policy made since the VM last ran stably.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restart_attempts: u32,
    /// When a restart is scheduled: seconds until it (rounded up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_in_secs: Option<u64>,
    /// With a time limit: its deadline, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// With a time limit: seconds left (0 once reached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_left_secs: Option<u64>,
    /// The newest snapshot an expiry (`on_expiry: snapshot`) or a drain (`mode: snapshot`)
    /// took of it, while that snapshot exists: `vm create --from-snapshot` resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked_snapshot: Option<String>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// `PUT /v1/vms/{name}/nat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetNat {
    /// NAT on or off.
    pub enabled: bool,
}

/// Why a lifecycle event happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventReason {
    /// A user request.
    User,
    /// The VMM process exited on its own.
    Crash,
    /// hearthd restarted and reconciled.
    Restart,
    /// The guest agent did not answer in time.
    ReadinessTimeout,
    /// A step of a lifecycle operation failed.
    Error,
    /// A snapshot (or fork) paused or resumed the VM, or the VM was restored from one.
    Snapshot,
    /// The VM's restart policy acted (a restart scheduled or made, or given up).
    Policy,
    /// The VM's time limit was reached.
    Expired,
    /// A drain of the host stopped or snapshotted it.
    Drain,
}

/// One lifecycle event, persisted with a sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Monotonic sequence number (resume with `?since=`).
    pub seq: u64,
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// The VM it concerns.
    pub vm: String,
    /// The state entered.
    pub state: VmState,
    /// Why.
    pub reason: EventReason,
    /// Detail, e.g. an error message or an exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// On a `stopped` event after hearth's init powered the guest off: how the image's
    /// command ended ([`exit_status_of`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<crate::init::ExitReport>,
}

/// The command's exit status a `stopped` state carries: hearth records init's console line
/// ([`crate::init::exit_line`]) in the event's detail and the VM's `last_error`, and both
/// ends parse it back from there, so no store column is needed. `None` for other states.
pub fn exit_status_of(state: VmState, detail: Option<&str>) -> Option<crate::init::ExitReport> {
    if state == VmState::Stopped {
        detail.and_then(crate::init::parse_exit_line)
    } else {
        None
    }
}

/// The error body of every non-2xx response: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `not_found`, `conflict`, `invalid_field`.
    pub code: String,
    /// A human message.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> CreateVm {
        serde_json::from_str(&format!(r#"{{"name":"{name}","kernel":"k","rootfs":"r"}}"#)).unwrap()
    }

    #[test]
    fn create_defaults_and_unknown_fields() {
        let s = spec("web-1");
        assert_eq!(
            (s.vcpus, s.memory_mib, s.nat, s.ready_probe),
            (1, 128, false, true)
        );
        s.validate().unwrap();
        let err =
            serde_json::from_str::<CreateVm>(r#"{"name":"a","kernel":"k","rootfs":"r","cpus":2}"#)
                .unwrap_err();
        assert!(err.to_string().contains("cpus"), "{err}");
    }

    /// JSON Schema's integers include `2.0`; a generated client sent `disk_size: 135770112.0`
    /// and got 400 for a schema-valid body.
    #[test]
    fn whole_floats_are_integers() {
        let s: CreateVm = serde_json::from_str(
            r#"{"name":"a","kernel":"k","rootfs":"r","vcpus":2.0,"memory_mib":256.0,"disk_size":1048576.0}"#,
        )
        .unwrap();
        assert_eq!(
            (s.vcpus, s.memory_mib, s.disk_size),
            (2, 256, Some(1 << 20))
        );
        let s: CreateVm =
            serde_json::from_str(r#"{"name":"a","kernel":"k","rootfs":"r","disk_size":null}"#)
                .unwrap();
        assert_eq!(s.disk_size, None);
        for (field, bad) in [
            ("vcpus", "2.5"),
            ("vcpus", "256"),
            ("vcpus", "-1"),
            ("memory_mib", "4294967296"),
            ("disk_size", "1e300"),
            ("disk_size", "18446744073709551616.0"),
            ("disk_size", "-512"),
            ("disk_size", "\"512\""),
        ] {
            let json = format!(r#"{{"name":"a","kernel":"k","rootfs":"r","{field}":{bad}}}"#);
            let err = serde_json::from_str::<CreateVm>(&json).unwrap_err();
            assert!(
                err.to_string().contains("whole number"),
                "{field}={bad}: {err}"
            );
        }
    }

    #[test]
    fn bad_fields_are_named() {
        for (mutate, field) in [
            (
                Box::new(|s: &mut CreateVm| s.name = "Web".into()) as Box<dyn Fn(&mut CreateVm)>,
                "name",
            ),
            (Box::new(|s: &mut CreateVm| s.name = "-a".into()), "name"),
            (Box::new(|s: &mut CreateVm| s.name = "a".repeat(64)), "name"),
            (Box::new(|s: &mut CreateVm| s.kernel.clear()), "kernel"),
            (Box::new(|s: &mut CreateVm| s.vcpus = 0), "vcpus"),
            (Box::new(|s: &mut CreateVm| s.memory_mib = 1), "memory_mib"),
            // Issue 9, finding 3: these gave 500 `step_failed` and left a failed VM.
            (
                Box::new(|s: &mut CreateVm| s.memory_mib = u32::MAX),
                "memory_mib",
            ),
            (
                Box::new(|s: &mut CreateVm| s.disk_size = Some(0)),
                "disk_size",
            ),
            (
                Box::new(|s: &mut CreateVm| s.disk_size = Some(1000)),
                "disk_size",
            ),
            (
                Box::new(|s: &mut CreateVm| s.disk_size = Some(1 << 63)),
                "disk_size",
            ),
            (
                Box::new(|s: &mut CreateVm| s.disk_size = Some(u64::MAX)),
                "disk_size",
            ),
            (
                Box::new(|s: &mut CreateVm| s.boot_args = Some("a".repeat(60_000))),
                "boot_args",
            ),
            (
                Box::new(|s: &mut CreateVm| s.boot_args = Some("a".repeat(MAX_BOOT_ARGS + 1))),
                "boot_args",
            ),
            (
                Box::new(|s: &mut CreateVm| s.boot_args = Some("init=/x\u{0}".into())),
                "boot_args",
            ),
            (
                Box::new(|s: &mut CreateVm| s.boot_args = Some("quiet\nfoo".into())),
                "boot_args",
            ),
            (
                Box::new(|s: &mut CreateVm| {
                    s.labels.insert("a=b".into(), "c".into());
                }),
                "labels",
            ),
        ] {
            let mut s = spec("ok");
            mutate(&mut s);
            assert_eq!(s.validate().unwrap_err().field, field);
        }
        // The bounds themselves are accepted.
        let mut s = spec("ok");
        s.memory_mib = MAX_MEMORY_MIB;
        s.disk_size = Some(MAX_DISK_SIZE);
        s.boot_args = Some("a".repeat(MAX_BOOT_ARGS));
        s.labels.insert("é".repeat(63), "ü".repeat(255));
        s.validate().unwrap();
        s.disk_size = Some(SECTOR);
        s.validate().unwrap();
    }

    /// A restore names its snapshot and leaves the images out (they are the snapshot's); a
    /// boot names both images. Each mistake names its field.
    #[test]
    fn from_snapshot_replaces_the_images() {
        let restore: CreateVm =
            serde_json::from_str(r#"{"name":"b","from_snapshot":"web-ready"}"#).unwrap();
        restore.validate().unwrap();
        let both: CreateVm = serde_json::from_str(
            r#"{"name":"b","kernel":"k","rootfs":"r","from_snapshot":"web-ready"}"#,
        )
        .unwrap();
        assert_eq!(both.validate().unwrap_err().field, "kernel");
        let bad: CreateVm = serde_json::from_str(r#"{"name":"b","from_snapshot":"../x"}"#).unwrap();
        assert_eq!(bad.validate().unwrap_err().field, "from_snapshot");
        let neither: CreateVm = serde_json::from_str(r#"{"name":"b","rootfs":"r"}"#).unwrap();
        assert_eq!(neither.validate().unwrap_err().field, "kernel");
    }

    #[test]
    fn each_state_has_its_allowed_operations() {
        use VmState::*;
        for st in VmState::ALL {
            assert_eq!(st.as_str().parse::<VmState>().unwrap(), st);
            let expect_start = matches!(st, Stopped | Crashed | Failed);
            assert_eq!(st.can_start(), expect_start, "{st}");
            let expect_stop = matches!(st, Starting | Running | Unready | Paused);
            assert_eq!(st.can_stop(), expect_stop, "{st}");
            assert_eq!(
                st.can_delete(),
                !matches!(st, Creating | Stopping | Deleting),
                "{st}"
            );
            assert_eq!(st.is_alive(), expect_stop, "{st}");
            assert_eq!(st.can_pause(), matches!(st, Running | Unready), "{st}");
            assert_eq!(st.can_resume(), st == Paused, "{st}");
            assert_eq!(
                st.can_snapshot(),
                matches!(st, Running | Unready | Paused),
                "{st}"
            );
            assert_eq!(
                st.has_process(),
                matches!(st, Starting | Running | Unready | Stopping | Paused),
                "{st}"
            );
        }
        assert!("zombie".parse::<VmState>().is_err());
    }

    #[test]
    fn labels_parse_at_the_first_equals_sign() {
        assert_eq!(
            parse_label("role=web").unwrap(),
            ("role".into(), "web".into())
        );
        assert_eq!(parse_label("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_label("a=").unwrap(), ("a".into(), String::new()));
        for bad in ["=x", "=", "x", ""] {
            let e = parse_label(bad).unwrap_err();
            assert!(e.contains("is not key=value"), "{bad:?}: {e}");
        }
    }
}

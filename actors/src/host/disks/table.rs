//! Pure device-mapper arithmetic and table text for the `dm` disk backend: byte/sector
//! conversion, the size of a persistent snapshot's COW store, and the tables hearth loads
//! (`snapshot` on top of the base, or on top of a `linear` + `zero` origin when the disk grows
//! beyond the base). No I/O here; everything is unit-tested.

use std::fmt;

/// Bytes in one device-mapper sector.
pub const SECTOR: u64 = 512;

/// Snapshot chunk size in sectors (8 sectors = 4 KiB, the guest page and ext4 block size).
pub const CHUNK_SECTORS: u64 = 8;

/// Prefix of every device-mapper device hearth creates; the leak sweep looks for it.
pub const DM_PREFIX: &str = "hearth-";

/// Name of the snapshot device of `vm` (`hearth-<vm>`).
pub fn snapshot_name(vm: &str) -> String {
    format!("{DM_PREFIX}{vm}")
}

/// Name of the grown origin (`linear` + `zero`) of `vm` (`hearth-<vm>:origin`; VM names
/// cannot contain `:`, so this never collides with another VM's snapshot device).
pub fn origin_name(vm: &str) -> String {
    format!("{DM_PREFIX}{vm}{ORIGIN_SUFFIX}")
}

const ORIGIN_SUFFIX: &str = ":origin";

/// The VM a hearth device-mapper name belongs to, or `None` for devices hearth did not make.
/// `hearth-web:origin` and `hearth-web` both belong to `web`.
pub fn vm_of_dm_name(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(DM_PREFIX)?;
    let vm = rest.strip_suffix(ORIGIN_SUFFIX).unwrap_or(rest);
    (!vm.is_empty()).then_some(vm)
}

/// Whole sectors in `bytes`, or `None` when `bytes` is not a multiple of [`SECTOR`].
pub fn sectors(bytes: u64) -> Option<u64> {
    (bytes % SECTOR == 0).then_some(bytes / SECTOR)
}

/// Size of the sparse COW file for a snapshot of `disk_bytes`, large enough that the guest can
/// overwrite every chunk: one header chunk, the data chunks, and the exception-table chunks
/// (a persistent exception is 16 bytes, so one 4 KiB metadata chunk describes 256 data chunks),
/// plus one spare metadata chunk. Sparse, so only what the guest writes costs space.
pub fn cow_bytes(disk_bytes: u64) -> u64 {
    let chunk = CHUNK_SECTORS * SECTOR;
    let data_chunks = disk_bytes.div_ceil(chunk);
    let per_meta_chunk = chunk / 16;
    let meta_chunks = data_chunks.div_ceil(per_meta_chunk) + 1;
    (1 + data_chunks + meta_chunks) * chunk
}

/// One line of a device-mapper table: `start length target params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetLine {
    /// First sector this line maps.
    pub start: u64,
    /// Number of sectors it maps.
    pub length: u64,
    /// Target type (`snapshot`, `linear`, `zero`).
    pub target: String,
    /// Target parameters.
    pub params: String,
}

impl fmt::Display for TargetLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.start, self.length, self.target)?;
        if !self.params.is_empty() {
            write!(f, " {}", self.params)?;
        }
        Ok(())
    }
}

/// A block device as device-mapper tables name it (`major:minor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevNum {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// The persistent snapshot table: `0 <sectors> snapshot <origin> <cow> P 8`.
pub fn snapshot_table(origin: &str, cow: DevNum, sectors: u64) -> Vec<TargetLine> {
    vec![TargetLine {
        start: 0,
        length: sectors,
        target: "snapshot".into(),
        params: format!("{origin} {cow} P {CHUNK_SECTORS}"),
    }]
}

/// The origin of a disk grown beyond its base: the base mapped `linear` over its own sectors,
/// then `zero` up to the disk size. `disk_sectors` must exceed `base_sectors`.
pub fn grown_origin_table(base: DevNum, base_sectors: u64, disk_sectors: u64) -> Vec<TargetLine> {
    vec![
        TargetLine {
            start: 0,
            length: base_sectors,
            target: "linear".into(),
            params: format!("{base} 0"),
        },
        TargetLine {
            start: base_sectors,
            length: disk_sectors - base_sectors,
            target: "zero".into(),
            params: String::new(),
        },
    ]
}

/// Renders a table as `dmsetup table` would print it, one line per target.
pub fn table_text(lines: &[TargetLine]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: DevNum = DevNum { major: 7, minor: 3 };
    const COW: DevNum = DevNum { major: 7, minor: 4 };

    #[test]
    fn sectors_requires_whole_sectors() {
        assert_eq!(sectors(0), Some(0));
        assert_eq!(sectors(512), Some(1));
        assert_eq!(sectors(1 << 30), Some(2_097_152));
        assert_eq!(sectors(513), None);
        assert_eq!(sectors(511), None);
    }

    #[test]
    fn snapshot_table_text() {
        let t = snapshot_table(&BASE.to_string(), COW, 2_097_152);
        assert_eq!(table_text(&t), "0 2097152 snapshot 7:3 7:4 P 8\n");
    }

    #[test]
    fn grown_origin_is_linear_then_zero() {
        let t = grown_origin_table(BASE, 1000, 4096);
        assert_eq!(table_text(&t), "0 1000 linear 7:3 0\n1000 3096 zero\n");
        // The lines tile the device with no gap or overlap.
        assert_eq!(t[0].start + t[0].length, t[1].start);
        assert_eq!(t[1].start + t[1].length, 4096);
    }

    #[test]
    fn cow_covers_every_chunk_and_its_metadata() {
        // 1 MiB = 256 chunks: header + 256 data + 1 full metadata chunk + 1 spare.
        assert_eq!(cow_bytes(1 << 20), (1 + 256 + 2) * 4096);
        // A partial chunk still needs a whole chunk.
        assert_eq!(cow_bytes(1), (1 + 1 + 2) * 4096);
        // 1 GiB: 262144 data chunks need 1024 metadata chunks.
        assert_eq!(cow_bytes(1 << 30), (1 + 262_144 + 1025) * 4096);
        assert!(cow_bytes(1 << 30) > 1 << 30);
    }

    #[test]
    fn longest_vm_name_makes_valid_dm_names() {
        let vm = "x".repeat(super::super::layout::MAX_VM_NAME);
        for name in [snapshot_name(&vm), origin_name(&vm)] {
            devicemapper::DmName::new(&name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn dm_names_round_trip() {
        assert_eq!(snapshot_name("web"), "hearth-web");
        assert_eq!(origin_name("web"), "hearth-web:origin");
        assert_eq!(vm_of_dm_name("hearth-web"), Some("web"));
        assert_eq!(vm_of_dm_name("hearth-web:origin"), Some("web"));
        assert_eq!(vm_of_dm_name("hearth-web-origin"), Some("web-origin"));
        assert_eq!(vm_of_dm_name("hearth-"), None);
        assert_eq!(vm_of_dm_name("docker-123"), None);
    }
}

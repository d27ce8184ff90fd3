//! The snapshot part of `/metrics`: latency of each phase of taking and of restoring a
//! snapshot (the supervisor records them as `snapshot:<phase>` and `restore:<phase>`), and
//! the bytes each snapshot occupies.

use std::fmt::Write as _;

use hearth_actors::supervisor::SupervisorMetrics;

use super::metrics::{escape, histogram};

/// Appends the snapshot families to `out`.
pub(super) fn render(out: &mut String, m: &SupervisorMetrics) {
    for (prefix, name, help) in [
        (
            "snapshot:",
            "hearth_snapshot_phase_seconds",
            "Latency of each phase of taking a VM snapshot (firecracker: Firecracker's own \
             share of the vmm phase).",
        ),
        (
            "restore:",
            "hearth_restore_phase_seconds",
            "Latency of each phase of restoring a VM from a snapshot.",
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (phase, h) in &m.phase_seconds {
            if let Some(phase) = phase.strip_prefix(prefix) {
                histogram(out, name, "phase", phase, h);
            }
        }
    }
    out.push_str(
        "# HELP hearth_snapshot_bytes Bytes a snapshot occupies on the host, by file.\n\
         # TYPE hearth_snapshot_bytes gauge\n",
    );
    for (snapshot, disk, memory) in &m.snapshots {
        let snapshot = escape(snapshot);
        let _ = writeln!(
            out,
            "hearth_snapshot_bytes{{snapshot=\"{snapshot}\",file=\"disk\"}} {disk}"
        );
        let _ = writeln!(
            out,
            "hearth_snapshot_bytes{{snapshot=\"{snapshot}\",file=\"memory\"}} {memory}"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hearth_actors::supervisor::metrics::Histogram;

    use super::*;

    #[test]
    fn snapshot_and_restore_phases_get_their_own_families_and_sizes_are_gauges() {
        let mut h = Histogram::default();
        h.observe(Duration::from_millis(3));
        let m = SupervisorMetrics {
            phase_seconds: vec![
                ("disk", h.clone()),
                ("restore:load", h.clone()),
                ("snapshot:pause", h),
            ],
            snapshots: vec![("web-ready".into(), 4096, 1 << 20)],
            ..SupervisorMetrics::default()
        };
        let text = super::super::metrics::render(&m);
        assert!(
            text.contains("hearth_restore_phase_seconds_count{phase=\"load\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("hearth_snapshot_phase_seconds_count{phase=\"pause\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("hearth_create_phase_seconds_count{phase=\"disk\"} 1\n"),
            "{text}"
        );
        assert!(
            !text.contains("hearth_create_phase_seconds_count{phase=\"restore:load\"}"),
            "{text}"
        );
        assert!(
            text.contains(
                "hearth_snapshot_bytes{snapshot=\"web-ready\",file=\"memory\"} 1048576\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("hearth_snapshot_bytes{snapshot=\"web-ready\",file=\"disk\"} 4096\n"),
            "{text}"
        );
    }
}

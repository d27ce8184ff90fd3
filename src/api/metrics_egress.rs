//! The egress part of `/metrics`: the packets each deny-mode VM's egress policy dropped (the
//! per-guest counter of hearth's `denied` set in the `hearth-egress` table).

use std::fmt::Write as _;

use hearth_actors::supervisor::SupervisorMetrics;

use super::metrics::escape;

/// Appends the egress families to `out`.
pub(super) fn render(out: &mut String, m: &SupervisorMetrics) {
    out.push_str(
        "# HELP hearth_egress_denied_packets_total Packets a VM's deny-mode egress policy \
         dropped, by VM.\n# TYPE hearth_egress_denied_packets_total counter\n",
    );
    for (vm, n) in &m.egress_denied {
        let _ = writeln!(
            out,
            "hearth_egress_denied_packets_total{{vm=\"{}\"}} {n}",
            escape(vm)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_packets_are_a_counter_per_vm() {
        let m = SupervisorMetrics {
            egress_denied: vec![("job".into(), 12), ("a\"b".into(), 0)],
            ..SupervisorMetrics::default()
        };
        let mut out = String::new();
        render(&mut out, &m);
        assert!(
            out.contains("# TYPE hearth_egress_denied_packets_total counter\n"),
            "{out}"
        );
        assert!(
            out.contains("hearth_egress_denied_packets_total{vm=\"job\"} 12\n"),
            "{out}"
        );
        assert!(
            out.contains("hearth_egress_denied_packets_total{vm=\"a\\\"b\"} 0\n"),
            "{out}"
        );
    }
}

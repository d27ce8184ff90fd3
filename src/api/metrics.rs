//! `GET /metrics`: the supervisor's counters in the Prometheus text exposition format (0.0.4):
//! VMs by state, create-phase latency histograms, errors by operation, TAP pool occupancy, and
//! the lifecycle policies' loop passes and decisions, and packets dropped by egress policies
//! (`metrics_egress`).

use std::fmt::Write;

use actix_web::http::header;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use hearth_actors::supervisor::metrics::{Histogram, PolicyCounters, BUCKETS};
use hearth_actors::supervisor::{GetMetrics, SupervisorMetrics};
use hearth_proto::api::VmState;

use super::query::Params;
use super::{ApiError, ApiState};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value (`\`, `"` and newlines).
pub(super) fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

pub(super) fn histogram(out: &mut String, name: &str, label: &str, value: &str, h: &Histogram) {
    let value = escape(value);
    let mut cumulative = 0;
    for (bound, count) in BUCKETS.iter().zip(h.counts) {
        cumulative += count;
        let _ = writeln!(
            out,
            "{name}_bucket{{{label}=\"{value}\",le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{{label}=\"{value}\",le=\"+Inf\"}} {}",
        h.count()
    );
    let _ = writeln!(out, "{name}_sum{{{label}=\"{value}\"}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{label}=\"{value}\"}} {}", h.count());
}

/// Renders `m` as Prometheus text. Every state appears, with 0 when no VM is in it.
pub fn render(m: &SupervisorMetrics) -> String {
    let mut out = String::new();
    out.push_str("# HELP hearth_vms VMs by lifecycle state.\n# TYPE hearth_vms gauge\n");
    for state in VmState::ALL {
        let n = m
            .vms_by_state
            .iter()
            .filter(|(s, _)| *s == state)
            .map(|(_, n)| n)
            .sum::<u64>();
        let _ = writeln!(out, "hearth_vms{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP hearth_node_cordoned 1 while the host refuses new VMs.\n\
         # TYPE hearth_node_cordoned gauge\nhearth_node_cordoned {}",
        u8::from(m.cordoned)
    );
    out.push_str(
        "# HELP hearth_create_phase_seconds Latency of each phase of VM creation.\n\
         # TYPE hearth_create_phase_seconds histogram\n",
    );
    for (phase, h) in &m.phase_seconds {
        if !phase.contains(':') {
            histogram(&mut out, "hearth_create_phase_seconds", "phase", phase, h);
        }
    }
    super::metrics_snapshot::render(&mut out, m);
    super::metrics_egress::render(&mut out, m);
    out.push_str(
        "# HELP hearth_errors_total Failed supervisor operations, by operation.\n\
         # TYPE hearth_errors_total counter\n",
    );
    for (op, n) in &m.errors {
        let _ = writeln!(out, "hearth_errors_total{{op=\"{}\"}} {n}", escape(op));
    }
    if let Some(pool) = &m.pool {
        out.push_str(
            "# HELP hearth_pool_taps TAP devices in the pool, by whether they are leased.\n\
             # TYPE hearth_pool_taps gauge\n",
        );
        let _ = writeln!(
            out,
            "hearth_pool_taps{{leased=\"false\"}} {}",
            pool.free_taps
        );
        let _ = writeln!(out, "hearth_pool_taps{{leased=\"true\"}} {}", pool.leased);
        out.push_str(
            "# HELP hearth_pool_free_ips Guest addresses not leased.\n\
             # TYPE hearth_pool_free_ips gauge\n",
        );
        let _ = writeln!(out, "hearth_pool_free_ips {}", pool.free_ips);
    }
    render_policy(&mut out, &m.policy);
    out
}

/// The lifecycle policies' counters: passes of the policy loop, and decisions by kind.
fn render_policy(out: &mut String, p: &PolicyCounters) {
    let _ = writeln!(
        out,
        "# HELP hearth_policy_ticks_total Passes of the policy loop (due restarts, time limits).\n\
         # TYPE hearth_policy_ticks_total counter\nhearth_policy_ticks_total {}",
        p.ticks
    );
    out.push_str(
        "# HELP hearth_policy_decisions_total Lifecycle policy decisions, by kind.\n\
         # TYPE hearth_policy_decisions_total counter\n",
    );
    for (decision, n) in p.decisions() {
        let _ = writeln!(
            out,
            "hearth_policy_decisions_total{{decision=\"{decision}\"}} {n}"
        );
    }
}

/// `GET /metrics`.
pub async fn metrics(state: Data<ApiState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Params::parse(req.query_string(), &[])?;
    let m = state.ports.metrics.send(GetMetrics {}).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, CONTENT_TYPE))
        .body(render(&m) + &render_log_drops(crate::logging::dropped())))
}

/// The count of log records dropped because the log writer fell behind.
pub fn render_log_drops(dropped: u64) -> String {
    format!(
        "# HELP hearth_log_dropped_total Log records dropped because the log writer fell \
         behind.\n# TYPE hearth_log_dropped_total counter\nhearth_log_dropped_total {dropped}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_counts_histograms_and_errors() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let m = SupervisorMetrics {
            vms_by_state: vec![(VmState::Running, 3), (VmState::Failed, 1)],
            phase_seconds: vec![("disk", h)],
            errors: vec![("create", 2)],
            snapshots: Vec::new(),
            pool: Some(hearth_actors::supervisor::PoolOccupancy {
                free_taps: 16,
                leased: 3,
                free_ips: 250,
            }),
            cordoned: true,
            policy: PolicyCounters {
                ticks: 12,
                restarts: 3,
                give_ups: 1,
                ..PolicyCounters::default()
            },
            egress_denied: Vec::new(),
        };
        let text = render(&m);
        assert!(text.contains("hearth_vms{state=\"running\"} 3\n"), "{text}");
        assert!(text.contains("hearth_vms{state=\"failed\"} 1\n"));
        assert!(text.contains("hearth_vms{state=\"stopped\"} 0\n"));
        assert!(
            text.contains("hearth_create_phase_seconds_bucket{phase=\"disk\",le=\"0.0005\"} 1\n")
        );
        assert!(
            text.contains("hearth_create_phase_seconds_bucket{phase=\"disk\",le=\"0.005\"} 2\n")
        );
        assert!(text.contains("hearth_create_phase_seconds_bucket{phase=\"disk\",le=\"5\"} 2\n"));
        assert!(text.contains("hearth_create_phase_seconds_bucket{phase=\"disk\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("hearth_create_phase_seconds_count{phase=\"disk\"} 3\n"));
        assert!(text.contains("hearth_errors_total{op=\"create\"} 2\n"));
        assert!(
            text.contains("hearth_pool_taps{leased=\"false\"} 16\n"),
            "{text}"
        );
        assert!(text.contains("hearth_pool_taps{leased=\"true\"} 3\n"));
        assert!(text.contains("hearth_pool_free_ips 250\n"));
        assert!(text
            .contains("# TYPE hearth_policy_ticks_total counter\nhearth_policy_ticks_total 12\n"));
        assert!(text.contains("hearth_policy_decisions_total{decision=\"restart\"} 3\n"));
        assert!(text.contains("hearth_policy_decisions_total{decision=\"give_up\"} 1\n"));
        // Every kind appears, with 0 when it never happened.
        assert!(text.contains("hearth_policy_decisions_total{decision=\"expire\"} 0\n"));
        // Every sample line is `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap();
        }
    }

    #[test]
    fn log_drops_are_a_counter() {
        let text = render_log_drops(7);
        assert!(
            text.contains("# TYPE hearth_log_dropped_total counter\n"),
            "{text}"
        );
        assert!(text.ends_with("\nhearth_log_dropped_total 7\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}

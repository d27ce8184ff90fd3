//! `hearthctl node [cordon [REASON] | uncordon | drain [REASON] [--snapshot] [--no-wait]]`:
//! the host's cordon and drain; without a subcommand, its state.

use std::time::Duration;

use clap::Subcommand;
use hearth::client::{ApiPath, Client, Method};
use hearth_proto::api_policy::{CordonRequest, DrainMode, DrainRequest};
use serde_json::Value;

use crate::output::print_json;
use crate::Out;

/// How often a waiting drain asks for its progress.
const POLL: Duration = Duration::from_millis(500);

/// The `node` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum NodeCmd {
    /// Refuse new VMs (kept across restarts of hearthd).
    Cordon {
        /// Why (shown to whoever is refused).
        reason: Option<String>,
    },
    /// Take new VMs again.
    Uncordon,
    /// Cordon, then stop every running VM; prints the progress until done.
    Drain {
        /// Why.
        reason: Option<String>,
        /// Snapshot each running VM (as `<vm>-drained-<ms>`) before stopping it; a VM whose
        /// snapshot fails is stopped all the same.
        #[arg(long, conflicts_with = "stop")]
        snapshot: bool,
        /// Only stop each running VM (the default).
        #[arg(long)]
        stop: bool,
        /// Return once the drain has started (`hearthctl node` shows its progress).
        #[arg(long)]
        no_wait: bool,
    },
}

/// Runs `node` (`None`: show the state).
pub(crate) fn run(c: &Client, json: bool, cmd: Option<NodeCmd>) -> Out {
    let node: Value = match cmd {
        None => c.get(ApiPath::new("/v1/node"))?,
        Some(NodeCmd::Cordon { reason }) => c.send_json(
            Method::POST,
            ApiPath::new("/v1/node/cordon"),
            &[],
            &CordonRequest { reason },
        )?,
        Some(NodeCmd::Uncordon) => c.send_json(
            Method::POST,
            ApiPath::new("/v1/node/uncordon"),
            &[],
            &serde_json::json!({}),
        )?,
        Some(NodeCmd::Drain {
            reason,
            snapshot,
            stop: _,
            no_wait,
        }) => {
            let mode = if snapshot {
                DrainMode::Snapshot
            } else {
                DrainMode::Stop
            };
            let started: Value = c.send_json(
                Method::POST,
                ApiPath::new("/v1/node/drain").query("wait", false),
                &[],
                &DrainRequest {
                    reason,
                    mode: Some(mode),
                },
            )?;
            if no_wait {
                started
            } else {
                wait_for_drain(c, json, started)?
            }
        }
    };
    if json {
        print_json(&node);
        return Ok(());
    }
    print_node(&node);
    Ok(())
}

/// Polls `GET /v1/node` until the drain is done, printing each change of its progress
/// (unless the output is JSON); answers the final state.
fn wait_for_drain(c: &Client, json: bool, mut node: Value) -> Result<Value, crate::Failure> {
    let mut shown = None;
    loop {
        let d = &node["drain"];
        if !d.is_object() || d["done"] == true {
            return Ok(node);
        }
        let now = (d["stopped"].clone(), d["failed"].clone());
        if !json && shown.as_ref() != Some(&now) {
            println!(
                "draining: {} of {} stopped, {} failed",
                d["stopped"],
                d["total"],
                d["failed"].as_array().map_or(0, Vec::len)
            );
            shown = Some(now);
        }
        std::thread::sleep(POLL);
        node = c.get(ApiPath::new("/v1/node"))?;
    }
}

fn print_node(node: &Value) {
    match node["reason"].as_str() {
        Some(reason) if node["cordoned"] == true => println!("cordoned: {reason}"),
        _ => println!("schedulable"),
    }
    if let Some(ticks) = node["policy_ticks"].as_u64() {
        println!("policy loop: {ticks} passes");
    }
    for line in jailing_lines(node) {
        println!("{line}");
    }
    let d = &node["drain"];
    if d.is_object() {
        let state = if d["done"] == true { "done" } else { "running" };
        println!(
            "drain ({}) {state}: {} of {} stopped",
            d["mode"].as_str().unwrap_or("stop"),
            d["stopped"],
            d["total"]
        );
        for s in d["snapshots"].as_array().into_iter().flatten() {
            println!(
                "  {} snapshotted as {}",
                s[0].as_str().unwrap_or("?"),
                s[1].as_str().unwrap_or("?")
            );
        }
        for f in d["failed"].as_array().into_iter().flatten() {
            println!(
                "  {} failed: {}",
                f[0].as_str().unwrap_or("?"),
                f[1].as_str().unwrap_or("?")
            );
        }
    }
}

/// Whether VMMs run jailed, and why not (nothing from a server that does not say).
fn jailing_lines(node: &Value) -> Vec<String> {
    match node["jailed"].as_bool() {
        Some(true) => vec!["VMMs: jailed".into()],
        Some(false) => std::iter::once("VMMs: unjailed (as root, less isolated)".to_owned())
            .chain(
                node["unjailed_reasons"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|r| format!("  because {r}")),
            )
            .collect(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::jailing_lines;
    use serde_json::json;

    #[test]
    fn jailing_is_printed_with_its_reasons() {
        assert_eq!(jailing_lines(&json!({"jailed": true})), ["VMMs: jailed"]);
        assert_eq!(
            jailing_lines(&json!({"jailed": false, "unjailed_reasons": ["a: b", "c: d"]})),
            [
                "VMMs: unjailed (as root, less isolated)",
                "  because a: b",
                "  because c: d"
            ]
        );
        assert!(jailing_lines(&json!({"cordoned": false})).is_empty());
    }
}

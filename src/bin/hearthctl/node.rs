//! `hearthctl node [cordon [REASON] | uncordon | drain [REASON]]`: the host's cordon and
//! drain; without a subcommand, its state.

use clap::Subcommand;
use hearth::client::{ApiPath, Client, Method};
use hearth_proto::api_policy::CordonRequest;
use serde_json::Value;

use crate::output::print_json;
use crate::Out;

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
    /// Cordon, then stop every running VM; prints the outcome.
    Drain {
        /// Why.
        reason: Option<String>,
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
        Some(NodeCmd::Drain { reason }) => c.send_json(
            Method::POST,
            ApiPath::new("/v1/node/drain"),
            &[],
            &CordonRequest { reason },
        )?,
    };
    if json {
        print_json(&node);
        return Ok(());
    }
    match node["reason"].as_str() {
        Some(reason) if node["cordoned"] == true => println!("cordoned: {reason}"),
        _ => println!("schedulable"),
    }
    let d = &node["drain"];
    if d.is_object() {
        let state = if d["done"] == true { "done" } else { "running" };
        println!("drain {state}: {} of {} stopped", d["stopped"], d["total"]);
        for f in d["failed"].as_array().into_iter().flatten() {
            println!(
                "  {} failed: {}",
                f[0].as_str().unwrap_or("?"),
                f[1].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

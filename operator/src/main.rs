//! `hearth-operator`: `crd` prints the CRD, `controller` runs the cluster-wide controller,
//! `node --node NAME` runs the agent next to one node's hearthd.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use slog::Drain;
use tokio::signal::unix::{signal, SignalKind};

use hearth_operator::controller::Controller;
use hearth_operator::hearthd::Hearthd;
use hearth_operator::node::NodeAgent;

/// MicroVMs as Kubernetes objects, run by each node's hearthd.
#[derive(Debug, Parser)]
#[command(name = "hearth-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the `MicroVM` custom resource definition as YAML.
    Crd,
    /// Run the controller: one placeholder Pod per MicroVM, placed by kube-scheduler.
    Controller {
        /// Memory (MiB) each placeholder requests beyond the guest's, for the VMM itself.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=65_536))]
        vmm_overhead_mib: u32,
        /// Seconds between full passes when nothing changes.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        resync_secs: u64,
    },
    /// Run the node agent: the MicroVMs bound to this node, through its hearthd.
    Node {
        /// This node's name (the Pod's `spec.nodeName`, from the downward API).
        #[arg(long, env = "NODE_NAME")]
        node: String,
        /// hearthd's API socket.
        #[arg(long, default_value = "/run/hearth/hearthd.sock")]
        socket: PathBuf,
        /// Seconds between full passes when nothing changes (catches hearthd-side changes).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
        resync_secs: u64,
    },
}

fn logger() -> slog::Logger {
    let decorator = slog_term::TermDecorator::new().stderr().build();
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    let drain = slog_async::Async::new(drain).build().fuse();
    slog::Logger::root(drain, slog::o!())
}

/// Runs `f` until it ends or SIGTERM/SIGINT arrives. Stopping mid-pass is safe: every pass
/// starts from what both sides hold, and hearthd requests carry idempotency keys.
async fn until_terminated(f: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        r = f => r,
        _ = term.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!(
                "{}",
                hearth_operator::crd::crd_yaml().context("rendering the CRD")?
            );
            Ok(())
        }
        Command::Controller {
            vmm_overhead_mib,
            resync_secs,
        } => {
            let client = kube::Client::try_default()
                .await
                .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
            let run = Controller::new(client, vmm_overhead_mib, logger())
                .run(Duration::from_secs(resync_secs));
            until_terminated(Box::pin(async { run.await.context("controller") })).await
        }
        Command::Node {
            node,
            socket,
            resync_secs,
        } => {
            // A node name is a DNS subdomain; anything else could add terms to the field
            // selector it goes into.
            let valid = !node.is_empty()
                && node.len() <= 253
                && node.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            anyhow::ensure!(
                valid,
                "--node {node:?} is not a node name (1-253 of a-z, 0-9, '-', '.')"
            );
            let client = kube::Client::try_default()
                .await
                .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
            let log = logger();
            let log = log.new(slog::o!("node" => node.clone()));
            let run = NodeAgent::new(client, Hearthd::new(socket), node, log)
                .run(Duration::from_secs(resync_secs));
            until_terminated(Box::pin(async { run.await.context("node agent") })).await
        }
    }
}

//! hearthctl: the hearth CLI. Talks to hearthd over its Unix socket (`--socket`, env
//! `HEARTH_SOCKET`, default `/run/hearth/hearthd.sock`); prints tables, or the API's JSON with
//! `--json`.
//!
//! One file per command group ([`vm`], [`image`], [`snapshot`], [`events`]); each holds its subcommand
//! enum and one function per subcommand, so adding a subcommand is a variant and a function in
//! its group's file. [`output`] formats tables, sizes and times.
//!
//! Exit codes: 0 success; 1 hearthd answered with an error; 2 bad usage or input;
//! 3 hearthd is not reachable (not running, or no permission on the socket);
//! 4 the connection failed mid-request or the answer was malformed.

mod events;
mod image;
mod image_show;
mod node;
mod output;
mod pull;
mod snapshot;
mod vm;
mod vm_egress;
mod vm_ports;
mod vm_update;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hearth::client::{ApiPath, Client, ClientError};
use hearth_proto::api_health::Health;

use output::print_json;

/// The hearth CLI: manage microVMs and images through hearthd.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Exit codes: 0 ok, 1 API error, 2 usage, \
    3 hearthd not reachable, 4 connection failed mid-request"
)]
struct Cli {
    /// hearthd's control socket.
    #[arg(
        long,
        global = true,
        env = "HEARTH_SOCKET",
        default_value = "/run/hearth/hearthd.sock"
    )]
    socket: PathBuf,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Kernels and root filesystems.
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// MicroVMs.
    #[command(subcommand)]
    Vm(vm::VmCmd),
    /// VM snapshots (take one with `vm snapshot`, restore with `vm create --from-snapshot`).
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCmd),
    /// Lifecycle events.
    Events {
        /// Keep printing new events as they happen.
        #[arg(long, short)]
        follow: bool,
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
    /// Whether hearthd is up.
    Health,
    /// The host: its state, or cordon, uncordon, drain.
    Node {
        #[command(subcommand)]
        cmd: Option<node::NodeCmd>,
    },
}

/// A failure and the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::Api { .. } => 1,
            e if e.is_unreachable() => 3,
            _ => 4,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

/// A usage or input failure (exit code 2).
fn usage(message: String) -> Failure {
    Failure { code: 2, message }
}

/// What every command returns.
type Out = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = Client::new(&cli.socket);
    match run(&client, cli.json, cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let _ = std::io::stdout().flush();
            eprintln!("hearthctl: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn run(c: &Client, json: bool, command: Command) -> Out {
    match command {
        Command::Image(cmd) => image::run(c, json, cmd),
        Command::Vm(cmd) => vm::run(c, json, cmd),
        Command::Snapshot(cmd) => snapshot::run(c, json, cmd),
        Command::Events { follow, since } => events::run(c, json, follow, since),
        Command::Health => health(c, json),
        Command::Node { cmd } => node::run(c, json, cmd),
    }
}

/// `hearthctl health`.
fn health(c: &Client, json: bool) -> Out {
    let h: Health = c.get(ApiPath::new("/v1/health"))?;
    if json {
        print_json(&h);
    } else {
        println!("hearthd {} is {} ({} VMs)", h.version, h.status, h.vms);
        if let Some(reason) = h.cordon_reason.filter(|_| h.cordoned) {
            println!("cordoned: {reason}");
        }
    }
    Ok(())
}

//! `hearthctl snapshot list|get|rm`, and the snapshot side of `vm`: `vm snapshot` and
//! `vm fork` (`vm create --from-snapshot` is `vm create`'s).

use clap::{Args, Subcommand};
use hearth::client::{ApiPath, Client, Method};
use hearth_proto::api::VmInfo;
use hearth_proto::api_snapshot::{ForkVm, SnapshotCreate, SnapshotInfo, SnapshotLeave};

use crate::output::{human_size, print_json, table, utc};
use crate::{usage, Out};

/// The `snapshot` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotCmd {
    /// List snapshots.
    #[command(alias = "ls")]
    List,
    /// Show one snapshot.
    Get {
        /// The snapshot.
        name: String,
    },
    /// Remove a snapshot (refused while VMs restored from it exist).
    #[command(alias = "delete")]
    Rm {
        /// The snapshot.
        name: String,
    },
}

/// The arguments of `vm snapshot`.
#[derive(Debug, Args)]
pub(crate) struct SnapshotArgs {
    /// The VM.
    vm: String,
    /// The snapshot's name (a DNS label).
    #[arg(long)]
    name: String,
    /// What to leave the VM in afterwards: paused, running or stopped.
    #[arg(long, default_value = "running", value_parser = parse_leave)]
    leave: SnapshotLeave,
    /// Makes a retried snapshot answer the first one (sent as `Idempotency-Key`).
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// The `Idempotency-Key` header for `key`, if given.
fn key_header(key: Option<&str>) -> Vec<(&str, &str)> {
    key.map(|k| ("Idempotency-Key", k)).into_iter().collect()
}

fn parse_leave(s: &str) -> Result<SnapshotLeave, String> {
    s.parse()
}

/// Runs one `snapshot` subcommand.
pub(crate) fn run(c: &Client, json: bool, cmd: SnapshotCmd) -> Out {
    match cmd {
        SnapshotCmd::List => list(c, json),
        SnapshotCmd::Get { name } => {
            let s: SnapshotInfo = c.get(ApiPath::new("/v1/snapshots").segment(&name))?;
            show(json, &s);
            Ok(())
        }
        SnapshotCmd::Rm { name } => {
            c.request(
                Method::DELETE,
                ApiPath::new("/v1/snapshots").segment(&name),
                &[],
                None,
            )?
            .ok()?;
            if !json {
                println!("Deleted snapshot {name}");
            }
            Ok(())
        }
    }
}

/// `hearthctl vm snapshot VM --name NAME [--leave paused|running|stopped]`.
pub(crate) fn create(c: &Client, json: bool, args: SnapshotArgs) -> Out {
    let body = SnapshotCreate {
        name: args.name,
        leave: args.leave,
    };
    body.validate().map_err(|e| usage(e.to_string()))?;
    let s: SnapshotInfo = c.send_json(
        Method::POST,
        ApiPath::new("/v1/vms")
            .segment(&args.vm)
            .segment("snapshots"),
        &key_header(args.idempotency_key.as_deref()),
        &body,
    )?;
    show(json, &s);
    Ok(())
}

/// `hearthctl vm fork VM NEW [--idempotency-key KEY]`: answers the new VM.
pub(crate) fn fork(
    c: &Client,
    vm: &str,
    new_name: &str,
    idempotency_key: Option<&str>,
) -> Result<VmInfo, crate::Failure> {
    let body = ForkVm {
        name: new_name.to_owned(),
    };
    body.validate().map_err(|e| usage(e.to_string()))?;
    Ok(c.send_json(
        Method::POST,
        ApiPath::new("/v1/vms").segment(vm).segment("fork"),
        &key_header(idempotency_key),
        &body,
    )?)
}

fn list(c: &Client, json: bool) -> Out {
    let all: Vec<SnapshotInfo> = c.get(ApiPath::new("/v1/snapshots"))?;
    if json {
        print_json(&all);
        return Ok(());
    }
    table(
        &[
            "NAME",
            "STATE",
            "SOURCE",
            "CREATED",
            "MEMORY",
            "ON DISK",
            "IN USE BY",
        ],
        all.iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.state.to_string(),
                    s.source_vm.clone(),
                    utc(s.created_at),
                    format!("{} MiB", s.mem_size_mib),
                    human_size(s.disk_bytes + s.mem_file_bytes),
                    if s.in_use_by.is_empty() {
                        "-".into()
                    } else {
                        s.in_use_by.join(",")
                    },
                ]
            })
            .collect(),
    );
    Ok(())
}

fn show(json: bool, s: &SnapshotInfo) {
    if json {
        print_json(s);
        return;
    }
    let rows = [
        ("name", s.name.clone()),
        ("state", s.state.to_string()),
        ("source vm", s.source_vm.clone()),
        ("created", utc(s.created_at)),
        ("vcpus", s.vcpus.to_string()),
        ("memory", format!("{} MiB", s.mem_size_mib)),
        ("firecracker", s.fc_version.clone()),
        ("disk bytes", human_size(s.disk_bytes)),
        ("memory bytes", human_size(s.mem_file_bytes)),
        (
            "in use by",
            if s.in_use_by.is_empty() {
                "-".into()
            } else {
                s.in_use_by.join(", ")
            },
        ),
    ];
    for (k, v) in rows {
        println!("{:<14} {v}", format!("{k}:"));
    }
}

//! `hearthctl vm ...`: microVMs. [`VmCmd`] lists the subcommands and [`run`] sends each to its
//! own function; a new subcommand is a variant and a function (or, when it brings much code of
//! its own, a file beside this one holding its arguments and its function).

use clap::{Args, Subcommand, ValueEnum};
use hearth::client::{cli, ApiPath, Client, Method};
use hearth_proto::api::{parse_label, CreateVm, SetNat, VmInfo, VmState};
use hearth_proto::api_policy::{OnExpiry, RestartPolicy};
use hearth_proto::image_config::InitMode;

use crate::output::{labels, on_off, print_json, table};
use crate::{usage, Out};

/// The `vm` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum VmCmd {
    /// Create and boot a VM.
    Create(CreateArgs),
    /// List VMs.
    #[command(alias = "ls")]
    List {
        /// Only VMs carrying this label `key=value`.
        #[arg(long, value_parser = parse_label)]
        label: Option<(String, String)>,
    },
    /// Show one VM.
    Get {
        /// The VM.
        name: String,
    },
    /// Start a stopped, crashed or failed VM.
    Start {
        /// The VM.
        name: String,
    },
    /// Stop a VM (Ctrl+Alt+Del, then SIGTERM, then SIGKILL).
    Stop {
        /// The VM.
        name: String,
    },
    /// Kill a VM's VMM at once.
    Kill {
        /// The VM.
        name: String,
    },
    /// Stop (if running), then start.
    Restart {
        /// The VM.
        name: String,
    },
    /// Pause a running VM's vCPUs.
    Pause {
        /// The VM.
        name: String,
    },
    /// Resume a paused VM.
    Resume {
        /// The VM.
        name: String,
    },
    /// Snapshot a running or paused VM (memory, VMM state and root disk).
    Snapshot(crate::snapshot::SnapshotArgs),
    /// Snapshot a running VM and restore it as a new VM; the source keeps running.
    Fork {
        /// The VM to fork.
        name: String,
        /// The new VM's name.
        new_name: String,
        /// Makes a retried fork answer the first new VM (sent as `Idempotency-Key`).
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Delete a VM and everything it holds.
    #[command(alias = "delete")]
    Rm {
        /// The VM.
        name: String,
    },
    /// Change a VM's restart policy, time limit or labels.
    Update(crate::vm_update::UpdateArgs),
    /// Switch a VM's outbound NAT.
    Nat {
        /// The VM.
        name: String,
        /// On or off.
        #[arg(value_enum)]
        state: OnOff,
    },
    /// List a VM's published ports.
    Port {
        /// The VM.
        name: String,
    },
    /// Publish a guest port on the host: `[HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|udp]`.
    Publish {
        /// The VM.
        name: String,
        /// The port, e.g. `8443:443` or `127.0.0.1:5353:53/udp`.
        #[arg(value_parser = crate::vm_ports::parse_mapping)]
        mapping: hearth_proto::api_publish::PortMapping,
    },
    /// Withdraw a published port.
    Unpublish {
        /// The VM.
        name: String,
        /// The port, as published.
        #[arg(value_parser = crate::vm_ports::parse_mapping)]
        mapping: hearth_proto::api_publish::PortMapping,
    },
    /// Show a VM's egress policy, or replace it with the flags given (running or not).
    Egress {
        /// The VM.
        name: String,
        #[command(flatten)]
        args: crate::vm_egress::EgressArgs,
    },
    /// Wait until a VM is in a state.
    Wait {
        /// The VM.
        name: String,
        /// The state to wait for.
        #[arg(long, value_parser = parse_state)]
        state: VmState,
        /// How long to wait (500ms, 30s, 2m; at most 10m).
        #[arg(long, default_value = "30s")]
        timeout: String,
    },
    /// Run a command in a VM (NAME -- CMD...), or list, attach to and signal its sessions.
    Exec(hearth::client::cli::ExecArgs),
    /// Copy files between this host and a VM (one side NAME:PATH).
    Cp(hearth::client::cli::CpArgs),
}

/// The arguments of `vm create`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The VM's name (a DNS label).
    name: String,
    /// Kernel image (not with --from-snapshot).
    #[arg(long, required_unless_present = "from_snapshot")]
    kernel: Option<String>,
    /// Root filesystem image, or `--image` for one built from an OCI image (not with
    /// --from-snapshot).
    #[arg(long, alias = "image", required_unless_present = "from_snapshot")]
    rootfs: Option<String>,
    /// Restore this snapshot as the new VM (its machine is the snapshot's).
    #[arg(long, conflicts_with_all = ["kernel", "rootfs", "init"])]
    from_snapshot: Option<String>,
    /// Which init the guest boots, for an image built from an OCI image: `hearth` (its
    /// command under hearth's init) or `image` (its own init). Default: what it was built for.
    #[arg(long, value_parser = parse_init)]
    init: Option<InitMode>,
    /// vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// Memory, MiB.
    #[arg(long, default_value_t = 128)]
    memory: u32,
    /// Give the guest outbound access through NAT.
    #[arg(long)]
    nat: bool,
    /// Publish a guest port on the host: `[HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|udp]`
    /// (repeatable).
    #[arg(long = "publish", value_parser = crate::vm_ports::parse_mapping)]
    publish: Vec<hearth_proto::api_publish::PortMapping>,
    #[command(flatten)]
    egress: crate::vm_egress::EgressArgs,
    /// Call the VM running without waiting for its agent.
    #[arg(long)]
    no_ready_probe: bool,
    /// A label `key=value` (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Extra kernel command-line arguments.
    #[arg(long)]
    boot_args: Option<String>,
    /// Restart policy: no (default), on-failure, on-failure:N, always.
    #[arg(long, default_value = "no")]
    restart: RestartPolicy,
    /// Time limit from now (`30m`, `1h30m`); `vm get` shows the time left.
    #[arg(long)]
    ttl: Option<String>,
    /// What happens at the time limit: stop (default), delete, or snapshot then stop.
    #[arg(long, value_enum, default_value = "stop")]
    on_expiry: ExpiryArg,
    /// Makes a retried create a no-op (sent as `Idempotency-Key`).
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// `--on-expiry`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ExpiryArg {
    Stop,
    Delete,
    /// Snapshot (as `<vm>-expired-<deadline ms>`), then stop.
    Snapshot,
}

impl From<ExpiryArg> for OnExpiry {
    fn from(a: ExpiryArg) -> Self {
        match a {
            ExpiryArg::Stop => OnExpiry::Stop,
            ExpiryArg::Delete => OnExpiry::Delete,
            ExpiryArg::Snapshot => OnExpiry::Snapshot,
        }
    }
}

/// `on` or `off`, for `vm nat`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum OnOff {
    On,
    Off,
}

fn parse_init(s: &str) -> Result<InitMode, String> {
    s.parse()
}

fn parse_state(s: &str) -> Result<VmState, String> {
    s.parse()
}

/// Runs one `vm` subcommand.
pub(crate) fn run(c: &Client, json: bool, cmd: VmCmd) -> Out {
    match cmd {
        // These end the process with their own codes (a remote command's exit code); their
        // terminal and connections are released before they return.
        VmCmd::Exec(a) => std::process::exit(cli::exec(c, json, a).into()),
        VmCmd::Cp(a) => std::process::exit(cli::cp(c, json, &a).into()),
        VmCmd::Create(args) => create(c, json, args),
        VmCmd::List { label } => list(c, json, label),
        VmCmd::Get { name } => get(c, json, &name),
        VmCmd::Start { name } => action(c, json, &name, "start"),
        VmCmd::Stop { name } => action(c, json, &name, "stop"),
        VmCmd::Kill { name } => action(c, json, &name, "kill"),
        VmCmd::Restart { name } => action(c, json, &name, "restart"),
        VmCmd::Pause { name } => action(c, json, &name, "pause"),
        VmCmd::Resume { name } => action(c, json, &name, "resume"),
        VmCmd::Snapshot(args) => crate::snapshot::create(c, json, args),
        VmCmd::Fork {
            name,
            new_name,
            idempotency_key,
        } => {
            let vm = crate::snapshot::fork(c, &name, &new_name, idempotency_key.as_deref())?;
            show_vm(json, &vm);
            Ok(())
        }
        VmCmd::Rm { name } => remove(c, json, &name),
        VmCmd::Nat { name, state } => nat(c, json, &name, state),
        VmCmd::Port { name } => crate::vm_ports::list(c, json, &name),
        VmCmd::Publish { name, mapping } => crate::vm_ports::change(c, json, &name, mapping, true),
        VmCmd::Unpublish { name, mapping } => {
            crate::vm_ports::change(c, json, &name, mapping, false)
        }
        VmCmd::Update(args) => crate::vm_update::update(c, json, args),
        VmCmd::Egress { name, args } => crate::vm_egress::run(c, json, &name, &args),
        VmCmd::Wait {
            name,
            state,
            timeout,
        } => wait(c, json, &name, state, &timeout),
    }
}

/// `hearthctl vm create`: checks the spec here first (bad input is exit 2, nothing sent).
fn create(c: &Client, json: bool, args: CreateArgs) -> Out {
    let spec = CreateVm {
        name: args.name,
        kernel: args.kernel.unwrap_or_default(),
        rootfs: args.rootfs.unwrap_or_default(),
        vcpus: args.vcpus,
        memory_mib: args.memory,
        disk_size: None,
        boot_args: args.boot_args,
        init: args.init,
        nat: args.nat,
        ready_probe: !args.no_ready_probe,
        labels: args.labels.into_iter().collect(),
        from_snapshot: args.from_snapshot,
        restart: args.restart,
        ttl: args.ttl,
        on_expiry: args.on_expiry.into(),
        publish: args.publish,
        egress: args.egress.for_create(),
    };
    spec.validate().map_err(|e| usage(e.to_string()))?;
    let headers: Vec<(&str, &str)> = args
        .idempotency_key
        .as_deref()
        .map(|k| ("Idempotency-Key", k))
        .into_iter()
        .collect();
    let vm: VmInfo = c.send_json(Method::POST, ApiPath::new("/v1/vms"), &headers, &spec)?;
    show_vm(json, &vm);
    Ok(())
}

/// `hearthctl vm list [--label k=v]`.
fn list(c: &Client, json: bool, label: Option<(String, String)>) -> Out {
    let path = match label {
        Some((k, v)) => ApiPath::new("/v1/vms").query("label", format!("{k}={v}")),
        None => ApiPath::new("/v1/vms"),
    };
    let vms: Vec<VmInfo> = c.get(path)?;
    if json {
        print_json(&vms);
        return Ok(());
    }
    table(
        &[
            "NAME", "STATE", "IP", "NAT", "VCPUS", "MEMORY", "PID", "LABELS",
        ],
        vms.iter()
            .map(|vm| {
                vec![
                    vm.name.clone(),
                    vm.state.to_string(),
                    vm.guest_ip.map_or("-".into(), |i| i.to_string()),
                    on_off(vm.nat).into(),
                    vm.spec.vcpus.to_string(),
                    format!("{} MiB", vm.spec.memory_mib),
                    vm.pid.map_or("-".into(), |p| p.to_string()),
                    labels(&vm.spec.labels),
                ]
            })
            .collect(),
    );
    Ok(())
}

/// `hearthctl vm get NAME`.
fn get(c: &Client, json: bool, name: &str) -> Out {
    let vm: VmInfo = c.get(ApiPath::new("/v1/vms").segment(name))?;
    show_vm(json, &vm);
    Ok(())
}

/// `hearthctl vm start|stop|kill|restart|pause|resume NAME`: `POST /v1/vms/NAME/VERB`.
fn action(c: &Client, json: bool, name: &str, verb: &str) -> Out {
    let vm: VmInfo = c
        .request(
            Method::POST,
            ApiPath::new("/v1/vms").segment(name).segment(verb),
            &[],
            None,
        )?
        .ok()?
        .json()?;
    show_state(json, &vm);
    Ok(())
}

/// `hearthctl vm rm NAME`.
fn remove(c: &Client, json: bool, name: &str) -> Out {
    c.request(
        Method::DELETE,
        ApiPath::new("/v1/vms").segment(name),
        &[],
        None,
    )?
    .ok()?;
    if !json {
        println!("Deleted {name}");
    }
    Ok(())
}

/// `hearthctl vm nat NAME on|off`.
fn nat(c: &Client, json: bool, name: &str, state: OnOff) -> Out {
    let enabled = matches!(state, OnOff::On);
    let vm: VmInfo = c.send_json(
        Method::PUT,
        ApiPath::new("/v1/vms").segment(name).segment("nat"),
        &[],
        &SetNat { enabled },
    )?;
    if json {
        print_json(&vm);
    } else {
        println!("{}: NAT {}", vm.name, on_off(vm.nat));
    }
    Ok(())
}

/// `hearthctl vm wait NAME --state STATE [--timeout T]`.
fn wait(c: &Client, json: bool, name: &str, state: VmState, timeout: &str) -> Out {
    let vm: VmInfo = c.get(
        ApiPath::new("/v1/vms")
            .segment(name)
            .segment("wait")
            .query("state", state)
            .query("timeout", timeout),
    )?;
    show_state(json, &vm);
    Ok(())
}

/// A VM as JSON, or `name: state`.
fn show_state(json: bool, vm: &VmInfo) {
    if json {
        print_json(vm);
    } else {
        println!("{}: {}", vm.name, vm.state);
    }
}

/// A VM as JSON, or one `key: value` line per field it has.
/// The restart policy with its attempts and a pending restart, e.g.
/// `on-failure:3, 2 attempts, next in 4s`.
fn restart_line(vm: &VmInfo) -> String {
    let mut line = vm.spec.restart.to_string();
    if vm.restart_attempts > 0 {
        line.push_str(&format!(", {} attempts", vm.restart_attempts));
    }
    if let Some(secs) = vm.restart_in_secs {
        line.push_str(&format!(", next in {secs}s"));
    }
    line
}

pub(crate) fn show_vm(json: bool, vm: &VmInfo) {
    if json {
        print_json(vm);
        return;
    }
    let s = &vm.spec;
    let mut rows = vec![
        ("name", vm.name.clone()),
        ("state", vm.state.to_string()),
        ("kernel", s.kernel.clone()),
        ("rootfs", s.rootfs.clone()),
        ("vcpus", s.vcpus.to_string()),
        ("memory", format!("{} MiB", s.memory_mib)),
        ("nat", on_off(vm.nat).into()),
        ("ready probe", on_off(s.ready_probe).into()),
    ];
    if let Some(ip) = vm.guest_ip {
        rows.push(("guest ip", ip.to_string()));
    }
    if let Some(tap) = &vm.tap {
        rows.push(("tap", tap.clone()));
    }
    if let Some(pid) = vm.pid {
        rows.push(("pid", pid.to_string()));
    }
    if !s.labels.is_empty() {
        rows.push(("labels", labels(&s.labels)));
    }
    if let Some(snapshot) = &s.from_snapshot {
        rows.push(("snapshot", snapshot.clone()));
    }
    if let Some(e) = &vm.last_error {
        rows.push(("last error", e.clone()));
    }
    if let Some(x) = vm.exit_status {
        rows.push(("exit status", x.to_string()));
    }
    rows.push(("restart", restart_line(vm)));
    if let Some(left) = vm.time_left_secs {
        let on = match s.on_expiry {
            OnExpiry::Stop => "stop",
            OnExpiry::Delete => "delete",
            OnExpiry::Snapshot => "snapshot, stop",
        };
        let left = format!("{}h{:02}m{:02}s", left / 3600, left / 60 % 60, left % 60);
        rows.push(("time left", format!("{left} (then {on})")));
    }
    if let Some(snap) = &vm.parked_snapshot {
        rows.push((
            "parked as",
            format!("{snap} (vm create --from-snapshot {snap})"),
        ));
    }
    for (k, v) in rows {
        println!("{:<12} {v}", format!("{k}:"));
    }
}

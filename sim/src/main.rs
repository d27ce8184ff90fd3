//! `firecracker-sim`: a stand-in for the `firecracker` binary with the same command line, HTTP
//! API, validation and error texts, TAP and vsock handling, and a simulated guest. See
//! `docs/sim.md` for what it follows and what it does not simulate.

use std::process::ExitCode;
use std::sync::mpsc;
use std::{env, fs, io::Write, process, thread};

use firecracker_sim::api::Action;
use firecracker_sim::cli::{self, Args};
use firecracker_sim::knobs::Knobs;
use firecracker_sim::server::{self, VmmRequest};
use firecracker_sim::vmm::{Vmm, VmmOptions, SIM_VERSION};
use hearth_proto::firecracker::{ActionType, InstanceActionInfo, LogLevel, Metrics, VmConfigFile};

/// Firecracker's `FcExitCode::ArgParsing`.
const EXIT_ARG_PARSING: u8 = 153;
/// Firecracker's `FcExitCode::BadConfiguration`.
const EXIT_BAD_CONFIGURATION: u8 = 152;
/// Firecracker's `FcExitCode::GenericError`.
const EXIT_GENERIC: u8 = 1;

fn fail(vmm: Option<&mut Vmm>, log_msg: &str, debug: &str, code: u8) -> ExitCode {
    match vmm {
        Some(v) => {
            v.log.write(LogLevel::Error, "main", log_msg);
            v.log.write(
                LogLevel::Error,
                "main",
                &format!("Firecracker exiting with error. exit_code={code}"),
            );
        }
        None => println!("{log_msg}"),
    }
    eprintln!("Error: {debug}");
    ExitCode::from(code)
}

/// Firecracker panics (and, built with `panic = "abort"`, aborts) on these.
fn abort(msg: &str) -> ! {
    eprintln!("thread 'main' panicked at src/firecracker/src/main.rs:\n{msg}");
    process::abort()
}

fn main() -> ExitCode {
    let argv: Vec<String> = env::args().skip(1).collect();
    let args = match cli::parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            return fail(
                None,
                &format!("Arguments parsing error: {e} \n\nFor more information try --help."),
                &format!("ParseArguments({e:?})"),
                EXIT_ARG_PARSING,
            )
        }
    };
    if args.help {
        println!("Firecracker v{SIM_VERSION}\n");
        println!("(firecracker-sim) accepts Firecracker's flags; see docs/sim.md");
        return ExitCode::SUCCESS;
    }
    if args.version {
        println!("Firecracker v{SIM_VERSION}\n");
        return ExitCode::SUCCESS;
    }
    if args.snapshot_version {
        eprintln!("firecracker-sim does not simulate snapshots");
        return ExitCode::from(EXIT_GENERIC);
    }
    if let Err(e) = cli::validate_instance_id(&args.id) {
        abort(&format!("Invalid instance ID: {e:?}"));
    }
    let knobs = match Knobs::from_env() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("firecracker-sim: {e}");
            return ExitCode::from(EXIT_BAD_CONFIGURATION);
        }
    };
    run(args, knobs)
}

fn run(args: Args, knobs: Knobs) -> ExitCode {
    let mut vmm = Vmm::new(
        VmmOptions {
            id: args.id.clone(),
            api_sock: args.api_sock.clone(),
            boot_timer: args.boot_timer,
            enable_pci: args.enable_pci,
        },
        knobs.clone(),
    );
    let level = match args.level.as_deref().map(|l| (l, LogLevel::parse(l))) {
        None => None,
        Some((_, Some(l))) => Some(l),
        Some((raw, None)) => {
            return fail(
                Some(&mut vmm),
                &format!("Invalid value for logger level: {raw}.Possible values: [Error, Warning, Info, Debug]"),
                &format!("InvalidLogLevel({raw:?})"),
                EXIT_BAD_CONFIGURATION,
            )
        }
    };
    if let Err(e) = vmm.log.configure(
        args.log_path.as_deref(),
        level,
        args.show_level.then_some(true),
    ) {
        return fail(
            Some(&mut vmm),
            &format!("Could not initialize logger: {e}"),
            &format!("LoggerInitialization({e:?})"),
            EXIT_GENERIC,
        );
    }
    vmm.log.write(
        LogLevel::Info,
        "main",
        &format!("Running Firecracker v{SIM_VERSION}"),
    );
    if let Some(path) = &args.metrics_path {
        let m = Metrics {
            metrics_path: path.clone(),
            ..Default::default()
        };
        if let Err(e) = vmm.init_metrics(m) {
            return fail(
                Some(&mut vmm),
                &format!("Could not initialize metrics: {e}"),
                &format!("MetricsInitialization({e:?})"),
                EXIT_GENERIC,
            );
        }
    }
    if !knobs.startup_delay.is_zero() {
        thread::sleep(knobs.startup_delay);
    }
    let (tx, rx) = mpsc::channel::<VmmRequest>();
    if !args.no_api {
        match server::bind(&args.api_sock) {
            Ok(listener) => server::spawn(listener, tx.clone(), knobs.api_delay),
            Err(e) => {
                return fail(
                    Some(&mut vmm),
                    &format!(
                        "RunWithApiError error: {}",
                        server::bind_error_message(&args.api_sock)
                    ),
                    &format!("RunWithApi(FailedToBindSocket({:?})) ({e})", args.api_sock),
                    EXIT_GENERIC,
                )
            }
        }
    }
    if let Some(path) = &args.config_file {
        let Ok(text) = fs::read_to_string(path) else {
            abort("Unable to open or read from the configuration file")
        };
        if let Err(msg) = boot_from_config(&mut vmm, &text) {
            return fail(
                Some(&mut vmm),
                &format!("Failed to build MicroVM from Json: {msg}"),
                &format!("BuildFromJson({msg:?})"),
                EXIT_GENERIC,
            );
        }
    }
    event_loop(vmm, rx, tx)
}

/// Applies a `--config-file` through the same handlers as the API, then starts the VM.
fn boot_from_config(vmm: &mut Vmm, text: &str) -> Result<(), String> {
    let cfg: VmConfigFile = serde_json::from_str(text).map_err(|e| {
        format!("Configuration for VMM from one single json failed: Invalid JSON: {e}")
    })?;
    let unmodelled = cfg.unmodelled();
    if !unmodelled.is_empty() {
        return Err(format!(
            "The requested operation is not supported: firecracker-sim does not simulate {}.",
            unmodelled.join(", ")
        ));
    }
    let Some(boot) = cfg.boot_source else {
        return Err("Configuration for VMM from one single json failed: Invalid JSON: missing field `boot-source`".into());
    };
    let mut actions = Vec::new();
    actions.extend(cfg.logger.map(Action::PutLogger));
    actions.extend(cfg.metrics.map(Action::PutMetrics));
    actions.extend(cfg.machine_config.map(Action::PutMachineConfig));
    actions.push(Action::PutBootSource(boot));
    actions.extend(cfg.drives.into_iter().map(Action::PutDrive));
    actions.extend(cfg.network_interfaces.into_iter().map(Action::PutNet));
    actions.extend(cfg.vsock.map(Action::PutVsock));
    actions.push(Action::Action(InstanceActionInfo::new(
        ActionType::InstanceStart,
    )));
    for action in actions {
        let resp = vmm.handle(action);
        if resp.status >= 300 {
            let body = resp.body.unwrap_or_default();
            let msg = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["fault_message"].as_str().map(str::to_owned))
                .unwrap_or(body);
            return Err(format!(
                "Configuration for VMM from one single json failed: {msg}"
            ));
        }
    }
    Ok(())
}

/// The VMM thread: one action at a time, timers in between, exit when the VMM stops.
fn event_loop(
    mut vmm: Vmm,
    rx: mpsc::Receiver<VmmRequest>,
    _keep_open: mpsc::Sender<VmmRequest>,
) -> ExitCode {
    loop {
        vmm.fire_timers();
        if let Some(code) = vmm.exit_code() {
            if code == 0 {
                vmm.log.write(
                    LogLevel::Info,
                    "main",
                    "Firecracker exiting successfully. exit_code=0",
                );
            }
            vmm.shutdown_guest();
            let _ = std::io::stdout().flush();
            process::exit(code);
        }
        let msg = match vmm.next_deadline() {
            Some(deadline) => {
                let wait = deadline.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return ExitCode::from(2),
                }
            }
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return ExitCode::from(2),
            },
        };
        if let Some(call) = msg {
            vmm.log.write(
                LogLevel::Info,
                "fc_api",
                &format!("The API server received a {}.", call.describe),
            );
            let resp = vmm.handle(call.action);
            let _ = call.reply.send(resp);
            if vmm.exit_code().is_some() {
                // The request ended the VMM (a failed snapshot load): answer before exiting.
                let _ = call.written.recv_timeout(std::time::Duration::from_secs(1));
            }
        }
    }
}

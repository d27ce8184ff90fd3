//! hearthd: the hearth daemon. Loads and validates the configuration, checks the host, builds
//! the actors, reconciles with what survived the last run, serves the control API, and on
//! SIGINT/SIGTERM closes cleanly (VMs keep running unless `vm.stop_on_exit`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use hearth::api::{self, ApiServer, ApiState, SupervisorPorts};
use hearth::config::Config;
use hearth::preflight::{self, Severity};
use slog::{info, warn};

/// The hearth daemon: turns a Linux host with KVM into a Firecracker microVM host.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML). Without it, every setting takes its default.
    #[arg(long, env = "HEARTH_CONFIG")]
    config: Option<PathBuf>,
    /// The control socket (overrides `api.socket`).
    #[arg(long, env = "HEARTH_SOCKET")]
    socket: Option<PathBuf>,
    /// The state directory (overrides `data_dir`).
    #[arg(long, env = "HEARTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The Firecracker binary (overrides `firecracker_bin`).
    #[arg(long, env = "HEARTH_FIRECRACKER_BIN")]
    firecracker_bin: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "HEARTH_LOG", default_value = "info")]
    log_level: String,
    /// Check the configuration and the host's prerequisites, print them, and exit.
    #[arg(long)]
    check: bool,
    /// Set any configuration key, e.g. `--set network.pool_size=32` (repeatable). Environment
    /// variables `HEARTH__SECTION__KEY=value` do the same; flags win over the environment,
    /// both win over the file.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = hearth::config::parse_override)]
    set: Vec<(String, String)>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let level = hearth::logging::parse_level(&args.log_level).map_err(anyhow::Error::msg)?;
    let log = hearth::logging::root_logger(level);

    let mut overrides = hearth::config::env_overrides(std::env::vars());
    overrides.extend(args.set.iter().cloned());
    let mut config = match &args.config {
        Some(path) => Config::load_with_overrides(path, &overrides)?,
        None => Config::parse_with_overrides("", &overrides)?,
    };
    if let Some(socket) = args.socket {
        config.api.socket = socket;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(bin) = args.firecracker_bin {
        config.firecracker_bin = Some(bin);
    }
    config.resolve_host_defaults();
    config.validate().context("Invalid configuration")?;

    let mut findings = preflight::check_host(config.firecracker_bin.as_deref());
    if args.check {
        // Jailing (issue 16): whether it is possible here, and why not. A real start probes
        // and decides once, in `daemon::start`, which logs each reason and refuses under
        // `enabled = true`.
        let jail_checks = preflight::probe_jailing(
            &config.jailer,
            config.firecracker_bin.as_deref(),
            &config.data_dir,
        );
        findings.extend(preflight::jailing_findings(
            config.jailer.enabled,
            &jail_checks,
        ));
        for f in &findings {
            println!("{f}");
        }
        let decision = preflight::decide_jailing(config.jailer.enabled, &jail_checks);
        println!(
            "\n# jailing ([jailer] enabled = {})\n{}",
            config.jailer.enabled,
            decision.summary()
        );
        println!(
            "\n# effective configuration\n{}",
            toml::to_string_pretty(&config)?
        );
        return Ok(());
    }
    for f in &findings {
        if let Some((severity, why)) = &f.problem {
            warn!(log, "host prerequisite"; "what" => &f.what, "problem" => why,
                "fatal" => *severity == Severity::Fatal);
        }
    }
    if findings
        .iter()
        .any(|f| matches!(f.problem, Some((Severity::Fatal, _))))
    {
        anyhow::bail!(
            "The host lacks a prerequisite hearthd cannot run without (run hearthd --check)"
        );
    }
    if config.network.egress_interface.is_none() {
        warn!(
            log,
            "no egress interface (no default route, none configured): NAT will be refused"
        );
    }

    actix::System::new().block_on(run(config, log))
}

async fn run(config: Config, log: slog::Logger) -> anyhow::Result<()> {
    let daemon = hearth::daemon::start(&config, &log).await?;

    let images = daemon.images.clone();
    let puller = hearth::images::oci::Puller::new(
        images.clone(),
        config.images.oci_settings(
            config.images.rootfs_options(
                None,
                hearth::images::oci::rootfs::InitMode::Hearth,
                // No agent found: builds for hearth's init fail naming what they looked for.
                config
                    .images
                    .resolve_agent_bin(std::env::current_exe().ok().as_deref())
                    .unwrap_or_else(|| hearth::config::AGENT_NAME.into()),
            ),
        ),
    )
    .context("Cannot open the OCI blob cache")?;
    // Blobs of pulls that failed, or of images removed while hearthd was down, go now.
    match puller.collect_garbage() {
        Ok(r) => {
            info!(log, "blob cache"; "removed" => r.blobs, "bytes" => r.bytes, "kept" => r.kept);
        }
        Err(e) => warn!(log, "blob cache collection failed"; "error" => %e),
    }
    let state = ApiState::new(SupervisorPorts::new(&daemon.supervisor), Some(images))
        .with_snapshots(api::SnapshotPorts::new(&daemon.supervisor))
        .with_oci(puller)
        .with_jailing(daemon.jailing.clone())
        .with_logger(log.clone());
    let api_settings = api::ApiSettings {
        socket: config.api.socket.clone(),
        socket_group: config.api.socket_group.map(|g| g.to_string()),
        tcp: config.api.tcp_listen,
        token: config
            .api
            .token
            .clone()
            .or_else(|| std::env::var("HEARTH_API_TOKEN").ok()),
        exec: config.exec.settings(),
        ..api::ApiSettings::default()
    };
    if let Some(parent) = api_settings.socket.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("Cannot create {}", parent.display()))?;
    }
    let (server, serving) = ApiServer::start(&api_settings, state)?;
    actix::spawn(serving);
    info!(log, "hearthd ready"; "socket" => %api_settings.socket.display(),
        "dns" => %daemon.dns_addr, "adopted" => daemon.report.adopted.len());
    // Tell systemd (Type=notify) we are up; a no-op outside systemd.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    wait_for_signal().await?;
    info!(log, "shutting down");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    server.stop().await;
    hearth::daemon::stop(&daemon, &config).await?;
    info!(log, "stopped"; "vms_left_running" => !config.vm.stop_on_exit);
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("Cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("Cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

//! hearthd: the hearth daemon. Loads and validates the configuration, checks the host, then
//! brings up host networking through the actors.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use hearth::config::Config;
use hearth::preflight::{self, Severity};

/// The hearth daemon: turns a Linux host with KVM into a Firecracker microVM host.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML). Without it, every setting takes its default.
    #[arg(long, env = "HEARTH_CONFIG")]
    config: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "HEARTH_LOG", default_value = "info")]
    log_level: String,
    /// Check the configuration and the host's prerequisites, print them, and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let level = hearth::logging::parse_level(&args.log_level).map_err(anyhow::Error::msg)?;
    let log = hearth::logging::root_logger(level);

    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::new(),
    };
    config.resolve_host_defaults();
    config.validate().context("Invalid configuration")?;

    let findings = preflight::check_host(None);
    if args.check {
        for f in &findings {
            println!("{f}");
        }
        println!("{}", toml::to_string_pretty(&config)?);
        return Ok(());
    }
    for f in &findings {
        if let Some((severity, why)) = &f.problem {
            slog::warn!(log, "host prerequisite"; "what" => &f.what, "problem" => why,
                "fatal" => *severity == Severity::Fatal);
        }
    }
    if findings
        .iter()
        .any(|f| matches!(f.problem, Some((Severity::Fatal, _))))
    {
        anyhow::bail!("The host lacks a prerequisite hearthd cannot run without (see the log, or run hearthd --check)");
    }
    slog::info!(log, "configuration"; "bridge" => &config.network.bridge,
        "cidr" => %config.network.cidr, "zone" => &config.dns.zone);
    Ok(())
}

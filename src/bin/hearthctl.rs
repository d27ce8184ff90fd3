//! hearthctl: the hearth CLI. Talks to hearthd over its Unix socket (`--socket`, env
//! `HEARTH_SOCKET`, default `/run/hearth/hearthd.sock`); prints tables, or the API's JSON with
//! `--json`.
//!
//! Exit codes: 0 success; 1 hearthd answered with an error; 2 bad usage or input;
//! 3 hearthd is not reachable (not running, or no permission on the socket);
//! 4 the connection failed mid-request or the answer was malformed.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use hearth::client::{cli, ApiPath, BoundedLines, Client, ClientError, Method, SseReader};
use hearth_proto::api::{parse_label, CreateVm, Event, SetNat, VmInfo, VmState};
use hearth_proto::api_health::Health;
use hearth_proto::api_images::{ImageInfo, ImageKind, ImportImage, ImportUpdate, NDJSON};

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
    Image(ImageCmd),
    /// MicroVMs.
    #[command(subcommand)]
    Vm(VmCmd),
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
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// Import a file on hearthd's host into the image store (hearthd copies it).
    Import {
        /// The image's name.
        name: String,
        /// The file (made absolute here; hearthd reads it).
        path: PathBuf,
        /// What the image is.
        #[arg(long, value_parser = image_kind_parser())]
        kind: ImageKind,
    },
    /// List images.
    #[command(alias = "ls")]
    List,
    /// Remove an image no VM uses.
    #[command(alias = "remove")]
    Rm {
        /// The image.
        name: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
enum VmCmd {
    /// Create and boot a VM.
    Create {
        /// The VM's name (a DNS label).
        name: String,
        /// Kernel image.
        #[arg(long)]
        kernel: String,
        /// Root filesystem image.
        #[arg(long)]
        rootfs: String,
        /// vCPUs.
        #[arg(long, default_value_t = 1)]
        vcpus: u8,
        /// Memory, MiB.
        #[arg(long, default_value_t = 128)]
        memory: u32,
        /// Give the guest outbound access through NAT.
        #[arg(long)]
        nat: bool,
        /// Call the VM running without waiting for its agent.
        #[arg(long)]
        no_ready_probe: bool,
        /// A label `key=value` (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Extra kernel command-line arguments.
        #[arg(long)]
        boot_args: Option<String>,
        /// Makes a retried create a no-op (sent as `Idempotency-Key`).
        #[arg(long)]
        idempotency_key: Option<String>,
    },
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
    /// Delete a VM and everything it holds.
    #[command(alias = "delete")]
    Rm {
        /// The VM.
        name: String,
    },
    /// Switch a VM's outbound NAT.
    Nat {
        /// The VM.
        name: String,
        /// On or off.
        #[arg(value_enum)]
        state: OnOff,
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

fn parse_state(s: &str) -> Result<VmState, String> {
    s.parse()
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

fn usage(message: String) -> Failure {
    Failure { code: 2, message }
}

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

fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    );
}

fn run(c: &Client, json: bool, command: Command) -> Out {
    match command {
        Command::Image(cmd) => image(c, json, cmd),
        Command::Vm(cmd) => vm(c, json, cmd),
        Command::Events { follow, since } => events(c, json, follow, since),
        Command::Health => {
            let h: Health = c.get(ApiPath::new("/v1/health"))?;
            if json {
                print_json(&h);
            } else {
                println!("hearthd {} is {} ({} VMs)", h.version, h.status, h.vms);
            }
            Ok(())
        }
    }
}

/// `--kind`: proto's [`ImageKind`], spelled as on the wire, its values listed in `--help`.
fn image_kind_parser() -> impl clap::builder::TypedValueParser<Value = ImageKind> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(
        [ImageKind::Kernel, ImageKind::Rootfs].map(ImageKind::as_str),
    )
    .try_map(|s| s.parse::<ImageKind>())
}

fn image(c: &Client, json: bool, cmd: ImageCmd) -> Out {
    match cmd {
        ImageCmd::Import { name, path, kind } => {
            let path = absolute(&path)?;
            let started = Instant::now();
            let img = import(c, &ImportImage { name, kind, path })?;
            if json {
                print_json(&img);
            } else {
                println!(
                    "Imported {} ({} {}, {}) in {:.1}s\nsha256 {}",
                    img.name,
                    img.kind.as_str(),
                    img.format,
                    human_size(img.size),
                    started.elapsed().as_secs_f64(),
                    img.sha256
                );
            }
        }
        ImageCmd::List => {
            let list: Vec<ImageInfo> = c.get(ApiPath::new("/v1/images"))?;
            if json {
                print_json(&list);
            } else {
                table(
                    &["NAME", "KIND", "FORMAT", "SIZE", "SHA256", "IMPORTED"],
                    list.iter()
                        .map(|i| {
                            vec![
                                i.name.clone(),
                                i.kind.as_str().into(),
                                i.format.to_string(),
                                human_size(i.size),
                                i.sha256.chars().take(12).collect(),
                                utc(i.imported_unix * 1000),
                            ]
                        })
                        .collect(),
                );
            }
        }
        ImageCmd::Rm { name } => {
            c.request(
                Method::DELETE,
                ApiPath::new("/v1/images").segment(&name),
                &[],
                None,
            )?
            .ok()?;
            if !json {
                println!("Removed image {name}");
            }
        }
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf, Failure> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Ok(p);
    }
    // Not readable from here: pass it on made absolute, hearthd will say what is wrong.
    std::env::current_dir()
        .map(|d| d.join(path))
        .map_err(|e| usage(format!("Cannot resolve {}: {e}", path.display())))
}

fn show_vm(json: bool, vm: &VmInfo) {
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
        ("nat", if vm.nat { "on" } else { "off" }.into()),
        (
            "ready probe",
            if s.ready_probe { "on" } else { "off" }.into(),
        ),
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
    if let Some(e) = &vm.last_error {
        rows.push(("last error", e.clone()));
    }
    for (k, v) in rows {
        println!("{:<12} {v}", format!("{k}:"));
    }
}

fn labels(l: &BTreeMap<String, String>) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn vm(c: &Client, json: bool, cmd: VmCmd) -> Out {
    let action = |name: &str, verb: &str| -> Out {
        let vm: VmInfo = c
            .request(
                Method::POST,
                ApiPath::new("/v1/vms").segment(name).segment(verb),
                &[],
                None,
            )?
            .ok()?
            .json()?;
        if json {
            print_json(&vm);
        } else {
            println!("{}: {}", vm.name, vm.state);
        }
        Ok(())
    };
    match cmd {
        // These end the process with their own codes (a remote command's exit code); their
        // terminal and connections are released before they return.
        VmCmd::Exec(a) => std::process::exit(cli::exec(c, json, a).into()),
        VmCmd::Cp(a) => std::process::exit(cli::cp(c, json, &a).into()),
        VmCmd::Create {
            name,
            kernel,
            rootfs,
            vcpus,
            memory,
            nat,
            no_ready_probe,
            labels,
            boot_args,
            idempotency_key,
        } => {
            let spec = CreateVm {
                name,
                kernel,
                rootfs,
                vcpus,
                memory_mib: memory,
                disk_size: None,
                boot_args,
                nat,
                ready_probe: !no_ready_probe,
                labels: labels.into_iter().collect(),
            };
            spec.validate().map_err(|e| usage(e.to_string()))?;
            let headers: Vec<(&str, &str)> = idempotency_key
                .as_deref()
                .map(|k| ("Idempotency-Key", k))
                .into_iter()
                .collect();
            let vm: VmInfo = c.send_json(Method::POST, ApiPath::new("/v1/vms"), &headers, &spec)?;
            show_vm(json, &vm);
        }
        VmCmd::List { label } => {
            let path = match label {
                Some((k, v)) => ApiPath::new("/v1/vms").query("label", format!("{k}={v}")),
                None => ApiPath::new("/v1/vms"),
            };
            let vms: Vec<VmInfo> = c.get(path)?;
            if json {
                print_json(&vms);
            } else {
                table(
                    &[
                        "NAME", "STATE", "IP", "NAT", "VCPUS", "MEMORY", "PID", "LABELS",
                    ],
                    vms.iter()
                        .map(|vm| {
                            vec![
                                vm.name.clone(),
                                vm.state.to_string(),
                                vm.guest_ip.map(|i| i.to_string()).unwrap_or("-".into()),
                                if vm.nat { "on" } else { "off" }.into(),
                                vm.spec.vcpus.to_string(),
                                format!("{} MiB", vm.spec.memory_mib),
                                vm.pid.map(|p| p.to_string()).unwrap_or("-".into()),
                                labels(&vm.spec.labels),
                            ]
                        })
                        .collect(),
                );
            }
        }
        VmCmd::Get { name } => {
            let vm: VmInfo = c.get(ApiPath::new("/v1/vms").segment(&name))?;
            show_vm(json, &vm);
        }
        VmCmd::Start { name } => action(&name, "start")?,
        VmCmd::Stop { name } => action(&name, "stop")?,
        VmCmd::Kill { name } => action(&name, "kill")?,
        VmCmd::Restart { name } => action(&name, "restart")?,
        VmCmd::Rm { name } => {
            c.request(
                Method::DELETE,
                ApiPath::new("/v1/vms").segment(&name),
                &[],
                None,
            )?
            .ok()?;
            if !json {
                println!("Deleted {name}");
            }
        }
        VmCmd::Nat { name, state } => {
            let enabled = matches!(state, OnOff::On);
            let vm: VmInfo = c.send_json(
                Method::PUT,
                ApiPath::new("/v1/vms").segment(&name).segment("nat"),
                &[],
                &SetNat { enabled },
            )?;
            if json {
                print_json(&vm);
            } else {
                println!("{}: NAT {}", vm.name, if vm.nat { "on" } else { "off" });
            }
        }
        VmCmd::Wait {
            name,
            state,
            timeout,
        } => {
            let vm: VmInfo = c.get(
                ApiPath::new("/v1/vms")
                    .segment(&name)
                    .segment("wait")
                    .query("state", state)
                    .query("timeout", &timeout),
            )?;
            if json {
                print_json(&vm);
            } else {
                println!("{}: {}", vm.name, vm.state);
            }
        }
    }
    Ok(())
}

fn print_event(json: bool, e: &Event) {
    if json {
        println!("{}", serde_json::to_string(e).unwrap_or_default());
    } else {
        println!(
            "{:>6}  {}  {:<20} {:<9} {:<17} {}",
            e.seq,
            utc(e.at_ms),
            e.vm,
            e.state,
            serde_json::to_value(e.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            e.detail.as_deref().unwrap_or("")
        );
    }
    let _ = std::io::stdout().flush();
}

fn events(c: &Client, json: bool, follow: bool, since: u64) -> Out {
    if !follow {
        let mut since = since;
        loop {
            let page: Vec<Event> = c.get(
                ApiPath::new("/v1/events")
                    .query("since", since)
                    .query("limit", 1000),
            )?;
            for e in &page {
                print_event(json, e);
            }
            match page.last() {
                Some(last) if page.len() == 1000 => since = last.seq,
                _ => return Ok(()),
            }
        }
    }
    // Follow, reconnecting when a stream ends (hearthd drops clients that fall far behind and
    // ends streams when it stops) and resuming after the last event printed. If hearthd is
    // gone the reconnect fails (exit 3); a stream that keeps ending at once is given up on.
    let mut last = since;
    let mut empty_streams = 0;
    loop {
        let path = ApiPath::new("/v1/events/stream").query("since", last);
        let stream = match c.stream(Method::GET, path, &[], None) {
            Ok(stream) => stream,
            Err(e) if e.is_unreachable() || empty_streams >= 4 => return Err(e.into()),
            // Caught hearthd mid-shutdown or a dropped connection: try again.
            Err(_) => {
                empty_streams += 1;
                std::thread::sleep(std::time::Duration::from_millis(200 * empty_streams));
                continue;
            }
        };
        if !(200..300).contains(&stream.status) {
            stream.into_response()?.ok()?;
            return Err(usage("unexpected answer".into()));
        }
        let before = last;
        for frame in SseReader::new(stream.body) {
            let Ok(frame) = frame else { break };
            let e: Event = serde_json::from_str(&frame.data).map_err(ClientError::Decode)?;
            print_event(json, &e);
            last = e.seq;
        }
        empty_streams = if last == before { empty_streams + 1 } else { 0 };
        if empty_streams >= 5 {
            return Err(Failure {
                code: 4,
                message: "The event stream keeps ending (see hearthd's log)".into(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(200 * empty_streams));
    }
}

/// Prints rows under headers, columns padded to their widest cell.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a Unix time in milliseconds.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Imports through the streamed form of `POST /v1/images`, drawing a progress bar on stderr
/// (when it is a terminal) from the server's progress lines.
fn import(c: &Client, request: &ImportImage) -> Result<ImageInfo, Failure> {
    let body = serde_json::to_vec(request).map_err(ClientError::from)?;
    let resp = c.stream(
        Method::POST,
        ApiPath::new("/v1/images"),
        &[("Accept", NDJSON)],
        Some(&body),
    )?;
    if resp.status != 200 {
        // A refusal before the copy started (or a server that does not stream).
        return Ok(resp.into_response()?.ok()?.json()?);
    }
    let mut bar = ProgressBar::new(&request.name);
    let mut result = None;
    for line in BoundedLines::new(resp.body) {
        let line = line.map_err(ClientError::Io)?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<ImportUpdate>(&line).map_err(ClientError::Decode)? {
            ImportUpdate::Progress { copied, total } => bar.draw(copied, total),
            ImportUpdate::Image(img) => result = Some(Ok(img)),
            ImportUpdate::Error(e) => result = Some(Err(e)),
        }
    }
    bar.clear();
    match result {
        Some(Ok(img)) => Ok(img),
        Some(Err(e)) => Err(Failure {
            code: 1,
            message: format!("{} ({})", e.message, e.code),
        }),
        None => Err(Failure {
            code: 4,
            message: "The import stream ended without a result (hearthd stopped?)".into(),
        }),
    }
}

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
struct ProgressBar {
    label: String,
    enabled: bool,
    drawn: bool,
}

impl ProgressBar {
    fn new(label: &str) -> Self {
        ProgressBar {
            label: label.to_owned(),
            enabled: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    fn draw(&mut self, copied: u64, total: u64) {
        if !self.enabled {
            return;
        }
        eprint!("\r{} {}", bar(copied, total, 30), self.label);
        self.drawn = true;
    }

    fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[2K");
        }
    }
}

/// `[#####-----]  50%  32.0 MiB / 64.0 MiB` with a bar `width` characters wide.
fn bar(copied: u64, total: u64, width: usize) -> String {
    let fraction = if total == 0 {
        1.0
    } else {
        (copied as f64 / total as f64).clamp(0.0, 1.0)
    };
    let filled = (fraction * width as f64).round() as usize;
    format!(
        "[{}{}] {:>3.0}%  {} / {}",
        "#".repeat(filled),
        "-".repeat(width - filled),
        fraction * 100.0,
        human_size(copied),
        human_size(total)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_709_210_096_000), "2024-02-29 12:34:56");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(64 << 20), "64.0 MiB");
        assert_eq!(
            bar(32 << 20, 64 << 20, 10),
            "[#####-----]  50%  32.0 MiB / 64.0 MiB"
        );
        assert_eq!(bar(0, 0, 4), "[####] 100%  0 B / 0 B");
    }
}

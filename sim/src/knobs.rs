//! Behaviour knobs that make the simulated guest misbehave on purpose, read from the
//! environment (`FC_SIM_*`), so the command line stays exactly Firecracker's. Each knob is
//! documented in `docs/sim.md`.

use std::time::Duration;

use crate::netstack::ServePort;

/// Everything the environment can tune. `Default` is a well-behaved guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Knobs {
    /// `FC_SIM_STARTUP_DELAY_MS`: wait before binding the API socket (Firecracker takes
    /// 6-60 ms).
    pub startup_delay: Duration,
    /// `FC_SIM_API_DELAY_MS`: extra latency added to every API request.
    pub api_delay: Duration,
    /// `FC_SIM_BOOT_DELAY_MS`: from `InstanceStart` to the guest being up (agent listening,
    /// vsock served). Default 50 ms.
    pub boot_delay: Duration,
    /// `FC_SIM_REBOOT_DELAY_MS`: from `SendCtrlAltDel` (on a booted guest) to the process
    /// exiting 0. Default 50 ms.
    pub reboot_delay: Duration,
    /// `FC_SIM_IGNORE_CTRL_ALT_DEL=1`: the guest ignores Ctrl+Alt+Del (like a guest without
    /// an i8042 driver, or any guest on a PVM host); the process stays alive.
    pub ignore_ctrl_alt_del: bool,
    /// `FC_SIM_CRASH_AFTER_MS`: the VMM dies this long after `InstanceStart`.
    pub crash_after: Option<Duration>,
    /// `FC_SIM_CRASH_CODE`: the exit code of that crash. Default 1 (a vCPU error).
    pub crash_code: i32,
    /// `FC_SIM_AGENT_PORT`: the guest vsock port the agent listens on. Default 52.
    pub agent_port: u32,
    /// `FC_SIM_NO_AGENT=1`: nothing listens in the guest; `CONNECT` is closed without `OK`.
    pub no_agent: bool,
    /// `FC_SIM_AGENT_SILENT=1`: the agent accepts the connection (`OK ...`) but never answers.
    pub agent_silent: bool,
    /// `FC_SIM_NETSTACK=1`: run the userspace guest network stack on the first TAP after boot.
    pub netstack: bool,
    /// `FC_SIM_AGENT_BIN=<path>`: run this real `hearth-agent` as the guest's agent (started
    /// at `InstanceStart` on a Unix socket; `CONNECT <agent port>` is copied to it).
    pub agent_bin: Option<std::path::PathBuf>,
    /// `FC_SIM_CONSOLE_AT_EXIT=<line>`: the guest prints this line on the serial console
    /// (stdout) just before the VMM exits on its own (guest reboot or crash), as hearth's
    /// init prints its exit line before rebooting.
    pub console_at_exit: Option<String>,
    /// `FC_SIM_IDENTITY_FILE=1|<absolute path>`: the guest adopts the network identity (a
    /// `reconfigure` request's JSON: `ip_cidr`, `gateway`, `mac`, `dns`) written to this file
    /// (`1`: `sim-identity.json` beside the API socket, one per VM); a real agent
    /// (`FC_SIM_AGENT_BIN`) is started with `--sim-identity-file` naming it.
    pub identity_file: Option<IdentityFile>,
    /// `FC_SIM_NO_CLOCK_REALTIME=1`: snapshots carry no realtime clock reference, so a load
    /// with `clock_realtime` fails as the real binary's sometimes does (its KVM clock had
    /// none when the snapshot was taken).
    pub no_clock_realtime: bool,
    /// `FC_SIM_ANNOUNCE=1`: each time the guest network stack starts (boot, snapshot load,
    /// new identity) the guest announces itself once with the identity it has then: a
    /// gratuitous ARP and a broadcast UDP datagram to port [`ANNOUNCE_PORT`] whose payload is
    /// `announce pid=<VMM pid>`, repeated every [`ANNOUNCE_EVERY`] while that stack lives (at
    /// most [`ANNOUNCE_TIMES`] times), as a restored guest's own traffic would carry its old
    /// identity until the agent changes it.
    pub announce: bool,
    /// `FC_SIM_IDENTITY_DELAY_MS`: the guest adopts a new identity file's content only once it
    /// has stood this long (a slow guest), so its old identity stays on the wire meanwhile.
    pub identity_delay: Duration,
    /// `FC_SIM_SERVE=tcp:80,udp:53` (with `FC_SIM_NETSTACK=1`): ports the guest serves itself
    /// each time its network stack starts (boot, snapshot load, new identity), answering every
    /// TCP connection and UDP datagram with the peer address it saw
    /// (`peer=<ip>:<port> got=<request>`). Empty: none.
    pub serve: Vec<ServePort>,
}

/// The UDP port of `FC_SIM_ANNOUNCE`'s broadcast datagram.
pub const ANNOUNCE_PORT: u16 = 9997;
/// Between two announces of one stack.
pub const ANNOUNCE_EVERY: Duration = Duration::from_millis(100);
/// The most announces one stack sends.
pub const ANNOUNCE_TIMES: u32 = 20;

/// Where the guest's identity file is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityFile {
    /// `sim-identity.json` in the API socket's directory.
    BesideApiSocket,
    /// This path.
    At(std::path::PathBuf),
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            startup_delay: Duration::ZERO,
            api_delay: Duration::ZERO,
            boot_delay: Duration::from_millis(50),
            reboot_delay: Duration::from_millis(50),
            ignore_ctrl_alt_del: false,
            crash_after: None,
            crash_code: 1,
            agent_port: hearth_proto::agent::DEFAULT_PORT,
            no_agent: false,
            agent_silent: false,
            netstack: false,
            agent_bin: None,
            console_at_exit: None,
            identity_file: None,
            no_clock_realtime: false,
            announce: false,
            identity_delay: Duration::ZERO,
            serve: Vec::new(),
        }
    }
}

/// A knob whose value does not parse.
#[derive(Debug, thiserror::Error)]
#[error("Invalid value {value:?} for {name}{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
pub struct KnobError {
    /// The variable's name.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong with it, when more can be said than that it does not parse.
    pub reason: Option<String>,
}

impl KnobError {
    fn new(name: &'static str, value: impl Into<String>) -> Self {
        KnobError {
            name,
            value: value.into(),
            reason: None,
        }
    }
}

impl Knobs {
    /// Reads the knobs from the process environment.
    pub fn from_env() -> Result<Self, KnobError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the knobs through `get` (a test passes a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, KnobError> {
        let mut k = Knobs::default();
        let num = |name: &'static str| -> Result<Option<u64>, KnobError> {
            match get(name) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| KnobError::new(name, v)),
            }
        };
        let flag = |name: &'static str| -> Result<bool, KnobError> {
            match get(name).as_deref().map(str::trim) {
                None | Some("" | "0") => Ok(false),
                Some("1") => Ok(true),
                Some(v) => Err(KnobError::new(name, v)),
            }
        };
        let ms = Duration::from_millis;
        if let Some(v) = num("FC_SIM_STARTUP_DELAY_MS")? {
            k.startup_delay = ms(v);
        }
        if let Some(v) = num("FC_SIM_API_DELAY_MS")? {
            k.api_delay = ms(v);
        }
        if let Some(v) = num("FC_SIM_BOOT_DELAY_MS")? {
            k.boot_delay = ms(v);
        }
        if let Some(v) = num("FC_SIM_IDENTITY_DELAY_MS")? {
            k.identity_delay = ms(v);
        }
        if let Some(v) = num("FC_SIM_REBOOT_DELAY_MS")? {
            k.reboot_delay = ms(v);
        }
        k.crash_after = num("FC_SIM_CRASH_AFTER_MS")?.map(ms);
        if let Some(v) = num("FC_SIM_CRASH_CODE")? {
            k.crash_code =
                i32::try_from(v).map_err(|_| KnobError::new("FC_SIM_CRASH_CODE", v.to_string()))?;
        }
        if let Some(v) = num("FC_SIM_AGENT_PORT")? {
            k.agent_port =
                u32::try_from(v).map_err(|_| KnobError::new("FC_SIM_AGENT_PORT", v.to_string()))?;
        }
        k.ignore_ctrl_alt_del = flag("FC_SIM_IGNORE_CTRL_ALT_DEL")?;
        k.no_agent = flag("FC_SIM_NO_AGENT")?;
        k.agent_silent = flag("FC_SIM_AGENT_SILENT")?;
        k.netstack = flag("FC_SIM_NETSTACK")?;
        k.no_clock_realtime = flag("FC_SIM_NO_CLOCK_REALTIME")?;
        k.announce = flag("FC_SIM_ANNOUNCE")?;
        match get("FC_SIM_AGENT_BIN") {
            None => {}
            Some(v) if v.trim().is_empty() => {}
            Some(v) if v.contains('\0') || !std::path::Path::new(&v).is_absolute() => {
                return Err(KnobError::new("FC_SIM_AGENT_BIN", v))
            }
            Some(v) => k.agent_bin = Some(v.into()),
        }
        k.console_at_exit = get("FC_SIM_CONSOLE_AT_EXIT").filter(|v| !v.is_empty());
        match get("FC_SIM_IDENTITY_FILE") {
            None => {}
            Some(v) if matches!(v.trim(), "" | "0") => {}
            Some(v) if v.trim() == "1" => k.identity_file = Some(IdentityFile::BesideApiSocket),
            Some(v) if v.contains('\0') || !std::path::Path::new(&v).is_absolute() => {
                return Err(KnobError::new("FC_SIM_IDENTITY_FILE", v))
            }
            Some(v) => k.identity_file = Some(IdentityFile::At(v.into())),
        }
        if let Some(v) = get("FC_SIM_SERVE") {
            k.serve = parse_serve(&v, k.netstack)?;
        }
        Ok(k)
    }
}

/// `FC_SIM_SERVE`: empty serves nothing; anything else must be a valid port list, and the
/// guest needs its network stack to serve it.
fn parse_serve(value: &str, netstack: bool) -> Result<Vec<ServePort>, KnobError> {
    let bad = |reason: String| KnobError {
        reason: Some(reason),
        ..KnobError::new("FC_SIM_SERVE", value)
    };
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let ports = ServePort::parse_list(value).map_err(bad)?;
    if !netstack {
        return Err(bad(
            "the guest serves ports only with FC_SIM_NETSTACK=1".into()
        ));
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn knobs(pairs: &[(&str, &str)]) -> Result<Knobs, KnobError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Knobs::from_lookup(|n| map.get(n).cloned())
    }

    #[test]
    fn defaults_are_a_well_behaved_guest() {
        assert_eq!(knobs(&[]).unwrap(), Knobs::default());
        assert_eq!(Knobs::default().agent_port, 52);
    }

    #[test]
    fn parses_values_and_rejects_garbage() {
        let k = knobs(&[
            ("FC_SIM_BOOT_DELAY_MS", "250"),
            ("FC_SIM_IGNORE_CTRL_ALT_DEL", "1"),
            ("FC_SIM_CRASH_AFTER_MS", "10"),
            ("FC_SIM_AGENT_PORT", "1024"),
        ])
        .unwrap();
        assert_eq!(k.boot_delay, Duration::from_millis(250));
        assert!(k.ignore_ctrl_alt_del);
        assert_eq!(k.crash_after, Some(Duration::from_millis(10)));
        assert_eq!(k.agent_port, 1024);
        assert!(knobs(&[("FC_SIM_BOOT_DELAY_MS", "soon")]).is_err());
        assert!(knobs(&[("FC_SIM_NO_AGENT", "yes")]).is_err());
        // The agent binary must be an absolute path (the simulator may run in a jail's cwd).
        assert!(knobs(&[("FC_SIM_AGENT_BIN", "hearth-agent")]).is_err());
        assert_eq!(
            knobs(&[("FC_SIM_AGENT_BIN", "/bin/agent")])
                .unwrap()
                .agent_bin,
            Some("/bin/agent".into())
        );
        assert_eq!(
            knobs(&[("FC_SIM_IDENTITY_FILE", "1")])
                .unwrap()
                .identity_file,
            Some(IdentityFile::BesideApiSocket)
        );
        assert_eq!(
            knobs(&[("FC_SIM_IDENTITY_FILE", "/run/id.json")])
                .unwrap()
                .identity_file,
            Some(IdentityFile::At("/run/id.json".into()))
        );
        assert!(knobs(&[("FC_SIM_IDENTITY_FILE", "id.json")]).is_err());
        assert!(knobs(&[("FC_SIM_ANNOUNCE", "1")]).unwrap().announce);
        assert!(knobs(&[("FC_SIM_ANNOUNCE", "on")]).is_err());
        assert_eq!(
            knobs(&[("FC_SIM_IDENTITY_DELAY_MS", "700")])
                .unwrap()
                .identity_delay,
            Duration::from_millis(700)
        );
        assert!(knobs(&[("FC_SIM_IDENTITY_DELAY_MS", "-1")]).is_err());
    }

    #[test]
    fn serve_lists_ports_and_bad_lists_name_the_knob_and_the_problem() {
        let net = ("FC_SIM_NETSTACK", "1");
        assert!(knobs(&[net]).unwrap().serve.is_empty());
        assert!(knobs(&[net, ("FC_SIM_SERVE", "")])
            .unwrap()
            .serve
            .is_empty());
        assert_eq!(
            knobs(&[net, ("FC_SIM_SERVE", "tcp:80,udp:53,tcp:22")])
                .unwrap()
                .serve,
            [ServePort::Tcp(80), ServePort::Udp(53), ServePort::Tcp(22)]
        );
        for (value, reason) in [
            ("tcp:80,,udp:53", "not tcp:<port> or udp:<port>"),
            (" tcp:80", "not tcp or udp"),
            ("udp:0", "not in 1..=65535"),
            ("tcp:http", "not in 1..=65535"),
            ("icmp:1", "not tcp or udp"),
            ("tcp:80,tcp:80", "listed twice"),
        ] {
            let e = knobs(&[net, ("FC_SIM_SERVE", value)]).unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains("FC_SIM_SERVE") && text.contains(reason),
                "{value:?}: {text}"
            );
        }
        // Without the guest stack there is nothing to serve with: an error, not a no-op.
        let e = knobs(&[("FC_SIM_SERVE", "tcp:80")]).unwrap_err();
        assert!(e.to_string().contains("FC_SIM_NETSTACK=1"), "{e}");
        // Other knobs' errors keep their text.
        assert_eq!(
            knobs(&[("FC_SIM_NO_AGENT", "yes")])
                .unwrap_err()
                .to_string(),
            "Invalid value \"yes\" for FC_SIM_NO_AGENT"
        );
    }
}

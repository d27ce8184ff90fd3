//! hearthd's configuration: a TOML file where every field has a default, validated as a whole
//! before anything touches the host. Host-derived defaults (egress interface, upstream resolvers)
//! are filled in by [`Config::resolve_host_defaults`] from `/proc/net/route` and `/etc/resolv.conf`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

mod exec;
mod images;
mod jailer;
mod policy;
mod snapshots;
pub use exec::ExecConfig;
pub use images::{ImagesConfig, RegistryConfig, AGENT_NAME};
pub use jailer::{JailerConfig, JailerMode};
pub use policy::PolicyConfig;
pub use snapshots::SnapshotsConfig;

/// Errors in reading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("Cannot read config file {path}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("Invalid config file {path}: {message}")]
    Parse {
        /// The path given.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// A field has a value hearth cannot use.
    #[error("Invalid config value for `{field}`: {reason}")]
    Invalid {
        /// The dotted key, e.g. `network.bridge`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The whole configuration of hearthd.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where hearth keeps its state (SQLite store, images, disks).
    pub data_dir: PathBuf,
    /// Where per-VM run directories (API and vsock sockets, console) go. Keep it short:
    /// socket paths under it must fit in 108 bytes.
    pub run_dir: PathBuf,
    /// The Firecracker binary. Default: `firecracker` in `PATH`.
    pub firecracker_bin: Option<PathBuf>,
    /// VM lifecycle settings.
    pub vm: VmLifecycleConfig,
    /// The control endpoint.
    pub api: ApiConfig,
    /// The state database.
    pub store: StoreConfig,
    /// Bridge, TAP pool, NAT and isolation.
    pub network: NetworkConfig,
    /// The DNS server on the bridge gateway.
    pub dns: DnsConfig,
    /// Exec sessions and file transfer through the guest agent.
    pub exec: ExecConfig,
    /// Running VMMs through Firecracker's jailer (jailed where possible by default; see
    /// [`JailerConfig`]).
    pub jailer: JailerConfig,
    /// Root filesystems built from OCI images.
    pub images: ImagesConfig,
    /// Lifecycle policies: restart checks, autostart after a host reboot.
    pub policy: PolicyConfig,
    /// Snapshots and forks.
    pub snapshots: SnapshotsConfig,
}

/// Host networking settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Name of the bridge hearth owns (at most 15 bytes).
    pub bridge: String,
    /// The bridge subnet; the gateway is its first host address, guests get the rest.
    pub cidr: Ipv4Net,
    /// Prefix of the TAP names hearth creates; a number is appended (`hth0`, `hth1`, ...).
    pub tap_prefix: String,
    /// How many unleased TAPs to keep ready.
    pub pool_size: u32,
    /// MTU of the bridge and TAPs.
    pub mtu: u32,
    /// Owner uid of the TAPs, so a non-root Firecracker can open them.
    pub tap_owner: Option<u32>,
    /// Owner gid of the TAPs.
    pub tap_group: Option<u32>,
    /// Interface NATed traffic leaves by. Default: the interface of the default route.
    pub egress_interface: Option<String>,
    /// Set by [`Config::resolve_host_defaults`] when `egress_interface` was not configured: the
    /// default route's interface is then used, and followed as the route moves or goes away.
    /// Not a setting (never read from or written to the file).
    #[serde(skip)]
    pub egress_follows_route: bool,
    /// Make every TAP an isolated bridge port, so guests cannot reach each other.
    pub isolate_guests: bool,
    /// Drop traffic from guests to the host itself, except DNS to the gateway.
    pub block_guest_to_host: bool,
    /// Drop packets from a guest whose source IP/MAC is not its lease's.
    pub anti_spoofing: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            bridge: "hearth0".into(),
            // Inside 172.16.0.0/12 but near its top, where Docker (172.17+ counting up) and
            // most VPNs do not reach.
            cidr: "172.31.240.0/24".parse().expect("valid literal"),
            tap_prefix: "hth".into(),
            pool_size: 16,
            mtu: 1500,
            tap_owner: None,
            tap_group: None,
            egress_interface: None,
            egress_follows_route: false,
            isolate_guests: true,
            block_guest_to_host: true,
            anti_spoofing: true,
        }
    }
}

/// DNS settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// The zone whose names are VMs: `<vm>.<zone>`.
    pub zone: String,
    /// Resolvers for every other name. Default: the `nameserver`s of `/etc/resolv.conf`.
    /// Each is an address with an optional port (`10.0.0.2` means `10.0.0.2:53`).
    #[serde(deserialize_with = "upstreams")]
    pub upstreams: Vec<SocketAddr>,
    /// Port to serve on (the gateway address, UDP and TCP).
    pub port: u16,
    /// Upstream answers kept in the forwarder's cache (0 disables it; at most
    /// [`MAX_DNS_CACHE_ENTRIES`]). Each entry is one answer of at most 4 KiB on the wire.
    pub cache_entries: usize,
}

/// Largest `dns.cache_entries`: bounds the cache's memory (each entry at most 4 KiB on the
/// wire, a few times that parsed: at most a few hundred MB at this bound, typical answers
/// far less).
pub const MAX_DNS_CACHE_ENTRIES: usize = 100_000;

/// Parses one upstream resolver: `ip:port`, `[v6]:port`, or a bare address on port 53 (what
/// a resolv.conf `nameserver` line holds).
fn parse_upstream(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| {
            format!(
                "invalid upstream resolver {text:?}: expected an IP address with an optional \
                 port, e.g. \"10.0.0.2\" or \"10.0.0.2:53\""
            )
        })
}

fn upstreams<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|t| parse_upstream(t).map_err(serde::de::Error::custom))
        .collect()
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            zone: "vm.internal".into(),
            upstreams: Vec::new(),
            port: 53,
            cache_entries: 10_000,
        }
    }
}

/// The `[vm]` section: VM lifecycle settings for every VM (one VM's Firecracker setup is
/// `hearth_actors::firecracker::VmConfig`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VmLifecycleConfig {
    /// How long a new VM's guest agent has to answer before the VM is `unready`, seconds.
    pub ready_timeout_secs: u64,
    /// The guest agent's vsock port.
    pub agent_port: u32,
    /// Stop ladder: how long after Ctrl+Alt+Del before SIGTERM, seconds.
    pub shutdown_grace_secs: u64,
    /// Stop ladder: how long after SIGTERM before SIGKILL, seconds.
    pub term_grace_secs: u64,
    /// Stop every VM when hearthd exits (default: leave them running; they are re-adopted).
    pub stop_on_exit: bool,
    /// Root disk backend: `auto` (device-mapper where it works, else copy), `dm` or `copy`.
    pub disk_backend: String,
    /// Give each VM's API and vsock sockets to this group (gid), mode 0660, so tools outside
    /// hearthd (e.g. a metrics scraper) can use them. Default: root only.
    pub socket_group: Option<u32>,
}

impl Default for VmLifecycleConfig {
    fn default() -> Self {
        Self {
            ready_timeout_secs: 30,
            agent_port: 52,
            shutdown_grace_secs: 10,
            term_grace_secs: 5,
            stop_on_exit: false,
            disk_backend: "auto".into(),
            socket_group: None,
        }
    }
}

/// The state database.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `normal` (survives any crash of hearthd; the default) or `full` (also survives power
    /// loss, at an fsync per commit).
    pub synchronous: crate::store::Durability,
}

/// The control endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// The Unix socket hearthctl talks to (mode 0660).
    pub socket: PathBuf,
    /// Group (gid) that may use the socket; default: root's only.
    pub socket_group: Option<u32>,
    /// Optional TCP listener, e.g. `127.0.0.1:7070`; requires `token`.
    pub tcp_listen: Option<SocketAddr>,
    /// Bearer token required on the TCP listener (or env `HEARTH_API_TOKEN`).
    pub token: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/hearth/hearthd.sock"),
            socket_group: None,
            tcp_listen: None,
            token: None,
        }
    }
}

impl Config {
    /// Default configuration with `data_dir = /var/lib/hearth`, `run_dir = /run/hearth/vms`.
    pub fn new() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/hearth"),
            run_dir: PathBuf::from("/run/hearth/vms"),
            ..Self::default()
        }
    }

    /// Reads, parses and validates a TOML file. Host-derived defaults are not filled in.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_overrides(path, &[])
    }

    /// [`Config::load`] with `overrides` applied before validation.
    pub fn load_with_overrides(
        path: &Path,
        overrides: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_with_overrides(&text, overrides).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_with_overrides(text, &[])
    }

    /// Parses TOML text, applies `overrides` (dotted key, value) on top, then validates.
    /// A value is read as a TOML value (`32`, `true`, `["a"]`), else taken as a string.
    pub fn parse_with_overrides(
        text: &str,
        overrides: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        for (key, value) in overrides {
            set_dotted(&mut table, key, value).map_err(parse_err)?;
        }
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        let defaults = Config::new();
        if config.data_dir.as_os_str().is_empty() {
            config.data_dir = defaults.data_dir;
        }
        if config.run_dir.as_os_str().is_empty() {
            config.run_dir = defaults.run_dir;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every field and cross-field rule, section by section (the first problem found
    /// is reported).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.network.validate()?;
        self.exec.validate()?;
        self.jailer.validate()?;
        self.images.validate()?;
        self.policy.validate()?;
        self.snapshots.validate(&self.data_dir)?;
        self.dns.validate()?;
        self.validate_paths()?;
        self.vm.validate()?;
        self.api.validate()
    }

    /// The paths: absolute, and `run_dir` short enough for the sockets under it.
    fn validate_paths(&self) -> Result<(), ConfigError> {
        for (field, path) in [
            ("data_dir", &self.data_dir),
            ("run_dir", &self.run_dir),
            ("api.socket", &self.api.socket),
        ] {
            if !path.is_absolute() {
                return Err(invalid(
                    field,
                    format!("{} must be an absolute path", path.display()),
                ));
            }
        }
        // `<run_dir>/<63-byte VM name>/v.sock_<port>` must fit in sun_path (108 bytes).
        let longest = self.run_dir.as_os_str().len() + 1 + 63 + "/v.sock_4294967295".len();
        if longest >= 108 {
            return Err(invalid(
                "run_dir",
                format!(
                    "{} is too long: VM socket paths under it could pass the 107-byte limit",
                    self.run_dir.display()
                ),
            ));
        }
        if let Some(bin) = &self.firecracker_bin {
            if !bin.is_absolute() {
                return Err(invalid(
                    "firecracker_bin",
                    format!("{} must be an absolute path", bin.display()),
                ));
            }
        }
        Ok(())
    }

    /// Fills the defaults that come from the host: the egress interface from the default
    /// route (marked as following it) and the upstream resolvers from resolv.conf. Missing sources are not errors:
    /// the field stays empty and the caller decides (NAT without egress is refused later).
    pub fn resolve_host_defaults(&mut self) {
        if self.network.egress_interface.is_none() {
            self.network.egress_follows_route = true;
            if let Ok(routes) = hearth_actors::host::procfs::read_to_string("net/route") {
                self.network.egress_interface = default_route_interface(&routes);
            }
        }
        if self.dns.upstreams.is_empty() {
            if let Ok(resolv) = std::fs::read_to_string("/etc/resolv.conf") {
                self.dns.upstreams = resolv_conf_nameservers(&resolv);
            }
        }
    }

    /// The gateway address: the first host address of the bridge subnet.
    pub fn gateway(&self) -> Ipv4Addr {
        gateway_of(self.network.cidr)
    }
}

impl NetworkConfig {
    /// Checks the `[network]` section.
    fn validate(&self) -> Result<(), ConfigError> {
        validate_ifname("network.bridge", &self.bridge)?;
        if self.tap_prefix.is_empty() || self.tap_prefix.len() > 8 {
            return Err(invalid(
                "network.tap_prefix",
                format!(
                    "{:?} must be 1 to 8 bytes, leaving room for the TAP number",
                    self.tap_prefix
                ),
            ));
        }
        validate_ifname("network.tap_prefix", &self.tap_prefix)?;
        self.validate_cidr()?;
        if !(68..=65535).contains(&self.mtu) {
            return Err(invalid(
                "network.mtu",
                format!("{} is outside 68..=65535", self.mtu),
            ));
        }
        let guests = guest_capacity(self.cidr);
        if self.pool_size > guests {
            return Err(invalid(
                "network.pool_size",
                format!(
                    "{} exceeds the {} guest addresses of {}",
                    self.pool_size, guests, self.cidr
                ),
            ));
        }
        if let Some(egress) = &self.egress_interface {
            validate_ifname("network.egress_interface", egress)?;
            if egress == &self.bridge {
                return Err(invalid(
                    "network.egress_interface",
                    "must not be the bridge itself".into(),
                ));
            }
        }
        Ok(())
    }

    /// `network.cidr`: a network address, between /22 and /29 (and at most a /16 with
    /// anti-spoofing).
    fn validate_cidr(&self) -> Result<(), ConfigError> {
        let cidr = self.cidr;
        if cidr.prefix_len() > 29 {
            return Err(invalid(
                "network.cidr",
                format!("{cidr} leaves too few guest addresses (need /29 or wider)"),
            ));
        }
        if cidr.network() != cidr.addr() {
            return Err(invalid(
                "network.cidr",
                format!("{cidr} has host bits set; did you mean {}?", cidr.trunc()),
            ));
        }
        if cidr.prefix_len() < 22 {
            // One bridge takes at most 1023 ports (the kernel refuses the 1024th), so a wider
            // subnet would promise guests the bridge cannot attach.
            return Err(invalid(
                "network.cidr",
                format!(
                    "{cidr} is wider than /22: one bridge holds at most 1023 TAPs, so a /22 (1021 guests) is the widest subnet that can be used"
                ),
            ));
        }
        if self.anti_spoofing && cidr.prefix_len() < 16 {
            // The anti-spoofing set is a bitmap:ip,mac (the kernels hearth targets do not all
            // have hash:ip,mac), which holds at most a /16. (The /22 bridge limit above is
            // stricter today; this stays in case that limit goes.)
            return Err(invalid(
                "network.cidr",
                format!(
                    "{cidr} is wider than /16, the most anti-spoofing supports; narrow it or set network.anti_spoofing = false"
                ),
            ));
        }
        Ok(())
    }
}

impl DnsConfig {
    /// Checks the `[dns]` section.
    fn validate(&self) -> Result<(), ConfigError> {
        validate_zone(&self.zone)?;
        if self.port == 0 {
            return Err(invalid("dns.port", "must not be 0".into()));
        }
        if self.cache_entries > MAX_DNS_CACHE_ENTRIES {
            return Err(invalid(
                "dns.cache_entries",
                format!(
                    "{} is more than {MAX_DNS_CACHE_ENTRIES}",
                    self.cache_entries
                ),
            ));
        }
        Ok(())
    }
}

impl VmLifecycleConfig {
    /// Checks the `[vm]` section.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.agent_port == 0 {
            return Err(invalid("vm.agent_port", "must not be 0".into()));
        }
        if !["auto", "dm", "copy"].contains(&self.disk_backend.as_str()) {
            return Err(invalid(
                "vm.disk_backend",
                format!("{:?} is not one of auto, dm, copy", self.disk_backend),
            ));
        }
        Ok(())
    }
}

impl ApiConfig {
    /// Checks the `[api]` section's token rule (`api.socket` is checked with the other paths).
    fn validate(&self) -> Result<(), ConfigError> {
        if self.tcp_listen.is_some()
            && self.token.as_deref().unwrap_or("").is_empty()
            && std::env::var("HEARTH_API_TOKEN").map_or(true, |t| t.is_empty())
        {
            return Err(invalid(
                "api.token",
                "a TCP listener requires a bearer token (api.token or HEARTH_API_TOKEN)".into(),
            ));
        }
        Ok(())
    }
}

/// Overrides from the environment: `HEARTH__NETWORK__POOL_SIZE=32` sets `network.pool_size`
/// (sections and keys separated by `__`, lower-cased), `HEARTH__DATA_DIR=...` a top-level key.
pub fn env_overrides(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vars
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix("HEARTH__")?;
            let key = rest
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect::<Vec<_>>()
                .join(".");
            (!key.is_empty()).then_some((key, v))
        })
        .collect();
    out.sort();
    out
}

/// Parses a `--set key=value` argument.
pub fn parse_override(arg: &str) -> Result<(String, String), String> {
    let (k, v) = arg
        .split_once('=')
        .ok_or_else(|| format!("{arg:?} is not KEY=VALUE (e.g. network.pool_size=32)"))?;
    if k.is_empty() || k.split('.').any(str::is_empty) {
        return Err(format!(
            "{k:?} is not a dotted key (e.g. network.pool_size)"
        ));
    }
    Ok((k.to_owned(), v.to_owned()))
}

fn set_dotted(table: &mut toml::Table, key: &str, value: &str) -> Result<(), String> {
    let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().ok_or_else(|| format!("empty key {key:?}"))?;
    let mut node = table;
    for part in parts {
        node = node
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("`{key}`: `{part}` is not a section"))?;
    }
    node.insert(last.to_owned(), value);
    Ok(())
}

/// The first host address of `net`, which hearth gives the bridge.
pub fn gateway_of(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

/// How many guest addresses `net` has: all hosts but the gateway.
pub fn guest_capacity(net: Ipv4Net) -> u32 {
    let hosts = 1u64 << (32 - net.prefix_len());
    // minus network, broadcast and gateway
    u32::try_from(hosts.saturating_sub(3)).unwrap_or(u32::MAX)
}

fn invalid(field: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { field, reason }
}

/// Interface names: the one rule every actor applies (`host::links::check_ifname`).
fn validate_ifname(field: &'static str, name: &str) -> Result<(), ConfigError> {
    // The same rule the links backend applies when it creates the interface.
    hearth_actors::host::links::check_ifname(name).map_err(|_| {
        invalid(
            field,
            format!(
                "{name:?} is not a valid interface name (1-15 bytes of letters, digits, '-', '_', '.', '@')"
            ),
        )
    })
}

/// A DNS zone: dot-separated labels of letters, digits and hyphens, each 1-63 bytes.
fn validate_zone(zone: &str) -> Result<(), ConfigError> {
    let zone = zone.strip_suffix('.').unwrap_or(zone);
    let ok = !zone.is_empty()
        && zone.len() <= 200
        && zone.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "dns.zone",
            format!("{zone:?} is not a valid DNS zone (labels of letters, digits, '-')"),
        ))
    }
}

/// The interface of the IPv4 default route in `/proc/net/route` text, if any.
pub fn default_route_interface(proc_net_route: &str) -> Option<String> {
    proc_net_route.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace();
        let iface = cols.next()?;
        let dest = cols.next()?;
        let _gateway = cols.next()?;
        let _flags = cols.next()?;
        let mask = line.split_whitespace().nth(7)?;
        (dest == "00000000" && mask == "00000000").then(|| iface.to_owned())
    })
}

/// The `nameserver` addresses of resolv.conf text, as port-53 socket addresses.
pub fn resolv_conf_nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // Drop a zone index such as fe80::1%eth0: not expressible in SocketAddr.
            let addr = words.next()?.split('%').next()?;
            addr.parse::<IpAddr>().ok()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_valid_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.network.bridge, "hearth0");
        assert_eq!(c.dns.zone, "vm.internal");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/hearth"));
        assert_eq!(c.run_dir, PathBuf::from("/run/hearth/vms"));
        assert_eq!(c.api.socket, PathBuf::from("/run/hearth/hearthd.sock"));
        assert_eq!(c.vm.disk_backend, "auto");
        assert_eq!(c.gateway(), Ipv4Addr::new(172, 31, 240, 1));
        assert!(c.network.isolate_guests && c.network.anti_spoofing);
    }

    #[test]
    fn shipped_example_config_is_valid_and_matches_the_defaults() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/hearthd.example.toml"));
        let example = Config::load(path).unwrap();
        assert_eq!(example, Config::parse("").unwrap());
    }

    #[test]
    fn overrides_are_read() {
        let c = Config::parse(
            "data_dir = \"/tmp/h\"\n[network]\nbridge = \"br9\"\ncidr = \"10.9.0.0/22\"\npool_size = 4\n[dns]\nzone = \"vms.example\"\nupstreams = [\"10.0.0.2:53\"]\n",
        )
        .unwrap();
        assert_eq!(c.network.bridge, "br9");
        assert_eq!(c.network.pool_size, 4);
        assert_eq!(c.dns.upstreams, vec!["10.0.0.2:53".parse().unwrap()]);
    }

    #[test]
    fn a_bare_upstream_address_defaults_to_port_53() {
        let c = Config::parse(
            "[dns]\nupstreams = [\"10.0.0.2\", \"10.0.0.3:5353\", \"fd00::1\", \"[fd00::2]:54\"]\n",
        )
        .unwrap();
        let want: Vec<SocketAddr> = [
            "10.0.0.2:53",
            "10.0.0.3:5353",
            "[fd00::1]:53",
            "[fd00::2]:54",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        assert_eq!(c.dns.upstreams, want);
        let err = Config::parse("[dns]\nupstreams = [\"resolver.example\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("resolver.example") && err.contains("upstream"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[network]\nbrige = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("brige"), "{err}");
    }

    #[test]
    fn bad_values_name_their_field() {
        for (text, field) in [
            (
                "[network]\nbridge = \"a-very-long-bridge-name\"",
                "network.bridge",
            ),
            ("[network]\nbridge = \"a/b\"", "network.bridge"),
            ("[network]\ntap_prefix = \"\"", "network.tap_prefix"),
            (
                "[network]\ntap_prefix = \"waytoolongprefix\"",
                "network.tap_prefix",
            ),
            ("[network]\ncidr = \"10.0.0.0/30\"", "network.cidr"),
            ("[network]\ncidr = \"10.0.0.5/24\"", "network.cidr"),
            ("[network]\nmtu = 10", "network.mtu"),
            ("[network]\ncidr = \"10.0.0.0/8\"", "network.cidr"),
            ("[network]\ncidr = \"10.0.0.0/21\"", "network.cidr"),
            (
                "[network]\ncidr = \"10.0.0.0/29\"\npool_size = 6",
                "network.pool_size",
            ),
            (
                "[network]\negress_interface = \"hearth0\"",
                "network.egress_interface",
            ),
            ("[dns]\nzone = \"bad_zone\"", "dns.zone"),
            ("[dns]\nzone = \"-a.b\"", "dns.zone"),
            ("[dns]\nport = 0", "dns.port"),
            ("[dns]\ncache_entries = 100001", "dns.cache_entries"),
            ("data_dir = \"relative\"", "data_dir"),
            (
                "run_dir = \"/a/very/long/run/directory/path/that/goes/on/and/on\"",
                "run_dir",
            ),
            ("firecracker_bin = \"firecracker\"", "firecracker_bin"),
            ("[vm]\ndisk_backend = \"zfs\"", "vm.disk_backend"),
            ("[vm]\nagent_port = 0", "vm.agent_port"),
            ("[store]\nsynchronous = \"off\"", "synchronous"),
            ("[api]\ntcp_listen = \"127.0.0.1:7070\"", "api.token"),
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
    }

    #[test]
    fn overrides_apply_on_top_and_are_validated() {
        let overrides = vec![
            ("network.pool_size".to_owned(), "4".to_owned()),
            ("dns.zone".to_owned(), "vms.test".to_owned()),
            ("firecracker_bin".to_owned(), "/opt/fc".to_owned()),
        ];
        let c = Config::parse_with_overrides("[network]\npool_size = 9\n", &overrides).unwrap();
        assert_eq!(c.network.pool_size, 4);
        assert_eq!(c.dns.zone, "vms.test");
        assert_eq!(c.firecracker_bin, Some(PathBuf::from("/opt/fc")));
        let bad = vec![("network.mtu".to_owned(), "5".to_owned())];
        let err = Config::parse_with_overrides("", &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("network.mtu"), "{err}");
        let unknown = vec![("network.nope".to_owned(), "1".to_owned())];
        let err = Config::parse_with_overrides("", &unknown)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
        let not_section = vec![("data_dir.x".to_owned(), "1".to_owned())];
        let err = Config::parse_with_overrides("data_dir = \"/a\"", &not_section)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a section"), "{err}");
    }

    #[test]
    fn env_and_flag_overrides_are_read() {
        let env = vec![
            ("HEARTH__NETWORK__POOL_SIZE".to_owned(), "8".to_owned()),
            ("HEARTH__DATA_DIR".to_owned(), "/srv/h".to_owned()),
            ("HEARTH_LOG".to_owned(), "debug".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        assert_eq!(
            env_overrides(env.into_iter()),
            vec![
                ("data_dir".to_owned(), "/srv/h".to_owned()),
                ("network.pool_size".to_owned(), "8".to_owned())
            ]
        );
        assert_eq!(
            parse_override("vm.stop_on_exit=true").unwrap(),
            ("vm.stop_on_exit".to_owned(), "true".to_owned())
        );
        assert!(parse_override("novalue").is_err());
        assert!(parse_override("a..b=1").is_err());
    }

    #[test]
    fn default_route_is_found() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     ens3\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_interface(table).as_deref(), Some("ens3"));
        assert_eq!(default_route_interface("Iface\tDestination\n"), None);
    }

    #[test]
    fn nameservers_are_parsed() {
        let text = "# comment\nsearch example\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver bogus\n";
        assert_eq!(
            resolv_conf_nameservers(text),
            vec![
                "10.0.0.2:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn capacity_excludes_gateway() {
        assert_eq!(guest_capacity("10.0.0.0/24".parse().unwrap()), 253);
        assert_eq!(guest_capacity("10.0.0.0/29".parse().unwrap()), 5);
    }
}

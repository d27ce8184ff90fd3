//! The real firewall backend: `iptables-restore`/`iptables -S` (nft or legacy flavour) for the
//! static rules, `ipset restore` for atomic set rebuilds, libipset (the `ipset` crate)
//! in-process for per-guest set membership, `nft -f -` for the bridge-family table as a whole
//! and `nf_tables` netlink ([`super::nft_netlink`]) in-process for its per-guest elements.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use ipset::types::{BitmapIpMac, EnvOption, HashIp, IpDataType, MacDataType};
use ipset::Session;

use super::nft_netlink::{NftError, NftSocket};
use super::{Firewall, FirewallError, LeaseChange, PublishChange, SetEntry, Table};
use crate::host::hairpin::{HairpinSpec, Proxies};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Seconds iptables waits for the xtables lock before failing.
const XTABLES_WAIT_SECS: &str = "10";

/// Which iptables binaries to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IptablesFlavor {
    /// `iptables` / `iptables-restore`: whatever the system's alternatives point to.
    #[default]
    System,
    /// `iptables-nft` / `iptables-nft-restore` (`nf_tables` kernel API).
    Nft,
    /// `iptables-legacy` / `iptables-legacy-restore` (`x_tables` kernel API).
    Legacy,
}

impl IptablesFlavor {
    /// The `iptables` binary.
    #[must_use]
    pub fn iptables(self) -> &'static str {
        match self {
            IptablesFlavor::System => "iptables",
            IptablesFlavor::Nft => "iptables-nft",
            IptablesFlavor::Legacy => "iptables-legacy",
        }
    }

    /// The `iptables-restore` binary.
    #[must_use]
    pub fn iptables_restore(self) -> &'static str {
        match self {
            IptablesFlavor::System => "iptables-restore",
            IptablesFlavor::Nft => "iptables-nft-restore",
            IptablesFlavor::Legacy => "iptables-legacy-restore",
        }
    }
}

/// Arguments of `iptables` that print a table's rules (waiting for the xtables lock).
#[must_use]
pub fn list_args(table: Table) -> Vec<&'static str> {
    vec!["-w", XTABLES_WAIT_SECS, "-t", table.name(), "-S"]
}

/// Arguments of `iptables-restore` that apply a text without flushing the tables (waiting
/// for the xtables lock).
#[must_use]
pub fn restore_args() -> Vec<&'static str> {
    vec!["-w", XTABLES_WAIT_SECS, "--noflush"]
}

/// The firewall of the calling thread's network namespace. The libipset sessions (one per
/// set, kept for speed) and the `nf_tables` socket bind their netlink socket to the namespace of
/// the thread that first uses them: keep one `LinuxFirewall` on one thread (the actor's).
pub struct LinuxFirewall {
    flavor: IptablesFlavor,
    ip_sets: HashMap<String, Session<HashIp>>,
    ip_mac_sets: HashMap<String, Session<BitmapIpMac>>,
    nft: Option<NftSocket>,
    /// The hairpin proxies of published ports (their sockets are this thread's namespace's).
    hairpin: Proxies,
}

impl LinuxFirewall {
    /// A backend running the given iptables flavour. Nothing is touched until a call.
    #[must_use]
    pub fn new(flavor: IptablesFlavor) -> Self {
        Self {
            flavor,
            ip_sets: HashMap::new(),
            ip_mac_sets: HashMap::new(),
            nft: None,
            hairpin: Proxies::new(),
        }
    }

    /// The iptables flavour in use.
    #[must_use]
    pub fn flavor(&self) -> IptablesFlavor {
        self.flavor
    }

    /// The `nf_tables` netlink socket, opened on first use.
    fn nft_socket(&mut self) -> Result<&mut NftSocket, NftError> {
        let socket = match self.nft.take() {
            Some(socket) => socket,
            None => NftSocket::open().map_err(|source| NftError::Io {
                what: "open a netlink socket to nf_tables".into(),
                source,
            })?,
        };
        Ok(self.nft.insert(socket))
    }

    fn ip_session(&mut self, set: &str) -> &mut Session<HashIp> {
        self.ip_sets
            .entry(set.to_owned())
            .or_insert_with(|| new_session(set))
    }

    fn ip_mac_session(&mut self, set: &str) -> &mut Session<BitmapIpMac> {
        self.ip_mac_sets
            .entry(set.to_owned())
            .or_insert_with(|| new_session(set))
    }
}

/// A libipset session on one set, with `-exist` semantics: adding a present entry and
/// deleting an absent one are not errors, and adding `ip,mac` replaces the MAC.
fn new_session<T: ipset::types::SetType>(set: &str) -> Session<T> {
    // libipset registers its set types in a process-wide list on first use; keep two
    // threads (two actors, parallel tests) from doing that at once.
    static LIBIPSET_INIT: Mutex<()> = Mutex::new(());
    let guard = LIBIPSET_INIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut session = Session::new(set.to_owned());
    drop(guard);
    session.set_option(EnvOption::Exist);
    session
}

/// libipset opens a session's netlink socket on its first command, without `SOCK_CLOEXEC`:
/// mark it close-on-exec so no child (iptables, a VMM) inherits it. One syscall.
fn cloexec_libipset_socket() {
    // Cannot fail on a kernel with close_range (5.11); the VMM spawn closes everything anyway.
    let _ = crate::host::processes::spawn::mark_cloexec_from(3);
}

fn ipset_message(err: ipset::types::Error) -> String {
    use ipset::types::Error;
    match err {
        Error::Cmd(m, _) | Error::DataSet(m, _) | Error::TypeGet(m, _) => m.trim().to_owned(),
        other => other.to_string(),
    }
}

/// Runs `program args`, feeding `stdin`; returns stdout, or an error naming the command
/// and carrying its stderr.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, FirewallError> {
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let spawn_err = |source| FirewallError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error (the tool exited early) shows up as its exit status and stderr.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(FirewallError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

impl Firewall for LinuxFirewall {
    fn interface_exists(&mut self, name: &str) -> Result<bool, FirewallError> {
        match nix::net::if_::if_nametoindex(name) {
            Ok(_) => Ok(true),
            Err(nix::Error::ENODEV) => Ok(false),
            Err(source) => Err(FirewallError::Interface {
                name: name.to_owned(),
                source,
            }),
        }
    }

    fn ip_forward(&mut self) -> Result<bool, FirewallError> {
        let text = std::fs::read_to_string(IP_FORWARD).map_err(|source| FirewallError::Sysctl {
            path: IP_FORWARD,
            source,
        })?;
        Ok(text.trim() != "0")
    }

    fn set_ip_forward(&mut self, on: bool) -> Result<(), FirewallError> {
        std::fs::write(IP_FORWARD, if on { "1\n" } else { "0\n" }).map_err(|source| {
            FirewallError::Sysctl {
                path: IP_FORWARD,
                source,
            }
        })
    }

    fn set_route_localnet(&mut self, interface: &str, on: bool) -> Result<(), FirewallError> {
        // An interface name never holds `/` (the kernel refuses it): the path stays in `conf/`.
        let path = format!("/proc/sys/net/ipv4/conf/{interface}/route_localnet");
        if interface.is_empty() || interface.contains('/') || interface.starts_with('.') {
            return Err(FirewallError::InterfaceSysctl {
                path,
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            });
        }
        std::fs::write(&path, if on { "1\n" } else { "0\n" })
            .map_err(|source| FirewallError::InterfaceSysctl { path, source })
    }

    fn list_rules(&mut self, table: Table) -> Result<String, FirewallError> {
        run(self.flavor.iptables(), &list_args(table), None)
    }

    fn probe_port(
        &mut self,
        protocol: hearth_proto::api_publish::Protocol,
        addr: Option<std::net::Ipv4Addr>,
        port: u16,
    ) -> Result<super::PortProbe, FirewallError> {
        super::port_probe::probe(protocol, addr, port)
    }

    fn probe_port_beside(
        &mut self,
        protocol: hearth_proto::api_publish::Protocol,
        port: u16,
        beside: std::net::Ipv4Addr,
    ) -> Result<super::PortProbe, FirewallError> {
        super::port_probe::probe_beside(protocol, port, beside)
    }

    fn open_hairpin(&mut self, spec: &HairpinSpec, port: u16) -> Result<u16, FirewallError> {
        self.hairpin
            .open(spec, port)
            .map_err(|source| FirewallError::Hairpin {
                what: format!("{}/{} on {}", spec.target, spec.protocol, spec.bind),
                source,
            })
    }

    fn close_hairpin(&mut self, protocol: hearth_proto::api_publish::Protocol, port: u16) {
        self.hairpin.close(protocol, port);
    }

    fn restore_rules(&mut self, text: &str) -> Result<(), FirewallError> {
        run(self.flavor.iptables_restore(), &restore_args(), Some(text)).map(drop)
    }

    fn list_sets(&mut self) -> Result<Vec<String>, FirewallError> {
        let out = run("ipset", &["list", "-n"], None)?;
        Ok(out.lines().map(str::to_owned).collect())
    }

    fn restore_sets(&mut self, text: &str) -> Result<(), FirewallError> {
        run("ipset", &["restore"], Some(text)).map(drop)
    }

    fn add_to_set(&mut self, set: &str, entry: SetEntry) -> Result<(), FirewallError> {
        let result = match entry {
            SetEntry::Ip(ip) => self.ip_session(set).add(IpDataType::from(ip), &[]),
            SetEntry::IpMac(ip, mac) => self
                .ip_mac_session(set)
                .add((IpDataType::from(ip), MacDataType::from(mac.0)), &[]),
        };
        cloexec_libipset_socket();
        result.map(drop).map_err(|e| FirewallError::Ipset {
            op: format!("add {entry} to {set}"),
            message: ipset_message(e),
        })
    }

    fn remove_from_set(&mut self, set: &str, entry: SetEntry) -> Result<(), FirewallError> {
        let result = match entry {
            SetEntry::Ip(ip) => self.ip_session(set).del(IpDataType::from(ip)),
            SetEntry::IpMac(ip, mac) => self
                .ip_mac_session(set)
                .del((IpDataType::from(ip), MacDataType::from(mac.0))),
        };
        cloexec_libipset_socket();
        result.map(drop).map_err(|e| FirewallError::Ipset {
            op: format!("del {entry} from {set}"),
            message: ipset_message(e),
        })
    }

    fn apply_nft(&mut self, text: &str) -> Result<(), FirewallError> {
        run("nft", &["-f", "-"], Some(text)).map(drop)
    }

    fn update_port_leases(
        &mut self,
        table: &str,
        set: &str,
        changes: &[LeaseChange],
    ) -> Result<(), FirewallError> {
        let err = |source| FirewallError::Nftables {
            set: format!("bridge {table} {set}"),
            source,
        };
        let socket = self.nft_socket().map_err(err)?;
        let result = socket.apply(table, set, changes);
        if let Err(NftError::Io { .. }) = result {
            // A socket in an unknown state: the next call opens a fresh one.
            self.nft = None;
        }
        result.map_err(err)
    }

    fn update_published(&mut self, changes: &[PublishChange]) -> Result<(), FirewallError> {
        let err = |source| FirewallError::Nftables {
            set: format!("ip {}", super::nft_publish::TABLE),
            source,
        };
        if changes.is_empty() {
            return Ok(());
        }
        let socket = self.nft_socket().map_err(err)?;
        let (buf, steps) = super::nft_publish::batch(changes, socket.next_seq());
        let result = socket.send_batch(&buf, &steps);
        if let Err(NftError::Io { .. }) = result {
            // A socket in an unknown state: the next call opens a fresh one.
            self.nft = None;
        }
        result.map_err(err)
    }

    fn update_egress(
        &mut self,
        table: &str,
        changes: &[super::nft_egress::EgressChange],
    ) -> Result<(), FirewallError> {
        let err = |source| FirewallError::Nftables {
            set: format!("ip {table}"),
            source,
        };
        let socket = self.nft_socket().map_err(err)?;
        let result = super::nft_egress::apply(socket, table, changes);
        if let Err(NftError::Io { .. }) = result {
            self.nft = None;
        }
        result.map_err(err)
    }

    fn list_nft(&mut self, object: &str) -> Result<Option<String>, FirewallError> {
        let mut args = vec!["-j", "list"];
        args.extend(object.split_whitespace());
        match run("nft", &args, None) {
            Ok(out) => Ok(Some(out)),
            Err(FirewallError::Command { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn destroy_set(&mut self, set: &str) -> Result<(), FirewallError> {
        let result = self.ip_session(set).destroy();
        cloexec_libipset_socket();
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let message = ipset_message(e);
                if message.contains("does not exist") {
                    Ok(())
                } else {
                    Err(FirewallError::Ipset {
                        op: format!("destroy {set}"),
                        message,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_waits_for_the_xtables_lock() {
        assert_eq!(list_args(Table::Nat), ["-w", "10", "-t", "nat", "-S"]);
        assert_eq!(restore_args(), ["-w", "10", "--noflush"]);
        assert_eq!(
            IptablesFlavor::Legacy.iptables_restore(),
            "iptables-legacy-restore"
        );
        assert_eq!(IptablesFlavor::default().iptables(), "iptables");
    }

    #[test]
    fn missing_binary_is_named() {
        let err = run("hearth-no-such-binary", &["-x"], None).unwrap_err();
        assert!(matches!(err, FirewallError::Spawn { .. }));
        assert!(
            err.to_string().contains("hearth-no-such-binary -x"),
            "{err}"
        );
    }

    #[test]
    fn failing_command_carries_stderr() {
        let err = run("sh", &["-c", "echo boom >&2; exit 3"], None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("boom") && text.contains("sh -c"), "{text}");
    }

    #[test]
    fn stdin_is_fed() {
        assert_eq!(run("cat", &[], Some("abc")).unwrap(), "abc");
    }
}

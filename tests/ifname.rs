//! One rule for interface names: whatever hearthd's configuration accepts as a bridge name,
//! TAP prefix or egress interface, every actor built from it accepts too (and what one refuses,
//! all refuse). Before, config checked the kernel's rule while `NatActor::new` had a stricter
//! copy of its own, so hearthd started with a valid-looking config and died at start-up.

use hearth::config::Config;
use hearth_actors::nat::{NatActor, NatConfig};
use hearth_actors::tap_pool::TapPoolConfig;

/// Names on both sides of the old disagreements: kernel-valid names the NAT copy refused
/// (`+` is an iptables wildcard, `*` an nft glob, `!`, `#`, `,`, `%` change a rule's parse),
/// names the NAT copy accepted and the kernel refuses (`.`, `..`), and plain ones.
const NAMES: &[&str] = &[
    "hearth0", "br-1_x.2", "v@1", "hearth+", "br*", "br!0", "br#0", "br,0", "br%0", ".", "..",
    "br\"0",
];

fn config_accepts(key: &str, name: &str) -> bool {
    let text = format!("[network]\n{key} = {}\n", toml_string(name));
    Config::parse(&text).is_ok()
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn nat_accepts(bridge: &str, egress: Option<&str>) -> bool {
    let defaults = Config::parse("").expect("defaults");
    let config = NatConfig {
        bridge: bridge.into(),
        cidr: defaults.network.cidr,
        gateway: defaults.gateway(),
        egress: egress.map(str::to_owned),
        guest_ports: "hth".into(),
        isolate_guests: true,
        block_guest_to_host: true,
        anti_spoofing: true,
    };
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let firewall = hearth_actors::host::firewall::fake::FakeFirewall::new();
    NatActor::new(config, Box::new(firewall), log).is_ok()
}

fn pool_accepts(bridge: &str) -> bool {
    TapPoolConfig {
        bridge: bridge.into(),
        ..TapPoolConfig::default()
    }
    .validate()
    .is_ok()
}

#[test]
fn config_and_actors_agree_on_bridge_names() {
    for name in NAMES {
        let config = config_accepts("bridge", name);
        assert_eq!(
            nat_accepts(name, Some("eth0")),
            config,
            "NatActor vs config on {name:?}"
        );
        assert_eq!(pool_accepts(name), config, "TapPool vs config on {name:?}");
    }
    // The case that killed hearthd at start-up is refused up front now.
    assert!(!config_accepts("bridge", "hearth+"));
    assert!(config_accepts("bridge", "br-1_x.2"));
}

#[test]
fn config_and_nat_agree_on_egress_names() {
    for name in NAMES {
        if *name == "hearth0" {
            continue; // the bridge itself, refused for another reason
        }
        let config = config_accepts("egress_interface", name);
        assert_eq!(
            nat_accepts("hearth0", Some(name)),
            config,
            "NatActor vs config on egress {name:?}"
        );
    }
}

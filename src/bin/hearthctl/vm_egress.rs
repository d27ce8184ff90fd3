//! `hearthctl vm egress NAME [--egress allow|deny] [--allow CIDR[:PORT]]... [--allow-domain D]...`:
//! shows a VM's egress policy, or replaces it (running or not); the same flags on `vm create`.

use clap::Args;
use hearth::client::{ApiPath, Client, Method};
use hearth_proto::api_egress::{EgressMode, EgressPolicy, EgressStatus};

use crate::output::print_json;
use crate::{usage, Out};

/// The egress flags of `vm create` and `vm egress`.
#[derive(Debug, Args, Default)]
pub(crate) struct EgressArgs {
    /// Egress mode: allow (default: anything NAT reaches) or deny (only hearth's DNS,
    /// --allow and --allow-domain). Implied deny when --allow or --allow-domain is given.
    #[arg(long = "egress", value_parser = parse_mode)]
    mode: Option<EgressMode>,
    /// A CIDR, or CIDR:PORT (TCP and UDP), a deny-mode guest may reach (repeatable).
    #[arg(long = "allow")]
    allow: Vec<String>,
    /// A domain (or `*.domain`: subdomains only) whose addresses, as hearth's DNS answers
    /// them to the guest, it may reach (repeatable).
    #[arg(long = "allow-domain")]
    allow_domains: Vec<String>,
}

fn parse_mode(s: &str) -> Result<EgressMode, String> {
    s.parse()
}

impl EgressArgs {
    /// The policy the flags give, or `None` when no egress flag was given.
    pub(crate) fn policy(&self) -> Option<EgressPolicy> {
        if self.mode.is_none() && self.allow.is_empty() && self.allow_domains.is_empty() {
            return None;
        }
        Some(EgressPolicy {
            mode: self.mode.unwrap_or(EgressMode::Deny),
            allow: self.allow.clone(),
            allow_domains: self.allow_domains.clone(),
        })
    }

    /// What `vm create` sends: nothing for the default policy.
    pub(crate) fn for_create(&self) -> Option<EgressPolicy> {
        self.policy().filter(|p| *p != EgressPolicy::default())
    }
}

fn egress_path(name: &str) -> ApiPath {
    ApiPath::new("/v1/vms").segment(name).segment("egress")
}

fn show(json: bool, status: &EgressStatus) {
    if json {
        print_json(status);
        return;
    }
    println!("mode: {}", status.policy.mode.as_str());
    for a in &status.policy.allow {
        println!("allow: {a}");
    }
    for d in &status.policy.allow_domains {
        println!("allow-domain: {d}");
    }
    if let Some(n) = status.denied_packets {
        println!("denied packets: {n}");
    }
}

/// `hearthctl vm egress NAME [flags]`: without flags shows the policy, with flags replaces it
/// (checked here first: bad input is exit 2, nothing sent).
pub(crate) fn run(c: &Client, json: bool, name: &str, args: &EgressArgs) -> Out {
    let Some(policy) = args.policy() else {
        let status: EgressStatus = c.get(egress_path(name))?;
        show(json, &status);
        return Ok(());
    };
    hearth_proto::api_egress::validate_egress("egress", &policy)
        .map_err(|e| usage(e.to_string()))?;
    let status: EgressStatus = c.send_json(Method::PUT, egress_path(name), &[], &policy)?;
    show(json, &status);
    Ok(())
}

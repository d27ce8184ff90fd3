//! `hearthctl vm port|publish|unpublish`: a VM's published ports (`[HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|udp]`).

use hearth::client::{ApiPath, Client, Method};
use hearth_proto::api_publish::PortMapping;

use crate::output::print_json;
use crate::{usage, Out};

/// Parses a `--publish` / `vm publish` value, refusing it here (exit 2) when it is bad.
pub(crate) fn parse_mapping(s: &str) -> Result<PortMapping, String> {
    s.parse::<PortMapping>().map_err(|e| e.to_string())
}

fn ports_path(name: &str) -> ApiPath {
    ApiPath::new("/v1/vms").segment(name).segment("ports")
}

fn show(json: bool, ports: &[PortMapping]) {
    if json {
        print_json(&ports);
    } else {
        for m in ports {
            println!("{m}");
        }
    }
}

/// `hearthctl vm port NAME`: one line per published port.
pub(crate) fn list(c: &Client, json: bool, name: &str) -> Out {
    let ports: Vec<PortMapping> = c.get(ports_path(name))?;
    show(json, &ports);
    Ok(())
}

/// `hearthctl vm publish NAME MAPPING` / `vm unpublish NAME MAPPING`.
pub(crate) fn change(c: &Client, json: bool, name: &str, mapping: PortMapping, add: bool) -> Out {
    hearth_proto::api_publish::validate_publish("mapping", &[mapping])
        .map_err(|e| usage(e.to_string()))?;
    let method = if add { Method::POST } else { Method::DELETE };
    let ports: Vec<PortMapping> = c.send_json(method, ports_path(name), &[], &mapping)?;
    show(json, &ports);
    Ok(())
}

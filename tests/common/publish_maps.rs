//! hearth's nftables publish table as the kernel lists it: the elements of its maps.
//!
//! Use with `mod common; use common::publish_maps;`.

use super::NetNs;

/// The elements of hearth's nftables publish maps `maps`, as `nft` lists them
/// (`tcp . 8080 : 172.31.240.5 . 80`); none when the table is absent.
pub fn map_elements(ns: &NetNs, maps: &[&str]) -> Vec<String> {
    let out = ns.exec(&["nft", "list", "table", "ip", "hearth-publish"]);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut elements = Vec::new();
    for section in listing.split("\tmap ").skip(1) {
        let name = section.split_whitespace().next().unwrap_or_default();
        let body = section.split("\t}").next().unwrap_or_default();
        if !maps.contains(&name) {
            continue;
        }
        if let Some(at) = body.find("elements = {") {
            let rest = &body[at + "elements = {".len()..];
            let end = rest.find('}').expect("an element list ends");
            elements.extend(
                rest[..end]
                    .split(',')
                    .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "))
                    .filter(|e| !e.is_empty()),
            );
        }
    }
    elements
}

/// The translations of published ports to guests.
pub fn published_elements(ns: &NetNs) -> Vec<String> {
    map_elements(ns, &["addr", "any"])
}

/// The translations of guests' packets to published ports to hairpin proxies.
pub fn hairpin_elements(ns: &NetNs) -> Vec<String> {
    map_elements(ns, &["hairpin_addr", "hairpin_any"])
}

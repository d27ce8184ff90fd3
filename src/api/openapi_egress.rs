//! The egress-policy part of the `OpenAPI` document ([`super::openapi`]):
//! `/v1/vms/{name}/egress` and the `egress` field of `CreateVm`.

use hearth_proto::api_egress::{MAX_ALLOW, MAX_ALLOW_DOMAINS};
use serde_json::{json, Value};

use super::openapi::{json_body, json_response, responses, schema, vm_name_param, BODY};

/// `A.B.C.D[/N][:PORT]`: every value the server's parser takes (octets 0-255 without
/// leading zeros beyond one digit, prefix 0-32, port 1-65535).
const ALLOW: &str = "^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(/(3[0-2]|[12]?[0-9]))?(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?$";

/// A domain name, or `*.` and one: labels of 1-63 letters, digits, `-`, `_`, not starting or
/// ending with `-`; a trailing dot allowed (the 253-byte limit is `maxLength` with room for
/// `*.` and the dot).
const DOMAIN: &str = "^(\\*\\.)?([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\\.?$";

fn policy_schema() -> Value {
    json!({
        "type": "object", "additionalProperties": false,
        // The lists need mode deny: either mode is deny, or both lists are empty or absent.
        "anyOf": [
            {"required": ["mode"], "properties": {"mode": {"const": "deny"}}},
            {"properties": {"allow": {"maxItems": 0}, "allow_domains": {"maxItems": 0}}},
        ],
        "properties": {
            "mode": {"type": "string", "enum": ["allow", "deny"], "default": "allow",
                "description": "allow: no restriction; deny: only hearth's DNS, allow and \
                                allow_domains"},
            "allow": {"type": "array", "maxItems": MAX_ALLOW,
                "items": {"type": "string", "pattern": ALLOW},
                "description": "CIDR or CIDR:PORT (TCP and UDP) a deny-mode guest may reach; \
                                only with mode deny (else 400)"},
            "allow_domains": {"type": "array", "maxItems": MAX_ALLOW_DOMAINS,
                "items": {"type": "string", "pattern": DOMAIN, "maxLength": 253},
                "description": "Names (or *.name: subdomains only) whose addresses, as \
                                hearth's DNS answers them to the guest, it may reach for the \
                                records' TTL; only with mode deny (else 400)"},
        }
    })
}

/// Adds the egress parts to the core document `doc`.
pub fn extend(doc: &mut Value) {
    let mut change: Vec<(&str, &str)> = vec![
        (
            "400",
            "Invalid body or query parameter, or lists with mode allow",
        ),
        ("404", "No such VM"),
        ("409", "The VM is being deleted"),
        ("500", "The firewall or DNS change failed"),
        ("503", "hearthd is shutting down"),
    ];
    change.extend(BODY);
    doc["paths"]["/v1/vms/{name}/egress"] = json!({
        "get": {
            "operationId": "getEgress",
            "summary": "A VM's egress policy, with the packets dropped for it in deny mode",
            "parameters": [vm_name_param()],
            "responses": responses(&[("200", json_response("The policy",
                schema("EgressStatus")))], &[
                ("400", "Invalid query parameter"),
                ("404", "No such VM"),
            ]),
        },
        "put": {
            "operationId": "setEgress",
            "summary": "Replace a VM's egress policy (running or not; new connections at once)",
            "parameters": [vm_name_param()],
            "requestBody": json_body("EgressPolicy"),
            "responses": responses(&[("200", json_response("The policy",
                schema("EgressStatus")))], &change),
        },
    });
    let schemas = &mut doc["components"]["schemas"];
    schemas["EgressPolicy"] = policy_schema();
    let mut status = policy_schema();
    status["additionalProperties"] = json!(true);
    status["properties"]["denied_packets"] = json!({"type": "integer", "minimum": 0});
    schemas["EgressStatus"] = status;
    schemas["CreateVm"]["properties"]["egress"] = schema("EgressPolicy");
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::api_egress::{check_domain, AllowRule};

    fn matches(pattern: &str, s: &str) -> bool {
        regex_lite::Regex::new(pattern).unwrap().is_match(s)
    }

    #[test]
    fn patterns_admit_what_the_server_parses_and_nothing_it_refuses() {
        for s in [
            "10.0.0.0/8",
            "1.2.3.4",
            "1.2.3.4:65535",
            "0.0.0.0/0",
            "255.255.255.255/32:1",
            "10.0.0.0/8:0",
            "10.0.0.0/33",
            "1.2.3",
            "01.2.3.4",
            "1.2.3.4:65536",
            "a.b.c.d",
        ] {
            assert_eq!(matches(ALLOW, s), s.parse::<AllowRule>().is_ok(), "{s}");
        }
        for s in [
            "api.github.com",
            "*.pypi.org",
            "example.com.",
            "a_b.c",
            "-a.b",
            "a-.b",
            "a..b",
            "*",
            "*.",
            "a.*.b",
            "x",
        ] {
            assert_eq!(matches(DOMAIN, s), check_domain(s).is_ok(), "{s}");
        }
    }
}

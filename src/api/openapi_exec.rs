//! The exec and archive part of the `OpenAPI` document ([`super::openapi`]): paths and
//! schemas, with the same constraints the handlers enforce (`hearth_proto::agent::exec` and
//! `files`).

use serde_json::{json, Map, Value};

use super::openapi::{json_body, json_response, responses, schema, vm_name_param, BODY};
use hearth_proto::agent::exec::{MAX_ARGS, MAX_ENV, MAX_EXEC_TIMEOUT_MS};
use hearth_proto::agent::files::MAX_PATH;
use hearth_proto::api_exec::{PATH_STAT_HEADER, SUBPROTOCOL};

/// A session id: what `SessionId::parse` accepts.
const SESSION_ID: &str = "^[A-Za-z0-9_-]{1,64}$";

/// Statuses every exec and archive operation can answer besides its own.
const GUEST: [(&str, &str); 5] = [
    (
        "404",
        "No such VM (not_found), session (no_such_session) or guest path (not_found)",
    ),
    (
        "409",
        "The VM is not running (invalid_state), or its agent does not support the operation \
         (agent_unsupported)",
    ),
    (
        "429",
        "Too many agent connections to this VM, or too many sessions in its agent",
    ),
    (
        "502",
        "The guest agent is unreachable, failed, or broke the protocol (agent_unreachable, \
         agent_error, agent_protocol, agent_stream)",
    ),
    ("500", "Internal error"),
];

fn guest(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    GUEST.iter().copied().chain(extra.iter().copied()).collect()
}

fn id_param() -> Value {
    json!({"name": "id", "in": "path", "required": true,
           "schema": {"type": "string", "pattern": SESSION_ID}})
}

fn path_param(description: &str) -> Value {
    json!({"name": "path", "in": "query", "required": true, "description": description,
           "schema": {"type": "string", "pattern": "^/[^\\u0000]*$", "maxLength": MAX_PATH}})
}

fn stat_header() -> Value {
    json!({(PATH_STAT_HEADER): {"description": "The path's PathStat as JSON (non-ASCII escaped)",
        "schema": {"type": "string"}}})
}

/// Signal names `parse_signal` knows, with or without `SIG`, in any case.
const SIGNAL_NAMES: [&str; 30] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ",
    "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

/// `[Hh][Uu][Pp]`: case-insensitive without inline flags (JSON Schema regexes have none).
fn any_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() * 4);
    for c in name.chars() {
        out.push('[');
        out.push(c.to_ascii_uppercase());
        out.push(c.to_ascii_lowercase());
        out.push(']');
    }
    out
}

/// The pattern of `ExecSignal.signal`: 1..=64 or a known name.
fn signal_pattern() -> String {
    let names: Vec<String> = SIGNAL_NAMES.iter().copied().map(any_case).collect();
    format!(
        "^([1-9]|[1-5][0-9]|6[0-4]|({})?({}))$",
        any_case("SIG"),
        names.join("|")
    )
}

/// The exec and archive paths.
#[must_use]
pub fn paths() -> Map<String, Value> {
    let mut out = exec_paths();
    out.insert("/v1/vms/{name}/archive".into(), archive_path());
    out
}

fn exec_paths() -> Map<String, Value> {
    let with_body = |extra: &[(&'static str, &'static str)]| {
        let mut v = guest(extra);
        v.extend(BODY);
        v
    };
    let mut out = Map::new();
    out.insert(
        "/v1/vms/{name}/exec".into(),
        json!({"post": {
            "operationId": "createExec",
            "summary": "Start a command in the guest, detached: its output is kept (ring buffers) \
                        until a client attaches",
            "parameters": [vm_name_param()],
            "requestBody": json_body("ExecCreate"),
            "responses": responses(&[("201", json_response("The session", schema("ExecCreated")))],
                &with_body(&[("400", "Invalid body, field or query parameter")])),
        }}),
    );
    out.insert(
        "/v1/vms/{name}/execs".into(),
        json!({"get": {
            "operationId": "listExecs",
            "summary": "The agent's sessions (running, and the most recent exited ones)",
            "parameters": [vm_name_param()],
            "responses": responses(&[("200", json_response("The sessions", schema("ExecList")))],
                &guest(&[])),
        }}),
    );
    out.insert(
        "/v1/vms/{name}/execs/{id}".into(),
        json!({"get": {
            "operationId": "getExec",
            "summary": "One session",
            "parameters": [vm_name_param(), id_param()],
            "responses": responses(&[("200", json_response("The session", schema("ExecInfo")))],
                &guest(&[("400", "Invalid session id or query parameter")])),
        }}),
    );
    out.insert(
        "/v1/vms/{name}/execs/{id}/signal".into(),
        json!({"post": {
            "operationId": "signalExec",
            "summary": "Send a signal to the session's process group",
            "parameters": [vm_name_param(), id_param()],
            "requestBody": json_body("ExecSignal"),
            "responses": responses(&[("204", json!({"description": "Sent"}))],
                &with_body(&[("400", "Invalid body, signal, session id or query parameter")])),
        }}),
    );
    out.insert("/v1/vms/{name}/execs/{id}/attach".into(), json!({"get": {
        "operationId": "attachExec",
        "summary": "Attach over a WebSocket (subprotocol v5.channel.k8s.io): the kept output \
                    first, then live",
        "description": format!("A WebSocket upgrade offering the subprotocol {SUBPROTOCOL}. \
            Every message is binary, its first byte a channel: 0 stdin, 1 stdout, 2 stderr, \
            3 status (a Kubernetes Status as JSON, last), 4 resize (JSON {{\"Width\",\"Height\"}}), \
            255 close (payload [0]: stdin EOF). Client messages are at most {} bytes. A request \
            that is not such an upgrade answers 400. Closing the WebSocket detaches; the \
            session keeps running.", super::attach::MAX_MESSAGE),
        "parameters": [vm_name_param(), id_param(),
            {"name": "stdin", "in": "query", "required": false,
             "description": "This client writes the session's stdin",
             "schema": {"type": "boolean", "default": false}}],
        "responses": responses(&[("101", json!({"description": "Switching to the WebSocket"}))],
            &guest(&[("400", "Not a WebSocket upgrade offering the subprotocol, or an invalid \
                              session id or query parameter")])),
    }}));
    out
}

fn archive_path() -> Value {
    let mut ok_get = json!({"description": "The path as a tar stream (cut short, not ended, \
        when it passes the configured maximum or the agent fails)",
        "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}});
    ok_get["headers"] = stat_header();
    let mut ok_head = json!({"description": "The path exists"});
    ok_head["headers"] = stat_header();
    json!({
        "put": {
            "operationId": "putArchive",
            "summary": "Extract a tar stream into an existing guest directory",
            "parameters": [vm_name_param(), path_param("The guest directory (absolute)")],
            // Declared as octet-stream, which generic clients can send; `application/x-tar`
            // (what hearthctl sends) and no type at all are accepted too.
            "requestBody": {"required": true,
                "description": "A tar stream (Content-Type application/x-tar or \
                                application/octet-stream)",
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": responses(&[("200", json_response("What was written",
                    schema("ArchiveSummary")))],
                &guest(&[
                    ("400", "Invalid path or query parameter, the path is not a directory \
                             (not_a_directory), or the archive is refused (archive)"),
                    ("403", "The guest refused to write there (permission_denied)"),
                    ("413", "The archive is larger than the configured maximum"),
                    ("415", "Content-Type is neither application/x-tar nor application/octet-stream"),
                    ("408", "The body stalled: no bytes within the body deadline"),
                ])),
        },
        "get": {
            "operationId": "getArchive",
            "summary": "A guest path as a tar stream whose top entry is its last component",
            "parameters": [vm_name_param(), path_param("The guest file or directory (absolute)")],
            "responses": responses(&[("200", ok_get)],
                &guest(&[("400", "Invalid path or query parameter"),
                         ("403", "The guest refused to read it (permission_denied)")])),
        },
        "head": {
            "operationId": "statArchive",
            "summary": "What is at a guest path, in the X-Hearth-Path-Stat header",
            "parameters": [vm_name_param(), path_param("The guest path (absolute)")],
            "responses": responses(&[("200", ok_head)],
                &guest(&[("400", "Invalid path or query parameter")])),
        },
    })
}

/// The exec and archive schemas.
#[must_use]
pub fn schemas() -> Map<String, Value> {
    let window = json!({"type": "object", "additionalProperties": false,
        "required": ["rows", "cols"],
        "properties": {"rows": {"type": "integer", "minimum": 1, "maximum": 65535},
                       "cols": {"type": "integer", "minimum": 1, "maximum": 65535}}});
    let no_nul = json!({"type": "string", "pattern": "^[^\\u0000]*$"});
    let exec_info = json!({"type": "object",
    "required": ["id", "argv", "tty", "stdin_open", "pid", "started_uptime_ms", "attached"],
    "properties": {
        "id": {"type": "string", "pattern": SESSION_ID},
        "argv": {"type": "array", "items": {"type": "string"}},
        "tty": {"type": "boolean"},
        "stdin_open": {"type": "boolean"},
        "pid": {"type": "integer"},
        "started_uptime_ms": {"type": "integer"},
        "attached": {"type": "boolean"},
        "exit": {"type": "object", "required": ["code"], "properties": {
            "code": {"type": "integer"},
            "signal": {"type": "integer"},
            "timed_out": {"type": "boolean"}}},
    }});
    let json = json!({
        "ExecCreate": {
            "type": "object", "additionalProperties": false, "required": ["command"],
            "properties": {
                "command": {"type": "array", "minItems": 1, "maxItems": MAX_ARGS,
                    "prefixItems": [{"type": "string", "minLength": 1,
                                     "pattern": "^[^\\u0000]*$"}],
                    "items": no_nul,
                    "description": "The command (non-empty) and its arguments"},
                "env": {"type": "array", "maxItems": MAX_ENV,
                    "items": {"type": "string", "pattern": "^[^=\\u0000]+=[^\\u0000]*$"},
                    "description": "KEY=VALUE entries"},
                "workdir": {"type": "string", "pattern": "^/[^\\u0000]*$"},
                "user": {"type": "string", "pattern": "^[0-9]{1,9}(:[0-9]{1,9})?$",
                    "description": "uid or uid:gid"},
                "tty": {"type": "boolean", "default": false},
                "size": window,
                "stdin": {"type": "boolean", "default": false},
                "timeout_secs": {"type": "integer", "minimum": 1,
                    "maximum": MAX_EXEC_TIMEOUT_MS / 1000},
                "detach": {"type": "boolean", "default": false,
                    "description": "The client will not attach right away: output goes to the \
                        ring buffers from the start (oldest bytes dropped when full). Without \
                        it, all output is kept for the first attach for up to 30 s."},
            }
        },
        "ExecCreated": {"type": "object", "required": ["id"],
            "properties": {"id": {"type": "string", "pattern": SESSION_ID}}},
        "ExecInfo": exec_info,
        "ExecList": {"type": "object", "required": ["execs"],
            "properties": {"execs": {"type": "array", "items": schema("ExecInfo")}}},
        "ExecSignal": {"type": "object", "additionalProperties": false, "required": ["signal"],
            "properties": {"signal": {"type": "string",
                "pattern": signal_pattern(),
                "description": "A name (TERM, SIGTERM, any case) or a number 1..=64"}}},
        "ArchiveSummary": {"type": "object", "required": ["entries", "bytes"],
            "properties": {"entries": {"type": "integer"}, "bytes": {"type": "integer"}}},
    });
    match json {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signal_pattern_has_every_name_parse_signal_knows() {
        for n in SIGNAL_NAMES {
            assert!(hearth_proto::api_exec::parse_signal(n).is_ok(), "{n}");
        }
        let p = signal_pattern();
        assert!(p.contains("[Vv][Tt][Aa][Ll][Rr][Mm]"), "{p}");
    }
}

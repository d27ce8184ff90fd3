//! The agent's command line: `hearth-agent [--port N | --unix PATH]`. Parsed by hand to keep
//! the static binary small.

use hearth_proto::agent::DEFAULT_PORT;

/// Where the agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `AF_VSOCK` on any CID, this port.
    Vsock {
        /// The vsock port.
        port: u32,
    },
    /// A Unix stream socket at this path (local testing).
    Unix {
        /// The socket path; a stale file there is replaced.
        path: std::path::PathBuf,
    },
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Where to listen.
    pub listen: Listen,
    /// `--sim-identity-file PATH`: `reconfigure` writes the identity there instead of changing
    /// the network (an agent the simulator runs on the host).
    pub sim_identity_file: Option<std::path::PathBuf>,
    /// `--sim-freeze-file PATH`: `freeze` and `thaw` append to this file instead of freezing
    /// a filesystem (an agent the simulator runs on the host must never freeze its root).
    pub sim_freeze_file: Option<std::path::PathBuf>,
}

/// The usage text.
pub const USAGE: &str =
    "usage: hearth-agent [--port N | --unix PATH] [--sim-identity-file PATH] [--sim-freeze-file PATH]\n  \
    --port N     listen on AF_VSOCK port N (default 52)\n  \
    --unix PATH  listen on a Unix socket instead (for local testing)\n  \
    --sim-identity-file PATH  reconfigure writes the identity to PATH, changing nothing else\n  \
    --sim-freeze-file PATH    freeze/thaw are recorded in PATH, freezing nothing";

/// Parses the arguments after the program name. `Err` carries a message for the user.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Args, String> {
    let mut port = None;
    let mut unix = None;
    let mut sim_identity_file = None;
    let mut sim_freeze_file = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--port" => {
                let v = value("--port")?;
                let p: u32 = v.parse().map_err(|_| format!("Invalid port {v:?}"))?;
                port = Some(p);
            }
            "--unix" => unix = Some(std::path::PathBuf::from(value("--unix")?)),
            "--sim-identity-file" => {
                sim_identity_file = Some(std::path::PathBuf::from(value("--sim-identity-file")?));
            }
            "--sim-freeze-file" => {
                sim_freeze_file = Some(std::path::PathBuf::from(value("--sim-freeze-file")?));
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("Unknown argument {other:?}\n{USAGE}")),
        }
    }
    let listen = match (port, unix) {
        (Some(_), Some(_)) => return Err("--port and --unix are mutually exclusive".into()),
        (_, Some(path)) => Listen::Unix { path },
        (port, None) => Listen::Vsock {
            port: port.unwrap_or(DEFAULT_PORT),
        },
    };
    Ok(Args {
        listen,
        sim_identity_file,
        sim_freeze_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Args, String> {
        parse_args(v.iter().map(std::string::ToString::to_string))
    }

    #[test]
    fn defaults_to_vsock_52() {
        assert_eq!(parse(&[]).unwrap().listen, Listen::Vsock { port: 52 });
    }

    #[test]
    fn port_and_unix_forms() {
        assert_eq!(
            parse(&["--port", "1024"]).unwrap().listen,
            Listen::Vsock { port: 1024 }
        );
        assert_eq!(
            parse(&["--port=7"]).unwrap().listen,
            Listen::Vsock { port: 7 }
        );
        assert_eq!(
            parse(&["--unix", "/tmp/a.sock"]).unwrap().listen,
            Listen::Unix {
                path: "/tmp/a.sock".into()
            }
        );
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(parse(&["--port"]).is_err());
        assert!(parse(&["--port", "x"]).is_err());
        assert!(parse(&["--port", "1", "--unix", "/a"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert!(parse(&["--sim-identity-file"]).is_err());
        assert_eq!(
            parse(&["--unix", "/a", "--sim-identity-file", "/id.json"])
                .unwrap()
                .sim_identity_file,
            Some("/id.json".into())
        );
        assert_eq!(parse(&[]).unwrap().sim_identity_file, None);
        assert!(parse(&["--sim-freeze-file"]).is_err());
        assert_eq!(
            parse(&["--sim-freeze-file=/f.log"])
                .unwrap()
                .sim_freeze_file,
            Some("/f.log".into())
        );
        assert_eq!(parse(&[]).unwrap().sim_freeze_file, None);
    }
}

//! The command lines of `hearthctl vm exec` and `hearthctl vm cp`, and what they print. The
//! binary only hooks these in; the work is in [`super::exec`] and [`super::cp`].
//!
//! Exit codes of `vm exec NAME -- CMD` and `vm exec attach`: the command's own (Docker's
//! numbering: 126 not executable, 127 not found, 128 + N killed by signal N); 125 when the
//! session could not be run or followed (hearthd, the agent or the connection failed);
//! 128 + N when hearthctl itself got SIGINT, SIGTERM or SIGHUP (it detaches; the session keeps
//! running); 2 for bad arguments. `vm exec ls|kill` and `vm cp` use hearthctl's usual codes
//! (1 API error, 2 usage, 3 hearthd not reachable, 4 connection failed).

use std::io::Write;

use hearth_proto::agent::exec::check_env_entry;
use hearth_proto::api_exec::{parse_signal, parse_user, ExecCreate, ExecInfo};

use super::cp::{self, Copied, CpError};
use super::exec::{self, AttachOptions, ExecError, EXIT_EXEC_FAILED};
use super::untar::{UntarOptions, DEFAULT_MAX_BYTES};
use super::{Client, ClientError};

/// `vm exec`: run a command, or manage the VM's sessions.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ExecArgs {
    /// Manage sessions instead of starting one.
    #[command(subcommand)]
    pub action: Option<ExecAction>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Stream stdin to the command (end of file closes its stdin).
    #[arg(short, long)]
    interactive: bool,
    /// Run on a terminal; with -i the local terminal is raw while the command runs.
    #[arg(short, long)]
    tty: bool,
    /// Start detached and print the session's id.
    #[arg(short, long)]
    detach: bool,
    /// An environment entry KEY=VALUE (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The working directory in the guest (absolute).
    #[arg(short, long)]
    workdir: Option<String>,
    /// The user to run as: UID or UID:GID.
    #[arg(short, long)]
    user: Option<String>,
    /// Kill the command after this many seconds.
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// The VM.
    #[arg(required = true)]
    name: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// `vm exec ls|attach|kill`.
#[derive(Debug, clap::Subcommand)]
pub enum ExecAction {
    /// List the VM's sessions (running and recently exited).
    Ls {
        /// The VM.
        name: String,
    },
    /// Follow a session: replay its kept output, then stream it until it ends.
    Attach {
        /// Also stream stdin to it.
        #[arg(short, long)]
        interactive: bool,
        /// The VM.
        name: String,
        /// The session's id.
        id: String,
    },
    /// Send a signal to a session's process group.
    Kill {
        /// The VM.
        name: String,
        /// The session's id.
        id: String,
        /// The signal: a name (TERM, SIGKILL) or a number.
        #[arg(short, long, default_value = "TERM")]
        signal: String,
    },
}

/// `vm cp SRC DEST`.
#[derive(Debug, clap::Args)]
pub struct CpArgs {
    /// What to copy: a local path, or NAME:PATH in a VM.
    pub src: String,
    /// Where to: NAME:PATH in a VM, or a local path.
    pub dest: String,
    /// From a VM: the most bytes the archive may hold.
    #[arg(long, default_value_t = DEFAULT_MAX_BYTES)]
    pub max_bytes: u64,
    /// From a VM: keep setuid and setgid bits (dropped otherwise).
    #[arg(long)]
    pub keep_setuid: bool,
}

fn fail(code: u8, message: impl std::fmt::Display) -> u8 {
    let _ = std::io::stdout().flush();
    eprintln!("hearthctl: {message}");
    code
}

/// hearthctl's usual code for a client error.
fn client_code(e: &ClientError) -> u8 {
    match e {
        ClientError::Api { .. } => 1,
        e if e.is_unreachable() => 3,
        _ => 4,
    }
}

/// Runs `vm exec`; returns hearthctl's exit code.
#[must_use]
pub fn exec(c: &Client, json: bool, args: ExecArgs) -> u8 {
    match args.action {
        Some(ExecAction::Ls { name }) => match exec::list(c, &name) {
            Ok(list) if json => print_json(&list),
            Ok(list) => {
                print_sessions(&list.execs);
                0
            }
            Err(e) => fail(client_code(&e), e),
        },
        Some(ExecAction::Kill { name, id, signal }) => {
            if let Err(e) = parse_signal(&signal) {
                return fail(2, e);
            }
            match exec::kill(c, &name, &id, &signal) {
                Ok(()) => 0,
                Err(e) => fail(client_code(&e), e),
            }
        }
        Some(ExecAction::Attach {
            interactive,
            name,
            id,
        }) => {
            let info = match exec::info(c, &name, &id) {
                Ok(i) => i,
                Err(e) => return fail(EXIT_EXEC_FAILED, e),
            };
            follow(c, &name, &id, interactive, info.tty)
        }
        None => run(c, args.run),
    }
}

fn run(c: &Client, a: RunArgs) -> u8 {
    let Some(name) = a.name.clone() else {
        return fail(2, "vm exec needs a VM name");
    };
    let body = match create_body(&a) {
        Ok(b) => b,
        Err(e) => return fail(2, e),
    };
    if a.tty && a.interactive && !exec::stdin_is_terminal() {
        return fail(2, "-t with -i needs stdin to be a terminal");
    }
    let created = match exec::create(c, &name, body) {
        Ok(x) => x,
        Err(e) => return fail(EXIT_EXEC_FAILED, e),
    };
    if a.detach {
        println!("{}", created.id);
        return 0;
    }
    follow(c, &name, created.id.as_str(), a.interactive, a.tty)
}

/// The create body, checked here so bad input is refused before anything starts.
fn create_body(a: &RunArgs) -> Result<ExecCreate, String> {
    if a.command.first().is_none_or(String::is_empty) {
        return Err("vm exec needs a command after --".into());
    }
    for e in &a.env {
        check_env_entry(e)?;
    }
    if let Some(u) = &a.user {
        parse_user(u)?;
    }
    if let Some(w) = &a.workdir {
        if !w.starts_with('/') {
            return Err(format!("--workdir {w:?} is not an absolute path"));
        }
    }
    if a.timeout == Some(0) {
        return Err("--timeout must be at least 1 second".into());
    }
    Ok(ExecCreate {
        command: a.command.clone(),
        env: a.env.clone(),
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        tty: a.tty,
        size: None,
        stdin: a.interactive,
        timeout_secs: a.timeout,
        detach: a.detach,
    })
}

fn follow(c: &Client, name: &str, id: &str, stdin: bool, tty: bool) -> u8 {
    let opts = AttachOptions {
        stdin,
        tty,
        raw: tty && stdin && exec::stdin_is_terminal(),
    };
    match exec::attach(c, name, id, opts) {
        Ok(status) => {
            let code = exec::status_exit_code(&status);
            if status.exit_code().is_none() {
                let why = status.message.as_deref().unwrap_or("no reason given");
                return fail(code, format!("session {id} failed: {why}"));
            }
            code
        }
        Err(e @ ExecError::Signalled(_)) => fail(e.exit_code(), format!("{e} (id {id})")),
        Err(e) => fail(e.exit_code(), e),
    }
}

fn print_sessions(execs: &[ExecInfo]) {
    println!(
        "{:<20} {:>7} {:<4} {:<12} COMMAND",
        "ID", "PID", "TTY", "STATE"
    );
    for e in execs {
        let state = match &e.exit {
            None if e.attached => "running*".to_owned(),
            None => "running".to_owned(),
            Some(x) => format!("exited({})", x.code),
        };
        println!(
            "{:<20} {:>7} {:<4} {:<12} {}",
            e.id,
            e.pid,
            if e.tty { "yes" } else { "no" },
            state,
            e.argv.join(" ")
        );
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> u8 {
    match serde_json::to_string_pretty(v) {
        Ok(s) => {
            println!("{s}");
            0
        }
        Err(e) => fail(4, e),
    }
}

/// Runs `vm cp`; returns hearthctl's exit code.
#[must_use]
pub fn cp(c: &Client, json: bool, args: &CpArgs) -> u8 {
    let opts = UntarOptions {
        max_bytes: args.max_bytes,
        keep_setuid: args.keep_setuid,
    };
    match cp::copy(c, &args.src, &args.dest, opts) {
        Ok(Copied::ToGuest(sum)) => {
            if json {
                return print_json(&sum);
            }
            0
        }
        Ok(Copied::FromGuest(x)) => {
            for s in &x.skipped {
                eprintln!("hearthctl: warning: {s}");
            }
            if json {
                return print_json(&serde_json::json!({
                    "entries": x.entries,
                    "bytes": x.bytes,
                    "skipped": x.skipped,
                    "path": x.path,
                }));
            }
            0
        }
        Err(CpError::Usage(m)) => fail(2, m),
        Err(CpError::Client(e) | CpError::Upload(super::upload::UploadError::Client(e))) => {
            fail(client_code(&e), e)
        }
        Err(e) => fail(4, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &[&str]) -> RunArgs {
        RunArgs {
            interactive: false,
            tty: false,
            detach: false,
            env: vec![],
            workdir: None,
            user: None,
            timeout: None,
            name: Some("web".into()),
            command: cmd.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn bad_exec_input_is_refused_before_any_request() {
        assert!(create_body(&args(&[])).is_err());
        assert!(create_body(&args(&[""])).is_err());
        assert_eq!(
            create_body(&args(&["ls", "-l"])).unwrap().command,
            ["ls", "-l"]
        );
        let bad = [
            RunArgs {
                env: vec!["NOEQUALS".into()],
                ..args(&["ls"])
            },
            RunArgs {
                workdir: Some("rel".into()),
                ..args(&["ls"])
            },
            RunArgs {
                user: Some("root".into()),
                ..args(&["ls"])
            },
            RunArgs {
                timeout: Some(0),
                ..args(&["ls"])
            },
        ];
        for a in &bad {
            assert!(create_body(a).is_err(), "{a:?}");
        }
        let b = create_body(&RunArgs {
            env: vec!["A=1".into()],
            workdir: Some("/tmp".into()),
            user: Some("1000:1000".into()),
            timeout: Some(5),
            tty: true,
            interactive: true,
            ..args(&["ls"])
        })
        .unwrap();
        assert!(b.tty && b.stdin && !b.detach);
        assert_eq!(b.timeout_secs, Some(5));
        let d = create_body(&RunArgs {
            detach: true,
            ..args(&["ls"])
        })
        .unwrap();
        assert!(d.detach, "-d asks hearthd for a detached start");
    }
}

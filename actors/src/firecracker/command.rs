//! Firecracker's command line, built from typed options by a pure [`LaunchArgs::args`].

use std::ffi::OsString;
use std::path::PathBuf;

use hearth_proto::firecracker::LogLevel;

use super::run_dir::RunDir;

/// The options hearth starts Firecracker with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchArgs {
    /// `--api-sock`.
    pub api_sock: PathBuf,
    /// `--id` (already validated).
    pub id: String,
    /// `--log-path` (Firecracker's own log).
    pub log_path: Option<PathBuf>,
    /// `--level`.
    pub level: Option<LogLevel>,
    /// `--metrics-path`.
    pub metrics_path: Option<PathBuf>,
}

impl LaunchArgs {
    /// The options for a VM in `run_dir`, logging at `level` to the run directory's files.
    pub fn for_run_dir(run_dir: &RunDir, id: &str, level: LogLevel) -> Self {
        LaunchArgs {
            api_sock: run_dir.api_socket(),
            id: id.to_string(),
            log_path: Some(run_dir.firecracker_log()),
            level: Some(level),
            metrics_path: Some(run_dir.metrics()),
        }
    }

    /// The argv after the program name.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "--api-sock".into(),
            self.api_sock.clone().into(),
            "--id".into(),
            self.id.clone().into(),
        ];
        if let Some(p) = &self.log_path {
            a.push("--log-path".into());
            a.push(p.clone().into());
        }
        if let Some(l) = self.level {
            a.push("--level".into());
            a.push(l.as_str().into());
        }
        if let Some(p) = &self.metrics_path {
            a.push("--metrics-path".into());
            a.push(p.clone().into());
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn argv_for_run_dir() {
        let rd = RunDir::new(Path::new("/run/h"), "vm-1").unwrap();
        let args = LaunchArgs::for_run_dir(&rd, "vm-1", LogLevel::Warning).args();
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--api-sock",
                "/run/h/vm-1/api.sock",
                "--id",
                "vm-1",
                "--log-path",
                "/run/h/vm-1/firecracker.log",
                "--level",
                LogLevel::Warning.as_str(),
                "--metrics-path",
                "/run/h/vm-1/metrics.json",
            ]
        );
    }

    #[test]
    fn minimal_argv() {
        let a = LaunchArgs {
            api_sock: "/s".into(),
            id: "x".into(),
            log_path: None,
            level: None,
            metrics_path: None,
        };
        assert_eq!(a.args(), ["--api-sock", "/s", "--id", "x"]);
    }
}

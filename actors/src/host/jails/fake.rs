//! A recording [`Jails`] for unit tests: keeps the jails and TAP owners in memory, records every
//! call, and can fail a chosen operation once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{JailError, JailPlan, Jails};
use crate::firecracker::jailer::{JailLayout, JailLimits};

/// What the fake holds.
#[derive(Debug, Default)]
struct State {
    /// Jail ids present, with the plan that made them.
    jails: BTreeMap<String, JailPlan>,
    /// Pid files written by [`FakeJails::write_pid`].
    pids: BTreeMap<String, u32>,
    /// TAP owners.
    taps: BTreeMap<String, (u32, u32)>,
    /// Files handed into each jail (by id) and not taken out yet.
    files: BTreeMap<String, BTreeSet<String>>,
    /// Limits written by [`Jails::set_limits`], by jail id.
    limits: BTreeMap<String, JailLimits>,
    /// Calls, e.g. `prepare vm-1`.
    calls: Vec<String>,
    /// Operations to fail once (`prepare`, `read_pid`, `set_tap_owner`, `remove`, `list`,
    /// `lend`, `unlend`, `take_out`, `discard`, `add_files`, `set_limits`).
    fail: BTreeSet<&'static str>,
}

/// The fake backend.
#[derive(Debug, Default)]
pub struct FakeJails {
    state: Mutex<State>,
}

impl FakeJails {
    /// An empty fake.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn enter(&self, op: &'static str, what: &str) -> Result<(), JailError> {
        self.with(|s| {
            s.calls.push(format!("{op} {what}"));
            if s.fail.remove(op) {
                Err(JailError::Injected(format!("{op} {what}")))
            } else {
                Ok(())
            }
        })
    }

    /// Makes the next call of `op` fail.
    pub fn fail_next(&self, op: &'static str) {
        self.with(|s| s.fail.insert(op));
    }

    /// Plays the jailer: writes the pid file of jail `id`.
    pub fn write_pid(&self, id: &str, pid: u32) {
        self.with(|s| s.pids.insert(id.to_string(), pid));
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.clone())
    }

    /// The ids of the jails present.
    pub fn jails(&self) -> Vec<String> {
        self.with(|s| s.jails.keys().cloned().collect())
    }

    /// The names of the files handed into jail `id` by [`Jails::lend`] and not removed (the
    /// fake has no VMM writing files: `take_out` and `discard` remove a lent name or none).
    pub fn files_in(&self, id: &str) -> Vec<String> {
        self.with(|s| {
            s.files
                .get(id)
                .map(|f| f.iter().cloned().collect())
                .unwrap_or_default()
        })
    }

    fn drop_file(&self, layout: &JailLayout, name: &str) {
        self.with(|s| {
            if let Some(f) = s.files.get_mut(layout.id()) {
                f.remove(name);
            }
        });
    }

    /// What jail `id` was prepared with, while it is present.
    pub fn plan(&self, id: &str) -> Option<JailPlan> {
        self.with(|s| s.jails.get(id).cloned())
    }

    /// The limits last written into jail `id`'s cgroups by [`Jails::set_limits`] (kept
    /// after the jail is removed, for tests to read).
    pub fn limits_of(&self, id: &str) -> Option<JailLimits> {
        self.with(|s| s.limits.get(id).copied())
    }

    /// The owner of TAP `name`.
    pub fn tap_owner(&self, name: &str) -> Option<(u32, u32)> {
        self.with(|s| s.taps.get(name).copied())
    }
}

impl Jails for FakeJails {
    fn prepare(&self, plan: &JailPlan) -> Result<(), JailError> {
        self.enter("prepare", plan.layout.id())?;
        for f in &plan.files {
            super::check_name(&f.name)?;
        }
        self.with(|s| {
            s.pids.remove(plan.layout.id());
            s.jails.insert(plan.layout.id().to_string(), plan.clone())
        });
        Ok(())
    }

    fn read_pid(&self, layout: &JailLayout) -> Result<u32, JailError> {
        self.enter("read_pid", layout.id())?;
        self.with(|s| s.pids.get(layout.id()).copied())
            .ok_or_else(|| JailError::Io {
                op: "read",
                path: layout.pid_file(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
    }

    fn set_tap_owner(&self, name: &str, owner: Option<(u32, u32)>) -> Result<(), JailError> {
        self.enter("set_tap_owner", name)?;
        self.with(|s| match owner {
            Some(o) => s.taps.insert(name.to_string(), o),
            None => s.taps.remove(name),
        });
        Ok(())
    }

    fn remove(&self, layout: &JailLayout) -> Result<(), JailError> {
        self.enter("remove", layout.id())?;
        self.with(|s| {
            s.jails.remove(layout.id());
            s.pids.remove(layout.id());
            s.files.remove(layout.id());
        });
        Ok(())
    }

    fn list(&self, exec_name: &str) -> Result<Vec<String>, JailError> {
        self.enter("list", exec_name)?;
        Ok(self.jails())
    }

    fn lend(
        &self,
        layout: &JailLayout,
        _source: &Path,
        name: &str,
        _owner: (u32, u32),
    ) -> Result<PathBuf, JailError> {
        self.enter("lend", &format!("{} {name}", layout.id()))?;
        super::check_name(name)?;
        self.with(|s| {
            s.files
                .entry(layout.id().to_string())
                .or_default()
                .insert(name.to_string())
        });
        Ok(Path::new("/").join(name))
    }

    fn unlend(&self, layout: &JailLayout, _source: &Path, name: &str) -> Result<(), JailError> {
        self.enter("unlend", &format!("{} {name}", layout.id()))?;
        self.drop_file(layout, name);
        Ok(())
    }

    fn take_out(&self, layout: &JailLayout, name: &str, _dest: &Path) -> Result<(), JailError> {
        self.enter("take_out", &format!("{} {name}", layout.id()))?;
        self.drop_file(layout, name);
        Ok(())
    }

    fn discard(&self, layout: &JailLayout, name: &str) -> Result<(), JailError> {
        self.enter("discard", &format!("{} {name}", layout.id()))?;
        self.drop_file(layout, name);
        Ok(())
    }

    fn add_files(&self, plan: &JailPlan) -> Result<(), JailError> {
        self.enter("add_files", plan.layout.id())?;
        for f in &plan.files {
            super::check_name(&f.name)?;
        }
        self.with(|s| {
            let have = s.files.entry(plan.layout.id().to_string()).or_default();
            have.extend(plan.files.iter().map(|f| f.name.clone()));
        });
        Ok(())
    }

    fn set_limits(&self, layout: &JailLayout, limits: &JailLimits) -> Result<(), JailError> {
        self.enter("set_limits", layout.id())?;
        self.with(|s| s.limits.insert(layout.id().to_string(), *limits));
        Ok(())
    }

    fn share_read_only(&self, dir: &Path, files: &[PathBuf]) -> Result<(), JailError> {
        let names: Vec<String> = files
            .iter()
            .filter_map(|f| Some(f.file_name()?.to_string_lossy().into_owned()))
            .collect();
        let dir = dir.file_name().map(|d| d.to_string_lossy().into_owned());
        self.enter(
            "share_read_only",
            &format!("{} {}", dir.unwrap_or_default(), names.join(" ")),
        )
    }
}

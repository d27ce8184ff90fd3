//! How init ends the guest once the command has exited: `SIGTERM` to every other process, a
//! grace period, `SIGKILL`, `sync`, the root file system remounted read-only, then
//! `reboot(RB_AUTOBOOT)`. Firecracker is started with `reboot=k`, so the guest's reset ends
//! the VMM process (and in a PID namespace, the namespace's init dies of `SIGHUP`). Returning
//! from PID 1 would panic the kernel instead.

use std::time::{Duration, Instant};

use super::say;

/// How long the other processes get between `SIGTERM` and `SIGKILL`.
pub const GRACE: Duration = Duration::from_secs(3);

/// Whether a user process other than init is left: a `/proc/<pid>` with a command line
/// (kernel threads and zombies have none; the reaper takes the zombies).
fn others_left() -> bool {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.bytes().all(|b| b.is_ascii_digit())
            && name != me
            && std::fs::read(e.path().join("cmdline")).is_ok_and(|c| !c.is_empty())
    })
}

fn wait_for_others(within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while others_left() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Terminates everything, syncs, and reboots. Never returns.
pub fn power_off() -> ! {
    // SAFETY: kill(-1) from PID 1 signals every other process of its PID namespace.
    unsafe { libc::kill(-1, libc::SIGTERM) };
    if !wait_for_others(GRACE) {
        say("processes left after SIGTERM; sending SIGKILL");
        // SAFETY: as above.
        unsafe { libc::kill(-1, libc::SIGKILL) };
        wait_for_others(Duration::from_secs(1));
    }
    // SAFETY: sync has no preconditions; the remount names the root with constant strings.
    unsafe {
        libc::sync();
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_RDONLY,
            std::ptr::null(),
        ) < 0
        {
            say(&format!(
                "remounting / read-only failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        libc::reboot(libc::RB_AUTOBOOT);
    }
    say(&format!(
        "reboot failed: {}",
        std::io::Error::last_os_error()
    ));
    // An exiting PID 1 panics the kernel, which (panic=1) reboots: the VM still ends.
    std::process::exit(1)
}

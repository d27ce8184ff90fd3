//! Lifecycle policy decisions, as pure functions of a VM's policy, what just happened to it and
//! the time: whether to restart a VM whose VMM exited, after how long, and when it gives up;
//! when a time limit expires. The supervisor records each decision in the store before it acts
//! on it, so these functions hold no state of their own, and tests drive them with a
//! [`ManualClock`] instead of sleeping.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use hearth_proto::api_policy::{RestartPolicy, TtlChange};

/// The first restart waits this long.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Delays double up to this ceiling.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);
/// A VM that has run this long since its last (re)start has recovered: its attempt count
/// starts again from zero.
pub const STABLE_AFTER: Duration = Duration::from_secs(10 * 60);

/// Why a VMM is no longer running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCause {
    /// A user (or a drain, or an expiry) asked for it to stop: never undone by a policy.
    Requested,
    /// The guest shut itself down (the VMM exited with status 0 on a guest reboot).
    GuestShutdown,
    /// Anything else: a VMM crash, a kill, a guest panic (`panic=1` reboots), an OOM kill.
    Crash,
}

/// The restart history the supervisor keeps (in the store) for one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestartHistory {
    /// Restarts made since the VM last ran stably.
    pub attempts: u32,
    /// When its VMM was last started (boot or restart).
    pub last_start: Option<SystemTime>,
}

/// What to do about an exited VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Leave the VM stopped or crashed.
    Leave,
    /// Start it again after `delay`; this is restart number `attempt` in a row.
    Restart {
        /// How long to wait first.
        delay: Duration,
        /// 1 for the first restart since the VM last ran stably.
        attempt: u32,
    },
    /// The policy allows no more attempts.
    GiveUp {
        /// Restarts made before giving up.
        attempts: u32,
    },
}

/// The delay before restart number `attempt` (1-based): 1 s, doubling, at most 5 minutes.
pub fn backoff_delay(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    BACKOFF_INITIAL
        .checked_mul(1u32 << doublings)
        .map_or(BACKOFF_MAX, |d| d.min(BACKOFF_MAX))
}

/// Decides whether a VM whose VMM exited for `cause` at `now` is restarted.
pub fn decide_restart(
    policy: RestartPolicy,
    cause: ExitCause,
    history: RestartHistory,
    now: SystemTime,
) -> RestartDecision {
    let wanted = match (policy, cause) {
        (_, ExitCause::Requested) | (RestartPolicy::No, _) => false,
        (RestartPolicy::OnFailure { .. }, ExitCause::GuestShutdown) => false,
        (RestartPolicy::OnFailure { .. } | RestartPolicy::Always, _) => true,
    };
    if !wanted {
        return RestartDecision::Leave;
    }
    let stable = history
        .last_start
        .and_then(|t| now.duration_since(t).ok())
        .is_some_and(|ran| ran >= STABLE_AFTER);
    let made = if stable { 0 } else { history.attempts };
    if let RestartPolicy::OnFailure {
        max_retries: Some(max),
    } = policy
    {
        if made >= max {
            return RestartDecision::GiveUp { attempts: made };
        }
    }
    let attempt = made.saturating_add(1);
    RestartDecision::Restart {
        delay: backoff_delay(attempt),
        attempt,
    }
}

/// The new deadline after a time-limit change made at `now`; `current` is the VM's deadline,
/// if it has one. An extension of a VM without a deadline counts from now.
pub fn apply_ttl(change: TtlChange, current: Option<SystemTime>, now: SystemTime) -> SystemTime {
    match change {
        TtlChange::Set(d) => now + d,
        TtlChange::Extend(d) => current.unwrap_or(now).max(now) + d,
    }
}

/// Time left until `deadline` (zero once it passed).
pub fn time_left(deadline: SystemTime, now: SystemTime) -> Duration {
    deadline.duration_since(now).unwrap_or(Duration::ZERO)
}

/// The tag in the name of a snapshot an expiry takes.
pub const EXPIRED_TAG: &str = "expired";
/// The tag in the name of a snapshot a drain takes.
pub const DRAINED_TAG: &str = "drained";

/// The name of the snapshot a policy takes of `vm`: `<vm>-<tag>-<at, Unix ms>`, the VM's name
/// shortened if needed to keep it a valid snapshot name (at most 63 characters). `at` is a
/// stored time (the expiry's deadline, the run's start), so a hearthd killed mid-way and
/// acting again names the same snapshot, and finds it taken instead of taking it twice.
pub fn policy_snapshot_name(vm: &str, tag: &str, at: SystemTime) -> String {
    let ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let suffix = format!("-{tag}-{ms}");
    let keep = 63usize.saturating_sub(suffix.len()).min(vm.len());
    // VM names are ASCII: any cut is on a character boundary.
    let prefix = vm.get(..keep).unwrap_or(vm).trim_end_matches('-');
    format!("{prefix}{suffix}")
}

/// Whether `name` has the form of [`policy_snapshot_name`].
pub fn is_policy_snapshot_name(name: &str) -> bool {
    [EXPIRED_TAG, DRAINED_TAG].iter().any(|tag| {
        name.rsplit_once('-').is_some_and(|(head, ms)| {
            !ms.is_empty()
                && ms.bytes().all(|b| b.is_ascii_digit())
                && head.ends_with(&format!("-{tag}"))
        })
    })
}

/// The supervisor's source of time, so that tests move it by hand.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time (deadlines are stored as wall-clock times, since they must
    /// survive a restart of hearthd).
    fn now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to; cloned handles share one time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: SystemTime) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes() {
        let delays: Vec<u64> = (1..=11).map(|a| backoff_delay(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff_delay(0), BACKOFF_INITIAL);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn a_requested_stop_is_never_undone() {
        for policy in [
            RestartPolicy::No,
            RestartPolicy::Always,
            RestartPolicy::OnFailure { max_retries: None },
        ] {
            let d = decide_restart(
                policy,
                ExitCause::Requested,
                RestartHistory::default(),
                at(0),
            );
            assert_eq!(d, RestartDecision::Leave, "{policy}");
        }
    }

    #[test]
    fn on_failure_restarts_crashes_but_not_shutdowns_and_always_restarts_both() {
        let h = RestartHistory::default();
        let on_failure = RestartPolicy::OnFailure { max_retries: None };
        assert_eq!(
            decide_restart(on_failure, ExitCause::GuestShutdown, h, at(0)),
            RestartDecision::Leave
        );
        let first = RestartDecision::Restart {
            delay: BACKOFF_INITIAL,
            attempt: 1,
        };
        assert_eq!(
            decide_restart(on_failure, ExitCause::Crash, h, at(0)),
            first
        );
        assert_eq!(
            decide_restart(RestartPolicy::Always, ExitCause::GuestShutdown, h, at(0)),
            first
        );
        assert_eq!(
            decide_restart(RestartPolicy::No, ExitCause::Crash, h, at(0)),
            RestartDecision::Leave
        );
    }

    #[test]
    fn a_crash_loop_backs_off_and_gives_up_after_max() {
        let policy = RestartPolicy::OnFailure {
            max_retries: Some(3),
        };
        let clock = ManualClock::new(at(0));
        let mut history = RestartHistory::default();
        let mut delays = Vec::new();
        loop {
            match decide_restart(policy, ExitCause::Crash, history, clock.now()) {
                RestartDecision::Restart { delay, attempt } => {
                    delays.push(delay.as_secs());
                    clock.advance(delay);
                    history = RestartHistory {
                        attempts: attempt,
                        last_start: Some(clock.now()),
                    };
                    // It crashes again at once.
                    clock.advance(Duration::from_millis(50));
                }
                RestartDecision::GiveUp { attempts } => {
                    assert_eq!(attempts, 3);
                    break;
                }
                RestartDecision::Leave => panic!("on-failure left a crash"),
            }
        }
        assert_eq!(delays, [1, 2, 4]);
    }

    #[test]
    fn ten_stable_minutes_reset_the_count() {
        let policy = RestartPolicy::OnFailure {
            max_retries: Some(3),
        };
        let history = RestartHistory {
            attempts: 3,
            last_start: Some(at(0)),
        };
        let just_before = at(STABLE_AFTER.as_secs() - 1);
        assert_eq!(
            decide_restart(policy, ExitCause::Crash, history, just_before),
            RestartDecision::GiveUp { attempts: 3 }
        );
        assert_eq!(
            decide_restart(
                policy,
                ExitCause::Crash,
                history,
                at(STABLE_AFTER.as_secs())
            ),
            RestartDecision::Restart {
                delay: BACKOFF_INITIAL,
                attempt: 1
            }
        );
        // A clock that went backwards does not count as stable running.
        let from_future = RestartHistory {
            attempts: 3,
            last_start: Some(at(10_000)),
        };
        assert_eq!(
            decide_restart(policy, ExitCause::Crash, from_future, at(0)),
            RestartDecision::GiveUp { attempts: 3 }
        );
    }

    #[test]
    fn policy_snapshot_names_are_valid_deterministic_and_distinct() {
        let name = policy_snapshot_name("job", EXPIRED_TAG, at(5));
        assert_eq!(name, "job-expired-1800000005000");
        assert_eq!(name, policy_snapshot_name("job", EXPIRED_TAG, at(5)));
        assert_ne!(name, policy_snapshot_name("job", EXPIRED_TAG, at(6)));
        assert_ne!(name, policy_snapshot_name("job", DRAINED_TAG, at(5)));
        assert!(is_policy_snapshot_name(&name));
        assert!(!is_policy_snapshot_name("job-expired-"));
        assert!(!is_policy_snapshot_name("job-backup-1"));
        // The longest VM name (and one whose cut would end in '-') still makes a valid name.
        for vm in [
            "a".repeat(63),
            format!("{}-{}", "a".repeat(40), "b".repeat(22)),
        ] {
            let n = policy_snapshot_name(&vm, DRAINED_TAG, at(1));
            hearth_proto::api_snapshot::validate_snapshot_name(&n, "name").unwrap();
            assert!(is_policy_snapshot_name(&n), "{n}");
        }
    }

    #[test]
    fn ttl_set_and_extend() {
        let m30 = Duration::from_secs(1800);
        assert_eq!(
            apply_ttl(TtlChange::Set(m30), Some(at(99)), at(10)),
            at(1810)
        );
        assert_eq!(
            apply_ttl(TtlChange::Extend(m30), Some(at(600)), at(10)),
            at(2400)
        );
        // No deadline yet, or one already past: the extension counts from now.
        assert_eq!(apply_ttl(TtlChange::Extend(m30), None, at(10)), at(1810));
        assert_eq!(
            apply_ttl(TtlChange::Extend(m30), Some(at(5)), at(10)),
            at(1810)
        );
        assert_eq!(time_left(at(100), at(40)), Duration::from_secs(60));
        assert_eq!(time_left(at(100), at(400)), Duration::ZERO);
    }
}

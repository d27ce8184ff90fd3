//! `freeze` and `thaw` (v2): quiesce the guest's root filesystem around a snapshot, so the
//! disk checkpoint taken while the VM is paused holds everything the guest had written.
//!
//! ```text
//! -> {"v":2,"op":"freeze","path":"/","thaw_after_ms":10000}
//! <- {"v":2,"ok":{}}
//! -> {"v":2,"op":"thaw","path":"/"}
//! <- {"v":2,"ok":{"was_frozen":true}}
//! ```
//!
//! `freeze` is `sync(2)` then `FIFREEZE` on the filesystem holding `path`. Every freeze carries
//! a deadline: if no `thaw` comes within `thaw_after_ms` (hearthd died mid-snapshot), the
//! agent thaws on its own, since a root filesystem frozen for good hangs the guest. `thaw` is
//! `FITHAW`; a filesystem that is not frozen is thawed already, so it succeeds too.

use serde::{Deserialize, Serialize};

use super::files::check_guest_path;

/// The filesystem frozen when a request names none: the guest's root.
pub const DEFAULT_FREEZE_PATH: &str = "/";

/// `thaw_after_ms` when a `freeze` gives none (ten seconds).
pub const DEFAULT_THAW_AFTER_MS: u64 = 10_000;

/// The longest `thaw_after_ms` a `freeze` may ask for (one minute): longer would let a lost
/// host hang the guest's writers for longer than any snapshot takes.
pub const MAX_THAW_AFTER_MS: u64 = 60_000;

fn default_path() -> String {
    DEFAULT_FREEZE_PATH.to_owned()
}

fn default_thaw_after_ms() -> u64 {
    DEFAULT_THAW_AFTER_MS
}

/// The arguments of `freeze`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeRequest {
    /// A path on the filesystem to freeze (absolute); [`DEFAULT_FREEZE_PATH`] when absent.
    #[serde(default = "default_path")]
    pub path: String,
    /// The agent thaws on its own after this many milliseconds, 1..=[`MAX_THAW_AFTER_MS`];
    /// [`DEFAULT_THAW_AFTER_MS`] when absent.
    #[serde(default = "default_thaw_after_ms")]
    pub thaw_after_ms: u64,
}

impl FreezeRequest {
    /// A freeze of the root filesystem with the default deadline.
    #[must_use]
    pub fn root() -> Self {
        FreezeRequest {
            path: default_path(),
            thaw_after_ms: DEFAULT_THAW_AFTER_MS,
        }
    }

    /// Checks the path and the deadline; answers what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        check_guest_path(&self.path)?;
        if !(1..=MAX_THAW_AFTER_MS).contains(&self.thaw_after_ms) {
            return Err(format!(
                "thaw_after_ms {} is not 1..={MAX_THAW_AFTER_MS}",
                self.thaw_after_ms
            ));
        }
        Ok(())
    }
}

/// The arguments of `thaw`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThawRequest {
    /// A path on the filesystem to thaw (absolute); [`DEFAULT_FREEZE_PATH`] when absent.
    #[serde(default = "default_path")]
    pub path: String,
}

impl ThawRequest {
    /// A thaw of the root filesystem.
    #[must_use]
    pub fn root() -> Self {
        ThawRequest {
            path: default_path(),
        }
    }
}

/// The agent's answer to `thaw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThawReply {
    /// Whether the filesystem was frozen (false: it was not, or the deadline thawed it).
    pub was_frozen: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{codes, decode_request, encode_request, Request};

    #[test]
    fn freeze_and_thaw_round_trip_as_v2_with_defaults() {
        let f = Request::Freeze(FreezeRequest {
            path: "/data".into(),
            thaw_after_ms: 2500,
        });
        let line = encode_request(&f);
        assert_eq!(
            line,
            b"{\"v\":2,\"op\":\"freeze\",\"path\":\"/data\",\"thaw_after_ms\":2500}\n"
        );
        assert_eq!(decode_request(&line).unwrap(), f);
        assert_eq!(
            decode_request(b"{\"v\":2,\"op\":\"freeze\"}").unwrap(),
            Request::Freeze(FreezeRequest::root())
        );
        assert_eq!(
            decode_request(b"{\"v\":2,\"op\":\"thaw\"}").unwrap(),
            Request::Thaw(ThawRequest::root())
        );
        let t = Request::Thaw(ThawRequest::root());
        assert_eq!(decode_request(&encode_request(&t)).unwrap(), t);
        // v1 does not have them.
        assert!(decode_request(b"{\"v\":1,\"op\":\"freeze\"}").is_err());
        assert!(decode_request(b"{\"v\":1,\"op\":\"thaw\"}").is_err());
    }

    #[test]
    fn bad_freezes_are_bad_requests_naming_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"{\"v\":2,\"op\":\"freeze\",\"thaw_after_ms\":0}",
                "thaw_after_ms",
            ),
            (
                b"{\"v\":2,\"op\":\"freeze\",\"thaw_after_ms\":60001}",
                "thaw_after_ms",
            ),
            (b"{\"v\":2,\"op\":\"freeze\",\"path\":\"rel\"}", "absolute"),
            (b"{\"v\":2,\"op\":\"freeze\",\"forever\":true}", "forever"),
            (b"{\"v\":2,\"op\":\"thaw\",\"path\":\"rel\"}", "absolute"),
        ];
        for (line, word) in cases {
            let e = decode_request(line).unwrap_err();
            assert_eq!(e.to_error_body().code, codes::BAD_REQUEST);
            assert!(e.to_string().contains(word), "{e} should name {word}");
        }
    }
}

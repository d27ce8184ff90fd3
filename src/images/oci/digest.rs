//! Content digests (`sha256:<64 lowercase hex>`), the names of everything in the blob cache.
//! Only sha256 is accepted: it is what registries and `docker save` use, and a digest names a
//! file under the cache, so its syntax is checked before it is ever joined to a path.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A digest that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid digest {digest:?}: {reason}")]
pub struct DigestError {
    /// The digest given (cut to 100 characters).
    pub digest: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A sha256 content digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let fail = |reason: &str| DigestError {
            digest: s.chars().take(100).collect(),
            reason: reason.into(),
        };
        let Some((algo, hex)) = s.split_once(':') else {
            return Err(fail("not algorithm:hex (sha256:<64 hex digits>)"));
        };
        if algo != "sha256" {
            return Err(fail("only sha256 digests are supported"));
        }
        Self::from_hex(hex).ok_or_else(|| fail("a sha256 digest is 64 lowercase hex digits"))
    }

    /// The digest with hex part `hex` (64 lowercase hex digits), if it is one.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let ok = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Digest { hex: hex.into() })
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest {
            hex: format!("{:x}", Sha256::digest(bytes)),
        }
    }

    /// The digest a finished hasher computed.
    pub fn from_hasher(hasher: Sha256) -> Self {
        Digest {
            hex: format!("{:x}", hasher.finalize()),
        }
    }

    /// The 64 hex digits (a file name in the cache).
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }

    #[test]
    fn refuses_what_could_escape_a_path_or_is_not_sha256() {
        for bad in [
            "sha256:../../etc/passwd",
            "sha256:ABC",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha512:{}", "a".repeat(128)),
            &"a".repeat(64),
            &format!("sha256:{}/", "a".repeat(63)),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Digest>("\"sha256:x\"").is_err());
    }
}

//! Registry credentials from a file in Docker's `config.json` format, the file hearthd is
//! told about (`[images] credentials`): `{"auths": {"<registry>": {"auth": base64("user:pass")}}}`
//! or with `username`/`password` fields. Keys may be a bare host (`ghcr.io`,
//! `127.0.0.1:5000`) or a URL (`https://index.docker.io/v1/`, Docker Hub's usual key).
//! Credential helpers (`credsStore`) are not run: hearthd does not execute programs named by
//! a credentials file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::reference::DOCKER_HUB;

/// The largest credentials file read.
pub const MAX_CREDENTIALS_BYTES: u64 = 1 << 20;

/// Errors reading credentials.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file cannot be read.
    #[error("Cannot read credentials file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not Docker's `config.json` format.
    #[error("Credentials file {path} is malformed: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A user name and password for one registry. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password (or token).
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Reads the credentials for `registry` (as in a reference: `docker.io`, `host:port`) from
/// the file at `path`; `None` when the file has none for it.
pub fn lookup(path: &Path, registry: &str) -> Result<Option<Credentials>, AuthError> {
    use std::io::Read as _;
    let read_err = |source| AuthError::Read {
        path: path.into(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(read_err)?
        .take(MAX_CREDENTIALS_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CREDENTIALS_BYTES {
        return Err(AuthError::Malformed {
            path: path.into(),
            reason: format!("larger than {MAX_CREDENTIALS_BYTES} bytes"),
        });
    }
    lookup_in(&bytes, registry).map_err(|reason| AuthError::Malformed {
        path: path.into(),
        reason,
    })
}

/// [`lookup`] on the file's content.
pub fn lookup_in(json: &[u8], registry: &str) -> Result<Option<Credentials>, String> {
    let file: ConfigFile = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let wanted = normalize(registry);
    let Some((key, entry)) = file.auths.iter().find(|(k, _)| normalize(k) == wanted) else {
        return Ok(None);
    };
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| format!("auths.{key}.auth is not base64: {e}"))?;
        let text =
            String::from_utf8(decoded).map_err(|_| format!("auths.{key}.auth is not UTF-8"))?;
        let (user, pass) = text
            .split_once(':')
            .ok_or_else(|| format!("auths.{key}.auth is not base64 of user:password"))?;
        return Ok(Some(Credentials {
            username: user.into(),
            password: pass.into(),
        }));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Ok(Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        })),
        _ => Ok(None),
    }
}

/// A registry key as a bare `host[:port]`, Docker Hub's many names as `docker.io`.
fn normalize(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_credentials_by_registry_in_each_form() {
        let json = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="},
            "127.0.0.1:5000": {"username": "u", "password": "p:w"},
            "ghcr.io": {}
        }, "credsStore": "desktop"}"#;
        let hub = lookup_in(json, "docker.io").unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hub", "secret")
        );
        let local = lookup_in(json, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(local.password, "p:w");
        assert_eq!(lookup_in(json, "ghcr.io").unwrap(), None);
        assert_eq!(lookup_in(json, "quay.io").unwrap(), None);
        assert!(!format!("{hub:?}").contains("secret"));
    }

    #[test]
    fn malformed_files_say_what_is_wrong() {
        let e = lookup_in(br#"{"auths": {"a.io": {"auth": "!!"}}}"#, "a.io").unwrap_err();
        assert!(e.contains("auths.a.io.auth is not base64"), "{e}");
        let e = lookup_in(br#"{"auths": {"a.io": {"auth": "bm9jb2xvbg=="}}}"#, "a.io").unwrap_err();
        assert!(e.contains("user:password"), "{e}");
        assert!(lookup_in(b"[", "a.io").is_err());
        let dir = tempfile::tempdir().unwrap();
        let e = lookup(&dir.path().join("none.json"), "a.io").unwrap_err();
        assert!(
            e.to_string().contains("Cannot read credentials file"),
            "{e}"
        );
    }
}

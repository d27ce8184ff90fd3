//! Image references as users write them (`alpine:3.20`, `ghcr.io/org/app@sha256:...`,
//! `127.0.0.1:5000/test/busybox:v1`), parsed into registry, repository, tag and digest with
//! Docker's defaults: no registry means Docker Hub (`docker.io`), a one-component repository on
//! Docker Hub lives under `library/`, and neither tag nor digest means `latest`.
//!
//! Parsing is strict and bounded (the grammar of the distribution spec, at most
//! [`MAX_REFERENCE_LEN`] bytes): a reference names the URL hearthd fetches from, so anything
//! the spec does not allow is refused with the reason.

use std::fmt;

use super::digest::Digest;

/// The longest reference accepted, bytes (Docker's limit on a repository name is 255; a tag
/// and a digest come on top).
pub const MAX_REFERENCE_LEN: usize = 512;
/// Docker Hub's registry name as it appears in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub is actually served from.
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";
const MAX_TAG_LEN: usize = 128;
const MAX_REPOSITORY_LEN: usize = 255;

/// A reference that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    /// The reference given (cut to [`MAX_REFERENCE_LEN`]).
    pub reference: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// The registry: `docker.io`, `ghcr.io`, `127.0.0.1:5000`...
    pub registry: String,
    /// The repository path inside it, e.g. `library/alpine`.
    pub repository: String,
    /// The tag, if given (or `latest` when neither a tag nor a digest was).
    pub tag: Option<String>,
    /// The digest, if given: it pins the manifest (or index) fetched.
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// Parses `reference`.
    pub fn parse(reference: &str) -> Result<Self, ReferenceError> {
        let fail = |reason: String| ReferenceError {
            reference: reference.chars().take(MAX_REFERENCE_LEN).collect(),
            reason,
        };
        if reference.is_empty() {
            return Err(fail("it is empty".into()));
        }
        if reference.len() > MAX_REFERENCE_LEN {
            return Err(fail(format!("longer than {MAX_REFERENCE_LEN} bytes")));
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, d)) => (rest, Some(Digest::parse(d).map_err(|e| fail(e.reason))?)),
            None => (reference, None),
        };
        // A tag is after the last ':' of the last path component (a ':' before the first
        // '/' is a registry's port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            if let Some(reason) = tag_problem(tag) {
                return Err(fail(format!("tag {tag:?} {reason}")));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if is_registry(first) => (first.to_owned(), rest.to_owned()),
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        if let Some(reason) = registry_problem(&registry) {
            return Err(fail(format!("registry {registry:?} {reason}")));
        }
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_owned()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if let Some(reason) = repository_problem(&repository) {
            return Err(fail(format!("repository {repository:?} {reason}")));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some("latest".to_owned()),
            (None, Some(_)) => None,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host (and port) to connect to: Docker Hub's real host for `docker.io`.
    pub fn host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_HOST
        } else {
            &self.registry
        }
    }

    /// The same repository pinned to `digest` (an index entry, say).
    #[must_use]
    pub fn with_digest(&self, digest: &Digest) -> ImageRef {
        ImageRef {
            digest: Some(digest.clone()),
            ..self.clone()
        }
    }

    /// The reference for the registry client.
    pub fn to_client(&self) -> oci_client::Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => oci_client::Reference::with_digest(
                self.host().to_owned(),
                self.repository.clone(),
                d.to_string(),
            ),
            (None, Some(t)) => oci_client::Reference::with_tag(
                self.host().to_owned(),
                self.repository.clone(),
                t.clone(),
            ),
            (None, None) => oci_client::Reference::with_tag(
                self.host().to_owned(),
                self.repository.clone(),
                "latest".into(),
            ),
        }
    }
}

impl fmt::Display for ImageRef {
    /// The canonical form: `registry/repository[:tag][@digest]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Docker's rule: the first component names a registry when it has a `.` or a `:` or is
/// `localhost`.
fn is_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

fn registry_problem(registry: &str) -> Option<&'static str> {
    let (host, port) = match registry.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (registry, None),
    };
    if host.is_empty() {
        return Some("has no host");
    }
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return Some("has a port that is not 1-65535");
        }
    }
    let ok = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !ok || host.starts_with(['.', '-']) || host.ends_with(['.', '-']) {
        return Some("is not a host name or IPv4 address");
    }
    None
}

/// The distribution spec's path components: lowercase alphanumerics separated by one `.`, one
/// or two `_`, or any number of `-`; components joined by `/`.
fn repository_problem(repository: &str) -> Option<&'static str> {
    if repository.len() > MAX_REPOSITORY_LEN {
        return Some("is longer than 255 bytes");
    }
    for component in repository.split('/') {
        let bytes = component.as_bytes();
        let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
            return Some("has an empty path component");
        };
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !alnum(first) || !alnum(last) {
            return Some("has a component not starting and ending with [a-z0-9]");
        }
        if !bytes.iter().all(|b| alnum(b) || b"._-".contains(b)) {
            return Some("may only contain [a-z0-9._-] and /");
        }
        if component.contains("..") || component.contains("___") || component.contains(".-") {
            return Some("has a separator the spec does not allow");
        }
    }
    None
}

fn tag_problem(tag: &str) -> Option<&'static str> {
    let bytes = tag.as_bytes();
    let Some(first) = bytes.first() else {
        return Some("is empty");
    };
    if bytes.len() > MAX_TAG_LEN {
        return Some("is longer than 128 bytes");
    }
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    if !word(first) || !bytes.iter().all(|b| word(b) || *b == b'.' || *b == b'-') {
        return Some("may only be [A-Za-z0-9_.-], not starting with . or -");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_defaults() {
        let r = parse("alpine");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("docker.io", "library/alpine", Some("latest"))
        );
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
        assert_eq!(r.host(), "registry-1.docker.io");
        assert_eq!(parse("alpine:3.20").tag.as_deref(), Some("3.20"));
        assert_eq!(parse("user/app").repository, "user/app");
        assert_eq!(
            parse("index.docker.io/library/alpine:3").to_string(),
            "docker.io/library/alpine:3"
        );
        assert_eq!(parse("docker.io/alpine").repository, "library/alpine");
    }

    #[test]
    fn registries_ports_tags_and_digests() {
        let r = parse("127.0.0.1:5000/test/busybox:v1");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.host(), "127.0.0.1:5000");
        assert_eq!(r.repository, "test/busybox");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        let r = parse("localhost/app");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("localhost", "app")
        );
        // A port but no tag: the ':' is the registry's.
        let r = parse("reg.example:443/a/b");
        assert_eq!(
            (r.registry.as_str(), r.tag.as_deref()),
            ("reg.example:443", Some("latest"))
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse(&format!("ghcr.io/org/app@{d}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_ref().unwrap().to_string(), d);
        assert_eq!(r.to_string(), format!("ghcr.io/org/app@{d}"));
        let r = parse(&format!("ghcr.io/org/app:v2@{d}"));
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert_eq!(r.to_client().digest(), Some(d.as_str()));
    }

    #[test]
    fn bad_references_are_refused_with_the_reason() {
        let long = "a".repeat(600);
        for (bad, why) in [
            ("", "empty"),
            ("Alpine", "[a-z0-9]"),
            ("alpine:", "tag \"\""),
            ("alpine:-x", "not starting"),
            ("a//b", "empty path component"),
            ("reg.io:99999/a", "port"),
            ("reg.io:0/a", "port"),
            ("a/../b", "[a-z0-9]"),
            ("alpine@sha256:abc", "64"),
            ("alpine@md5:00", "sha256"),
            ("a b", "[a-z0-9._-]"),
            ("reg.io/a/b:t/c", "[a-z0-9._-]"),
            (long.as_str(), "longer than"),
        ] {
            let e = ImageRef::parse(bad).expect_err(bad);
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
        }
    }
}

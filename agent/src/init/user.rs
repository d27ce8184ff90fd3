//! The OCI `User` of an image (`uid`, `uid:gid`, `name`, `name:group`, `uid:group`...)
//! resolved against the guest's own `/etc/passwd` and `/etc/group` (a static agent has no NSS),
//! as container runtimes do: a user without a group gets its primary group from passwd (0 when
//! the uid is not listed), and its supplementary groups from `/etc/group`.

use std::path::Path;

/// The largest passwd or group file read.
const MAX_DB_BYTES: u64 = 4 * 1024 * 1024;

/// The most supplementary groups given (the kernel's `NGROUPS_MAX` is 65536).
const MAX_GROUPS: usize = 1024;

/// Who the command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// Supplementary groups (from `/etc/group` membership), without `gid`.
    pub groups: Vec<u32>,
    /// The home directory from passwd; `/root` for an unlisted root, `/` for others.
    pub home: String,
}

fn read_db(etc: &Path, name: &str) -> String {
    use std::io::Read as _;
    let mut s = String::new();
    if let Ok(f) = std::fs::File::open(etc.join(name)) {
        // A missing or unreadable database means no names, not an error: numeric ids work.
        let _ = f.take(MAX_DB_BYTES).read_to_string(&mut s);
    }
    s
}

/// (name, uid, gid, home) of each well-formed passwd line.
fn passwd(db: &str) -> impl Iterator<Item = (&str, u32, u32, &str)> {
    db.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        Some((
            *f.first()?,
            f.get(2)?.parse().ok()?,
            f.get(3)?.parse().ok()?,
            f.get(5).copied().unwrap_or(""),
        ))
    })
}

/// (name, gid, members) of each well-formed group line.
fn groups(db: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    db.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let members = f.get(3).map_or_else(Vec::new, |m| {
            m.split(',').filter(|s| !s.is_empty()).collect()
        });
        Some((*f.first()?, f.get(2)?.parse().ok()?, members))
    })
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Resolves `user` (root when `None`) against `<etc>/passwd` and `<etc>/group`.
///
/// # Errors
///
/// A name that is not listed, or an id out of range: a message naming it.
pub fn resolve(user: Option<&str>, etc: &Path) -> Result<Credentials, String> {
    let spec = user.unwrap_or("0");
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if u.is_empty() || g == Some("") {
        return Err(format!("User {spec:?} is not user[:group]"));
    }
    let pw = read_db(etc, "passwd");
    let (name, uid, primary, home) = if is_numeric(u) {
        let uid: u32 = u
            .parse()
            .map_err(|_| format!("User id {u:?} is out of range"))?;
        match passwd(&pw).find(|(_, id, _, _)| *id == uid) {
            Some((name, _, gid, home)) => (Some(name), uid, gid, home),
            None => (None, uid, 0, ""),
        }
    } else {
        let (name, uid, gid, home) = passwd(&pw)
            .find(|(n, _, _, _)| *n == u)
            .ok_or_else(|| format!("User {u:?} is not in {}/passwd", etc.display()))?;
        (Some(name), uid, gid, home)
    };
    let home = match (home, uid) {
        ("", 0) => "/root".to_string(),
        ("", _) => "/".to_string(),
        (h, _) => h.to_string(),
    };
    let gr = read_db(etc, "group");
    let gid = match g {
        None => primary,
        Some(g) if is_numeric(g) => g
            .parse()
            .map_err(|_| format!("Group id {g:?} is out of range"))?,
        Some(g) => groups(&gr)
            .find(|(n, _, _)| *n == g)
            .map(|(_, id, _)| id)
            .ok_or_else(|| format!("Group {g:?} is not in {}/group", etc.display()))?,
    };
    let mut extra: Vec<u32> = match (name, g) {
        // An explicit group replaces the user's memberships, as in Docker.
        (Some(name), None) => groups(&gr)
            .filter(|(_, _, members)| members.contains(&name))
            .map(|(_, id, _)| id)
            .filter(|id| *id != gid)
            .collect(),
        _ => Vec::new(),
    };
    extra.sort_unstable();
    extra.dedup();
    extra.truncate(MAX_GROUPS);
    Ok(Credentials {
        uid,
        gid,
        groups: extra,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etc() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34::/var/www:/bin/false\nbroken line\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("group"),
            "root:x:0:\nwww-data:x:34:\nstaff:x:50:app,www\naudio:x:29:app\napp:x:1000:\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn numeric_and_named_users() {
        let d = etc();
        let r = |u| resolve(u, d.path());
        let ids = |u| {
            let c: Credentials = r(u).unwrap();
            (c.uid, c.gid, c.groups, c.home)
        };
        assert_eq!(ids(None), (0, 0, vec![], "/root".into()));
        assert_eq!(
            ids(Some("app")),
            (1000, 1000, vec![29, 50], "/home/app".into())
        );
        assert_eq!(ids(Some("33")), (33, 34, vec![50], "/var/www".into()));
        // Unlisted uid: group 0, no memberships, home /.
        assert_eq!(ids(Some("4242")), (4242, 0, vec![], "/".into()));
        assert_eq!(
            ids(Some("app:staff")),
            (1000, 50, vec![], "/home/app".into())
        );
        assert_eq!(ids(Some("4242:7")), (4242, 7, vec![], "/".into()));
    }

    #[test]
    fn unknown_names_and_bad_forms_are_errors() {
        let d = etc();
        for bad in [
            "nobody",
            "app:nogroup",
            ":1",
            "1:",
            "99999999999",
            "1:99999999999",
        ] {
            let e = resolve(Some(bad), d.path()).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        assert!(resolve(Some("nobody"), d.path())
            .unwrap_err()
            .contains("\"nobody\""));
        // No databases at all: numeric ids still work.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(resolve(Some("5:6"), empty.path()).unwrap().gid, 6);
        assert!(resolve(Some("app"), empty.path()).is_err());
    }
}

//! `put_archive`: extracts the host's tar stream into an existing directory. Entries whose
//! names are absolute or hold `..`, hard links naming such a target, and entries that would be
//! written through a symlink (one already in the directory or made by an earlier entry) are
//! refused: the stream ends with an `ERROR` frame. A refused, malformed or aborted archive is
//! undone ([`Journal`]): what it created is removed, what it replaced is put back.

use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use hearth_proto::agent::frame::{write_frame, Frame};
use hearth_proto::agent::{codes, ArchiveSummary, ErrorBody};

use super::data::DataReader;
use super::journal::Journal;

/// Reads the host's frames from `reader` and extracts them into `dir`; answers `DONE` or
/// `ERROR` on `conn` (after an `ERROR`, the rest of the host's stream is read and dropped).
pub fn receive<R: Read, W: Write>(dir: &Path, reader: R, conn: &mut W) {
    let mut data = DataReader::new(reader);
    let mut journal = Journal::new();
    let result = extract(dir, &mut data, &mut journal).and_then(|summary| {
        // The tar end marker may come before the host's END: read up to it.
        let mut rest = [0u8; 4096];
        loop {
            match data.read(&mut rest) {
                Ok(0) => return Ok(summary),
                Ok(_) => {}
                Err(e) => return Err(archive_error(&format!("Reading the archive: {e}"))),
            }
        }
    });
    // Undone before the answer, so a host that saw ERROR finds the directory as it was.
    match result {
        Ok(summary) => {
            journal.commit();
            let _ = write_frame(conn, &Frame::done(&summary)).and_then(|()| conn.flush());
        }
        Err(e) => {
            journal.undo();
            // A framing or host failure says so rather than the tar error it caused.
            let broken = data.failure.take();
            let stream_ok = broken.is_none();
            let _ =
                write_frame(conn, &Frame::error(&broken.unwrap_or(e))).and_then(|()| conn.flush());
            // The host may still be sending: read its frames to their END, so it is not cut
            // off mid-write (a reset could lose the ERROR frame on its side).
            if stream_ok {
                let _ = io::copy(&mut data, &mut io::sink());
            }
        }
    }
}

fn archive_error(msg: &str) -> ErrorBody {
    ErrorBody::new(codes::ARCHIVE, msg.to_string())
}

/// The entry's name as plain components; `Err` for absolute names and `..`.
fn relative(name: &Path) -> Result<PathBuf, ErrorBody> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(archive_error(&format!(
                    "Entry {} holds \"..\"",
                    name.display()
                )))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(archive_error(&format!(
                    "Entry {} has an absolute name",
                    name.display()
                )))
            }
        }
    }
    Ok(out)
}

/// Refuses `rel` when an existing directory on the way to it (below `dir`) is a symlink.
fn no_symlink_on_the_way(dir: &Path, rel: &Path) -> Result<(), ErrorBody> {
    let mut at = dir.to_path_buf();
    let parents: Vec<Component<'_>> = rel.components().collect();
    for c in parents.iter().take(parents.len().saturating_sub(1)) {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(md) if md.file_type().is_symlink() => {
                return Err(archive_error(&format!(
                    "Entry {} would be written through the symlink {}",
                    rel.display(),
                    at.display()
                )))
            }
            Ok(_) => {}
            // Missing from here on: created as plain directories.
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

fn extract<R: Read>(
    dir: &Path,
    data: R,
    journal: &mut Journal,
) -> Result<ArchiveSummary, ErrorBody> {
    let io_fail = |what: &str, e: std::io::Error| archive_error(&format!("{what}: {e}"));
    let mut archive = tar::Archive::new(data);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let mut summary = ArchiveSummary {
        entries: 0,
        bytes: 0,
    };
    for entry in archive
        .entries()
        .map_err(|e| io_fail("Reading the archive", e))?
    {
        let mut entry = entry.map_err(|e| io_fail("Reading the archive", e))?;
        let name = entry
            .path()
            .map_err(|e| io_fail("Reading an entry name", e))?
            .into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let rel = relative(&name)?;
        if rel.as_os_str().is_empty() {
            // `./`: the directory itself, which exists.
            continue;
        }
        no_symlink_on_the_way(dir, &rel)?;
        let target = dir.join(&rel);
        if let Some(parent) = rel.parent() {
            journal.create_dirs(dir, parent).map_err(|e| {
                io_fail(
                    &format!("Creating the directories of {}", name.display()),
                    e,
                )
            })?;
        }
        // Whatever is at the name (a symlink included) is moved aside, never written through.
        let exists = journal
            .make_room(&target, kind.is_dir())
            .map_err(|e| io_fail(&format!("Making room for {}", name.display()), e))?;
        if !exists {
            journal.created(&target);
        }
        if kind.is_hard_link() {
            let link = entry
                .link_name()
                .map_err(|e| io_fail("Reading a link name", e))?
                .ok_or_else(|| {
                    archive_error(&format!("Hard link {} names nothing", name.display()))
                })?
                .into_owned();
            let src_rel = relative(&link)?;
            no_symlink_on_the_way(dir, &src_rel)?;
            let src = dir.join(&src_rel);
            if std::fs::symlink_metadata(&src).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(archive_error(&format!(
                    "Hard link {} names the symlink {}",
                    name.display(),
                    link.display()
                )));
            }
            std::fs::hard_link(&src, &target)
                .map_err(|e| io_fail(&format!("Linking {}", target.display()), e))?;
        } else {
            entry
                .unpack(&target)
                .map_err(|e| io_fail(&format!("Extracting {}", name.display()), e))?;
        }
        summary.entries += 1;
        if kind.is_file() {
            summary.bytes += entry.size();
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_relative_or_refused() {
        assert_eq!(relative(Path::new("./a/b")).unwrap(), Path::new("a/b"));
        assert!(relative(Path::new("/etc/passwd")).is_err());
        assert!(relative(Path::new("a/../../x")).is_err());
        assert!(relative(Path::new("./")).unwrap().as_os_str().is_empty());
    }
}

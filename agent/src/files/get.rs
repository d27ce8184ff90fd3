//! `get_archive`: a path as a tar stream whose top entry is the path's last component;
//! symlinks are archived as links, never followed.

use std::io::Write;
use std::path::Path;

use hearth_proto::agent::frame::{write_frame, Frame, FrameKind};
use hearth_proto::agent::{codes, ErrorBody, PathKind, PathStat};

use super::data::DataWriter;

/// Streams `path` (described by `stat`) to `conn` as `DATA` frames, then `END`; a failure part
/// way is answered with an `ERROR` frame instead of `END`.
pub fn send<W: Write>(path: &Path, stat: &PathStat, conn: &mut W) {
    let last = match archive(path, stat, conn) {
        Ok(()) => Frame::empty(FrameKind::End),
        Err(e) => Frame::error(&e),
    };
    let _ = write_frame(conn, &last).and_then(|()| conn.flush());
}

fn archive<W: Write>(path: &Path, stat: &PathStat, conn: &mut W) -> Result<(), ErrorBody> {
    let fail = |e: std::io::Error| {
        ErrorBody::new(codes::ARCHIVE, format!("Archiving {}: {e}", path.display()))
    };
    let mut builder = tar::Builder::new(DataWriter::new(&mut *conn));
    builder.follow_symlinks(false);
    if stat.kind == PathKind::Dir {
        builder.append_dir_all(&stat.name, path).map_err(fail)?;
    } else {
        builder
            .append_path_with_name(path, &stat.name)
            .map_err(fail)?;
    }
    builder
        .into_inner()
        .and_then(DataWriter::finish)
        .map_err(fail)?;
    Ok(())
}

//! `secrate ls` and `secrate cat`: read a snapshot without restoring it.

use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use secrate::ops::{cat as cat_file, resolve, walk, Resolved};
use secrate::repo::snapshot::format_secs;
use secrate::repo::tree::Entry;

use super::format::{bytes, mode};
use super::Globals;

#[derive(clap::Args)]
pub struct LsArgs {
    /// Snapshot id (a prefix is enough) or "latest".
    snapshot: String,
    /// List below this path only.
    path: Option<PathBuf>,
    /// Long format: mode, owner, size, mtime.
    #[arg(long, short)]
    long: bool,
}

#[derive(clap::Args)]
pub struct CatArgs {
    /// Snapshot id (a prefix is enough) or "latest".
    snapshot: String,
    /// Path of a file in the snapshot.
    path: PathBuf,
}

/// One line of `ls`: the path as its bytes are (names need not be UTF-8),
/// after the long format's columns.
fn line(long: bool, path: &[u8], e: &Entry) -> Vec<u8> {
    let mut out = if long {
        format!(
            "{} {:>6} {:>6} {:>10} {} ",
            mode(e.kind.letter(), e.mode),
            e.uid,
            e.gid,
            if e.kind == secrate::repo::tree::Kind::Dir {
                "-".to_string()
            } else {
                bytes(e.size)
            },
            format_secs(e.mtime.secs),
        )
        .into_bytes()
    } else {
        Vec::new()
    };
    out.push(b'/');
    out.extend_from_slice(path);
    out.push(b'\n');
    out
}

pub fn ls(g: &Globals, a: LsArgs) -> anyhow::Result<i32> {
    let repo = g.open_repo_for_reading()?;
    let (_, snap) = repo.find_snapshot(&a.snapshot)?;
    let path = a
        .path
        .map(|p| p.into_os_string().into_vec())
        .unwrap_or_default();
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let mut emit = |p: &[u8], e: &Entry| -> secrate::Result<()> {
        out.write_all(&line(a.long, p, e))
            .map_err(|e| secrate::Error::io("standard output", e))
    };
    let prefix = secrate::ops::components(&path)?.join(&b'/');
    match resolve(&repo, &snap, &path)? {
        Resolved::Root => walk(&repo, &snap.root, b"", &mut emit)?,
        Resolved::Entry(e) => {
            emit(&prefix, &e)?;
            if let Some(sub) = e.subtree() {
                walk(&repo, &sub, &prefix, &mut emit)?;
            }
        }
    }
    out.flush()?;
    Ok(0)
}

pub fn cat(g: &Globals, a: CatArgs) -> anyhow::Result<i32> {
    let repo = g.open_repo_for_reading()?;
    let (_, snap) = repo.find_snapshot(&a.snapshot)?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out.lock());
    cat_file(&repo, &snap, a.path.as_os_str().as_bytes(), &mut out)?;
    out.flush()?;
    Ok(0)
}

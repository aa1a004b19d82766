//! `secrate ls`, `secrate cat` and `secrate diff`: read snapshots without
//! restoring them.

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

#[derive(clap::Args)]
pub struct DiffArgs {
    /// The older snapshot: id (a prefix is enough) or "latest".
    old: String,
    /// The newer snapshot: id (a prefix is enough) or "latest".
    new: String,
    /// Compare below this path only.
    path: Option<PathBuf>,
}

/// `/path` as a line of `ls` or `diff` shows it: as its bytes are (names
/// need not be UTF-8), unless it holds a control character (a newline
/// would split it into two lines, the second like another path), `"` or
/// `\`: then in double quotes, with those written as C escapes (`\n`,
/// `\"`, `\\`, `\ooo`), as git quotes a path. An unquoted path starts
/// with `/`, a quoted one with `"`: every line reads one way only.
fn shown_path(path: &[u8]) -> Vec<u8> {
    let odd = |b: u8| b < 0x20 || b == 0x7f || b == b'"' || b == b'\\';
    let mut out = Vec::with_capacity(path.len() + 3);
    if !path.iter().any(|&b| odd(b)) {
        out.push(b'/');
        out.extend_from_slice(path);
        return out;
    }
    out.extend_from_slice(b"\"/");
    for &b in path {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b if odd(b) => out.extend_from_slice(format!("\\{b:03o}").as_bytes()),
            b => out.push(b),
        }
    }
    out.push(b'"');
    out
}

/// One line of `ls`: the path (see [`shown_path`]) after the long
/// format's columns.
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
    out.extend_from_slice(&shown_path(path));
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
    out.flush()
        .map_err(|e| secrate::Error::io("standard output", e))?;
    Ok(0)
}

pub fn cat(g: &Globals, a: CatArgs) -> anyhow::Result<i32> {
    let repo = g.open_repo_for_reading()?;
    let (_, snap) = repo.find_snapshot(&a.snapshot)?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out.lock());
    cat_file(&repo, &snap, a.path.as_os_str().as_bytes(), &mut out)?;
    out.flush()
        .map_err(|e| secrate::Error::io("standard output", e))?;
    Ok(0)
}

/// The entry at `path` of a snapshot, `None` if it has none there.
fn entry_at(
    repo: &secrate::repo::Repository,
    snap: &secrate::repo::snapshot::Snapshot,
    parts: &[&[u8]],
) -> secrate::Result<Option<Entry>> {
    let mut tree = snap.root;
    let mut found = None;
    for part in parts {
        if let Some(e) = &found {
            let Some(sub) = Entry::subtree(e) else {
                return Ok(None);
            };
            tree = sub;
        }
        match repo.read_tree(&tree)?.find(part) {
            Some(e) => found = Some(e.clone()),
            None => return Ok(None),
        }
    }
    Ok(found)
}

/// `secrate diff OLD NEW [PATH]`: one line per path that differs, `+`
/// added, `-` removed, `M` other content, `U` other attributes only, `T`
/// another kind; directories end in `/`, the source directory itself is
/// `/`; a path with a newline is quoted (see [`shown_path`]). Counts go to
/// standard error, and first a note for a side tagged `partial`.
pub fn diff(g: &Globals, a: DiffArgs) -> anyhow::Result<i32> {
    use secrate::ops::diff::{diff_entries, diff_trees, partial_notes, Change};
    let repo = g.open_repo_for_reading()?;
    let (old_id, old) = repo.find_snapshot(&a.old)?;
    let (new_id, new) = repo.find_snapshot(&a.new)?;
    // Even with -q: it says how the lines below are to be read.
    for note in partial_notes((&old_id, &old), (&new_id, &new)) {
        errln!("secrate: note: {note}");
    }
    let path = a
        .path
        .map(|p| p.into_os_string().into_vec())
        .unwrap_or_default();
    let parts = secrate::ops::components(&path)?;
    let prefix = parts.join(&b'/');
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    // The source directory itself has no entry: its attributes are the
    // snapshot's, compared when the whole snapshots are.
    let root_changed = parts.is_empty() && old.root_meta != new.root_meta;
    if root_changed {
        out.write_all(b"U    /\n")
            .map_err(|e| secrate::Error::io("standard output", e))?;
    }
    let mut emit = |c: Change, p: &[u8], e: &Entry| -> secrate::Result<()> {
        let mut line = format!("{}    ", c.letter()).into_bytes();
        let mut p = p.to_vec();
        if e.kind == secrate::repo::tree::Kind::Dir {
            p.push(b'/');
        }
        line.extend_from_slice(&shown_path(&p));
        line.push(b'\n');
        out.write_all(&line)
            .map_err(|e| secrate::Error::io("standard output", e))
    };
    let stats = if parts.is_empty() {
        let mut s = diff_trees(&repo, &old.root, &new.root, b"", &mut emit)?;
        s.metadata += u64::from(root_changed);
        s
    } else {
        let (o, n) = (
            entry_at(&repo, &old, &parts)?,
            entry_at(&repo, &new, &parts)?,
        );
        if o.is_none() && n.is_none() {
            anyhow::bail!(
                "{:?} is in neither snapshot {} nor {}",
                secrate::ops::shown(&path),
                old_id.short(),
                new_id.short()
            );
        }
        diff_entries(&repo, o.as_ref(), n.as_ref(), &prefix, &mut emit)?
    };
    out.flush()
        .map_err(|e| secrate::Error::io("standard output", e))?;
    if !g.quiet {
        errln!(
            "{} to {}: {} added, {} removed, {} changed, {} with other attributes, {} of another kind; files that differ: {} before, {} after",
            old_id.short(),
            new_id.short(),
            stats.added,
            stats.removed,
            stats.modified,
            stats.metadata,
            stats.type_changed,
            bytes(stats.old_bytes),
            bytes(stats.new_bytes),
        );
    }
    Ok(0)
}

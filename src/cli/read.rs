//! `secrate ls` and `secrate cat`: read a snapshot without restoring it.

use std::io::Write;

use secrate::ops::{cat as cat_file, resolve, walk, Resolved};
use secrate::repo::snapshot::format_time;
use secrate::repo::tree::Entry;

use super::format::{bytes, mode};
use super::Globals;

#[derive(clap::Args)]
pub struct LsArgs {
    /// Snapshot id (a prefix is enough) or "latest".
    snapshot: String,
    /// List below this path only.
    path: Option<String>,
    /// Long format: mode, owner, size, mtime.
    #[arg(long, short)]
    long: bool,
}

#[derive(clap::Args)]
pub struct CatArgs {
    /// Snapshot id (a prefix is enough) or "latest".
    snapshot: String,
    /// Path of a file in the snapshot.
    path: String,
}

fn line(long: bool, path: &str, e: &Entry) -> String {
    if !long {
        return format!("/{path}");
    }
    format!(
        "{} {:>6} {:>6} {:>10} {} /{path}",
        mode(e.kind.letter(), e.mode),
        e.uid,
        e.gid,
        if e.kind == secrate::repo::tree::Kind::Dir {
            "-".to_string()
        } else {
            bytes(e.size)
        },
        format_time(e.mtime.secs.saturating_mul(1_000_000_000)),
    )
}

pub fn ls(g: &Globals, a: LsArgs) -> anyhow::Result<i32> {
    let repo = g.open_repo_for_reading()?;
    let (_, snap) = repo.find_snapshot(&a.snapshot)?;
    let path = a.path.unwrap_or_default();
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let mut emit = |p: &str, e: &Entry| -> secrate::Result<()> {
        writeln!(out, "{}", line(a.long, p, e))
            .map_err(|e| secrate::Error::io("standard output", e))
    };
    let prefix = secrate::ops::components(&path)?.join("/");
    match resolve(&repo, &snap, &path)? {
        Resolved::Root => walk(&repo, &snap.root, "", &mut emit)?,
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
    cat_file(&repo, &snap, &a.path, &mut out)?;
    out.flush()?;
    Ok(0)
}

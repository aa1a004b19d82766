//! `secrate restore SNAPSHOT TARGET [--path SUBPATH]`.

use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use secrate::ops::restore::restore;

use super::format::{agree, bytes, count};
use super::progress::Bar;
use super::Globals;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot id (a prefix is enough) or "latest".
    snapshot: String,
    /// Directory to restore into (created if missing).
    target: PathBuf,
    /// Restore only this path of the snapshot: a directory's contents go
    /// straight into TARGET, a file into TARGET under its own name. What
    /// TARGET already holds under the same names is replaced.
    #[arg(long, value_name = "SUBPATH")]
    path: Option<PathBuf>,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let repo = g.open_repo_for_reading()?;
    let (id, snap) = repo.find_snapshot(&a.snapshot)?;
    super::raise_open_files_limit();
    let subpath = a.path.map(|p| p.into_os_string().into_vec());
    let bar = Bar::new(g.quiet);
    let s = restore(&repo, &snap, subpath.as_deref(), &a.target, &bar)?;
    // With errors this is no success: say "partly" where the counts are,
    // which scripts and eyes read first.
    outln!(
        "restored snapshot {}{}: {}, {}, {} into {}",
        id.short(),
        if s.errors.is_empty() { "" } else { " partly" },
        count(s.files, "file"),
        count(s.dirs, "dir"),
        bytes(s.bytes),
        a.target.display()
    )?;
    match s.errors.len() {
        0 => Ok(0),
        n => {
            errln!(
                "secrate: {} {} not restored fully (see the {} above)",
                count(n, "path"),
                agree(n, "was", "were"),
                agree(n, "warning", "warnings")
            );
            Ok(1)
        }
    }
}

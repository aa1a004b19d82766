//! `secrate restore SNAPSHOT TARGET [--path SUBPATH]`.

use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use secrate::ops::restore::restore;

use super::format::bytes;
use super::progress::Bar;
use super::Globals;

#[derive(clap::Args)]
pub struct Args {
    /// Snapshot id (a prefix is enough) or "latest".
    snapshot: String,
    /// Directory to restore into (created if missing).
    target: PathBuf,
    /// Restore only this path of the snapshot.
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
    outln!(
        "restored snapshot {}: {} files, {} dirs, {} into {}",
        id.short(),
        s.files,
        s.dirs,
        bytes(s.bytes),
        a.target.display()
    )?;
    if !s.errors.is_empty() {
        errln!(
            "secrate: {} paths were not restored fully (see the warnings above)",
            s.errors.len()
        );
        return Ok(1);
    }
    Ok(0)
}

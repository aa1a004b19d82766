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
    raise_open_files_limit();
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

/// Restore holds one directory handle per level of the tree it is in (per
/// thread, `ops::restore` says why): the usual soft limit of 1,024 open
/// files would refuse a tree about that deep, which restored by path
/// before. The hard limit is ours to take; if it cannot be had, the
/// levels past the limit are reported as errors.
fn raise_open_files_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

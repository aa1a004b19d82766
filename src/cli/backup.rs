//! `secrate backup PATH`: a new snapshot of a directory, without mounting.

use std::path::PathBuf;

use anyhow::Context;

use secrate::ops::backup::{backup, BackupOptions, PARTIAL_TAG};
use secrate::store::StoreUrl;

use super::format::{agree, bytes, count};
use super::progress::Bar;
use super::Globals;

#[derive(clap::Args)]
pub struct Args {
    /// The directory to back up.
    path: PathBuf,
    /// Tag the snapshot (may be repeated). A backup that could not read
    /// everything is tagged `partial` too.
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Record this host name instead of the machine's.
    #[arg(long)]
    host: Option<String>,
    /// Stay on the filesystem of PATH: a directory on another one (a mount
    /// point, such as /proc below /) is saved as an empty directory with
    /// its own mode, owner and times, as restic and rsync -x do.
    #[arg(short = 'x', long)]
    one_file_system: bool,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    if a.tags.iter().any(|t| t == PARTIAL_TAG) {
        anyhow::bail!("the tag `{PARTIAL_TAG}` is kept for backups that could not read everything; choose another");
    }
    limit_malloc_arenas();
    super::raise_open_files_limit();
    let source = std::fs::canonicalize(&a.path)
        .with_context(|| format!("cannot back up {}", a.path.display()))?;
    let repo = g.open_repo()?;
    let mut opts = BackupOptions::new(source);
    if let Some(h) = a.host {
        opts.host = h;
    }
    opts.tags = a.tags;
    opts.one_file_system = a.one_file_system;
    // Never back up the store into itself.
    if let Ok(StoreUrl::File(dir)) = StoreUrl::parse(&g.store_url) {
        if let Ok(d) = std::fs::canonicalize(dir) {
            opts.exclude.push(d);
        }
    }
    let bar = Bar::new(g.quiet);
    let s = backup(repo, &opts, &bar)?;
    outln!(
        "snapshot {} saved: files {} new, {} changed, {} unchanged; {}; read {}, added {} to the store in {:.1} s",
        s.id.short(),
        s.files_new,
        s.files_changed,
        s.files_unchanged,
        count(s.dirs, "dir"),
        bytes(s.bytes_read),
        bytes(s.bytes_added),
        s.duration.as_secs_f64()
    )?;
    if !s.errors.is_empty() {
        let n = s.errors.len();
        errln!(
            "secrate: {} could not be read and {} not in the snapshot (see the {} above); it is tagged `{PARTIAL_TAG}`",
            count(n, "entry"),
            agree(n, "is", "are"),
            agree(n, "warning", "warnings")
        );
        return Ok(3);
    }
    Ok(0)
}

/// Backup reads with four threads per core (ops/backup.rs); glibc would give
/// each its own malloc arena, and the freed buffers they keep cost ~100 MiB
/// of peak RSS on the Linux tree (253 vs 156 MiB) for no speed (9.3 vs
/// 9.5 s). One arena per core, set before the threads start.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        // SAFETY: mallopt only sets an allocator parameter.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, cores.max(2) as libc::c_int) };
    }
}

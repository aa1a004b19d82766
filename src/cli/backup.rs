//! `secrate backup PATH`: a new snapshot of a directory, without mounting.

use std::path::PathBuf;

use anyhow::Context;

use secrate::ops::backup::{backup, BackupOptions};
use secrate::store::StoreUrl;

use super::format::bytes;
use super::progress::Bar;
use super::Globals;

#[derive(clap::Args)]
pub struct Args {
    /// The directory to back up.
    path: PathBuf,
    /// Tag the snapshot (may be repeated).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Record this host name instead of the machine's.
    #[arg(long)]
    host: Option<String>,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let source = std::fs::canonicalize(&a.path)
        .with_context(|| format!("cannot back up {}", a.path.display()))?;
    let repo = g.open_repo()?;
    let mut opts = BackupOptions::new(source);
    if let Some(h) = a.host {
        opts.host = h;
    }
    opts.tags = a.tags;
    // Never back up the store into itself.
    if let Ok(StoreUrl::File(dir)) = StoreUrl::parse(&g.store_url) {
        if let Ok(d) = std::fs::canonicalize(dir) {
            opts.exclude.push(d);
        }
    }
    let bar = Bar::new(g.quiet);
    let s = backup(repo, &opts, &bar)?;
    println!(
        "snapshot {} saved: files {} new, {} changed, {} unchanged; {} dirs; read {}, added {} to the store in {:.1} s",
        s.id.short(),
        s.files_new,
        s.files_changed,
        s.files_unchanged,
        s.dirs,
        bytes(s.bytes_read),
        bytes(s.bytes_added),
        s.duration.as_secs_f64()
    );
    if !s.errors.is_empty() {
        eprintln!("secrate: {} entries could not be read and are not in the snapshot (see the warnings above)", s.errors.len());
        return Ok(3);
    }
    Ok(0)
}

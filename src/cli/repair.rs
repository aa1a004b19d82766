//! `secrate repair`: put back lost packs and blobs from mount caches and
//! source folders; make the index forget what is gone for good.

use std::path::PathBuf;

use secrate::ops::repair::{repair, RepairOptions};

use super::format::count;
use super::progress::Bar;
use super::Globals;

#[derive(clap::Args)]
pub struct Args {
    /// A folder whose files may hold lost data (what was backed up); repeatable.
    #[arg(long, value_name = "DIR")]
    from: Vec<PathBuf>,
    /// A mount cache directory to salvage from; repeatable.
    #[arg(long, value_name = "DIR")]
    cache: Vec<PathBuf>,
    /// Also decrypt every blob to find damaged ones, not only missing packs.
    #[arg(long)]
    read_data: bool,
    /// Show what would be done; change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// What every mount cache holds (src/mount.rs, src/live/).
const CACHE_PARTS: [&str; 5] = ["meta.redb", "packs", "outbox", "chunks", "staged"];

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    for d in a.from.iter().chain(&a.cache) {
        match std::fs::metadata(d) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => anyhow::bail!("{} is not a directory", d.display()),
            Err(e) => anyhow::bail!("cannot use {}: {e}", d.display()),
        }
    }
    // A mountpoint or any other folder given as a cache holds nothing
    // repair looks for: it then recorded as lost what the real cache held.
    for d in &a.cache {
        if !CACHE_PARTS.iter().any(|p| d.join(p).exists()) {
            anyhow::bail!(
                "{} is not a secrate mount cache (it has none of {}); `secrate status MOUNTPOINT` shows a mount's cache",
                d.display(),
                CACHE_PARTS.join(", ")
            );
        }
    }
    let repo = g.open_repo()?;
    let bar = Bar::new(g.quiet);
    let opts = RepairOptions {
        from: a.from,
        caches: a.cache,
        read_data: a.read_data,
        dry_run: a.dry_run,
    };
    let r = repair(repo, &opts, &bar)?;
    if r.packs_missing + r.packs_damaged + r.blobs_unindexed == 0 {
        outln!("nothing to repair: every indexed pack is in the store and every referenced chunk indexed")?;
        return Ok(0);
    }
    for (snap, path) in &r.damaged_files {
        outln!("lost: snapshot {snap}: {path}")?;
    }
    let would = if a.dry_run {
        " (dry run: nothing changed)"
    } else {
        ""
    };
    outln!(
        "{} missing, {} damaged, {} unindexed; {} put back from caches; {} lost, {} salvaged into {}, {} newly recorded as lost; {} in snapshots still lost{would}",
        count(r.packs_missing, "pack"),
        r.packs_damaged,
        count(r.blobs_unindexed, "referenced chunk"),
        r.packs_put_back,
        count(r.blobs_lost, "blob"),
        r.blobs_salvaged,
        count(r.packs_written, "new pack"),
        r.blobs_recorded,
        count(r.damaged_files.len(), "file")
    )?;
    if r.index_rewritten && !r.damaged_files.is_empty() {
        outln!("the lost data is recorded (damage/) and no index lists it: a mount marks those ranges of its files lost (reads give EIO, new snapshots never reference them) until a file is rewritten, and the next backup stores those files again where the source still has them")?;
    }
    Ok(if r.damaged_files.is_empty() { 0 } else { 1 })
}

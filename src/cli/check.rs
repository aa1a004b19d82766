//! `secrate check [--read-data]`: name every damaged file, exit 1 if any.
//!
//! Damage `secrate repair` recorded is listed as `recorded:` and new damage
//! as `damaged:`; either makes the exit code 1 (the snapshots holding it are
//! not whole), but the last line says whether anything is new.

use super::format::{agree, bytes, count};
use super::progress::Bar;
use super::Globals;

#[derive(clap::Args)]
pub struct Args {
    /// Also read, decrypt and re-hash every blob.
    #[arg(long)]
    read_data: bool,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let repo = g.open_repo()?;
    let bar = Bar::new(g.quiet);
    let r = secrate::ops::check::check(&repo, a.read_data, &bar)?;
    for n in &r.notes {
        outln!("note: {n}")?;
    }
    for p in &r.problems {
        outln!("error: {p}")?;
    }
    for (label, list) in [("damaged", &r.damage), ("recorded", &r.recorded)] {
        for d in list {
            outln!(
                "{label}: snapshot {} ({}): /{}: {}",
                d.snapshot.short(),
                d.time,
                d.path.trim_start_matches('/'),
                d.reason
            )?;
        }
    }
    let stores_ok = super::sync::report_stores(repo.store(), a.read_data)?;
    let read = if a.read_data {
        format!(
            ", read {} in {}",
            bytes(r.bytes_read),
            count(r.blobs_read, "blob")
        )
    } else {
        String::new()
    };
    // What was checked, as every summary ends.
    let checked = format!(
        "{}, {}, {}{read}",
        count(r.snapshots, "snapshot"),
        count(r.trees, "tree"),
        count(r.packs, "pack")
    );
    if r.is_clean() && !stores_ok {
        outln!(
            "the repository is intact ({checked}), but not every store holds all of it (run `secrate sync`)"
        )?;
        Ok(1)
    } else if r.is_clean() {
        outln!("no errors: {checked}")?;
        Ok(0)
    } else if !r.has_new_damage() {
        let files: std::collections::HashSet<_> = r.recorded.iter().map(|d| &d.path).collect();
        outln!(
            "no new damage, but {} in snapshots ({} distinct) {} data lost earlier and known as lost (recorded by `secrate repair`, or found by a mount before its upload); \
             a file rewritten (mount) or backed up again from its source is whole in later snapshots; {checked}",
            count(r.recorded.len(), "path"),
            files.len(),
            agree(r.recorded.len(), "holds", "hold")
        )?;
        Ok(1)
    } else {
        let files: std::collections::HashSet<_> = r.damage.iter().map(|d| &d.path).collect();
        outln!(
            "damage found: {} ({} distinct) and {}; {checked}",
            count(r.damage.len(), "damaged path"),
            files.len(),
            count(r.problems.len(), "damaged object")
        )?;
        Ok(1)
    }
}

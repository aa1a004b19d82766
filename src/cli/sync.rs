//! `secrate sync`: give every replica or shard store what it misses (or
//! holds damaged), copied or rebuilt from the others, byte-exact. Needs no
//! key: it moves stored bytes. Also the per-store part of `secrate check`.

use super::format::bytes;
use super::Globals;
use secrate::store::{Audit, Mode, Store};

#[derive(clap::Args)]
pub struct Args {
    /// Read and verify every copy and shard (else only names and sizes are
    /// compared).
    #[arg(long)]
    read_data: bool,

    /// Say what would be copied, change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    // Create: a store whose directory is gone is made again, to be filled.
    let store = g.open_store(!a.dry_run)?;
    if store.mode() == Mode::Single {
        outln!(
            "{} is a single store: nothing to sync (give --store several times for replicas)",
            store.url()
        )?;
        return Ok(0);
    }
    if store.head("config")?.is_none() {
        anyhow::bail!(secrate::Error::NoRepository {
            url: store.url().into()
        });
    }
    outln!("{}", store.layout().describe())?;
    let r = store.sync(a.read_data, a.dry_run)?;
    let verb = if a.dry_run { "would copy" } else { "copied" };
    for (i, (url, _)) in store.backends().iter().enumerate() {
        let mine: Vec<_> = r.copied.iter().filter(|(u, _, _)| u == url).collect();
        let total: u64 = mine.iter().map(|(_, _, n)| n).sum();
        let what = match store.mode() {
            Mode::Ec(_) => format!("shard {i}"),
            _ => "replica".into(),
        };
        outln!(
            "{url} ({what}): {verb} {} objects ({})",
            mine.len(),
            bytes(total)
        )?;
    }
    let verb = if a.dry_run { "would delete" } else { "deleted" };
    for (url, name) in &r.deleted {
        outln!("{url}: {verb} {name}: a removed key (its removal record is on the stores)")?;
    }
    for (url, name, why) in &r.failed {
        outln!("error: {url}: {name}: {why}")?;
    }
    if r.failed.is_empty() {
        if !a.dry_run {
            outln!("every store holds every object")?;
        }
        Ok(0)
    } else {
        outln!("{} objects could not be repaired", r.failed.len())?;
        Ok(1)
    }
}

/// Print what each store of a multi-store repository misses or holds
/// damaged. Returns true if every store is complete (always for one store).
pub fn report_stores(store: &Store, read_data: bool) -> anyhow::Result<bool> {
    if store.mode() == Mode::Single {
        return Ok(true);
    }
    let audit = store.audit(read_data)?;
    print_audit(&audit)?;
    Ok(audit.is_clean())
}

fn print_audit(a: &Audit) -> secrate::Result<()> {
    const SHOWN: usize = 20;
    outln!("stores: {} ({} objects)", a.layout.describe(), a.objects)?;
    for s in &a.stores {
        let label = match a.layout.mode {
            Mode::Ec(_) => format!("store {} (shard {})", s.url, s.position),
            _ => format!("store {}", s.url),
        };
        if let Some(why) = &s.unavailable {
            outln!("error: {label} cannot be listed: {why}")?;
            continue;
        }
        if let Some(why) = &s.gone {
            outln!(
                "error: {label} is gone ({why}): it misses all {} objects (run `secrate sync`)",
                s.missing.len()
            )?;
            continue;
        }
        for n in &s.removed {
            outln!(
                "error: {label} still holds {n}, a removed key (run `secrate sync` to delete it)"
            )?;
        }
        if s.is_clean() {
            outln!(
                "{label}: complete, {} objects, {}",
                s.objects,
                bytes(s.bytes)
            )?;
            continue;
        }
        if s.missing.is_empty() && s.corrupt.is_empty() {
            continue;
        }
        outln!(
            "error: {label} misses {} and holds {} damaged of {} objects (run `secrate sync`)",
            s.missing.len(),
            s.corrupt.len(),
            a.objects
        )?;
        for n in s.missing.iter().take(SHOWN) {
            outln!("  missing: {n}")?;
        }
        for (n, why) in s.corrupt.iter().take(SHOWN) {
            outln!("  damaged: {n}: {why}")?;
        }
        let more = s.missing.len().saturating_sub(SHOWN) + s.corrupt.len().saturating_sub(SHOWN);
        if more > 0 {
            outln!("  … and {more} more")?;
        }
    }
    for n in &a.removal_unfinished {
        outln!(
            "warning: {n} has a removal record but every store still holds it (it opens nothing): \
             `secrate key remove {}` finishes the removal",
            n.trim_start_matches("keys/")
        )?;
    }
    Ok(())
}

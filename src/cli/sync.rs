//! `secrate sync`: give every replica or shard store what it misses (or
//! holds damaged), copied or rebuilt from the others, byte-exact. Needs no
//! key: it moves stored bytes (but a removed key or a forgotten snapshot
//! left over on a store is deleted only once its removal record checks
//! under the keyring, so then it unlocks). Also the per-store part of
//! `secrate check`.

use super::format::{bytes, count};
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

    /// Leave this store out of the set of replicas (repeatable): once every
    /// other store is seen to hold every object, the set recorded in them
    /// no longer names it. Copies nothing.
    #[arg(long, value_name = "URL")]
    leave_out: Vec<String>,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    if !a.leave_out.is_empty() {
        return leave_out(g, &a);
    }
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
    // A removed key or forgotten snapshot left over on a store is deleted
    // only once its removal record checks under the keyring: the key is
    // needed only then.
    let checked = || -> secrate::Result<std::collections::HashSet<String>> {
        let secret =
            super::secret::for_open(g).map_err(|e| secrate::Error::Invalid(e.to_string()))?;
        secrate::repo::Repository::open(store.clone(), &secret)?.removed_objects()
    };
    let r = store.sync_with(a.read_data, a.dry_run, &checked)?;
    let verb = if a.dry_run { "would copy" } else { "copied" };
    for (i, (url, _)) in store.backends().iter().enumerate() {
        let mine: Vec<_> = r.copied.iter().filter(|(u, _, _)| u == url).collect();
        let total: u64 = mine.iter().map(|(_, _, n)| n).sum();
        let what = match store.mode() {
            Mode::Ec(_) => format!("shard {i}"),
            _ => "replica".into(),
        };
        outln!(
            "{url} ({what}): {verb} {} ({})",
            count(mine.len(), "object"),
            bytes(total)
        )?;
    }
    let verb = if a.dry_run { "would delete" } else { "deleted" };
    for (url, name) in &r.deleted {
        outln!(
            "{url}: {verb} {name}: {} (its removal record is on the stores)",
            removed_what(name)
        )?;
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
        outln!("{} could not be repaired", count(r.failed.len(), "object"))?;
        Ok(1)
    }
}

fn leave_out(g: &Globals, a: &Args) -> anyhow::Result<i32> {
    let store = g.open_store(false)?;
    if store.head("config")?.is_none() {
        anyhow::bail!(secrate::Error::NoRepository {
            url: store.url().into()
        });
    }
    let r = store.leave_out(&a.leave_out, a.read_data, a.dry_run)?;
    let (will, was) = if a.dry_run {
        ("would be", "would lose")
    } else {
        ("is", "lost")
    };
    for (url, done) in &r.left {
        if *done {
            outln!("{url}: left out; it {was} its list of stores and {will} a plain copy of the repository as it is now (delete it when you no longer want it)")?;
        } else {
            outln!("{url}: left out; it did not answer and keeps what it holds (delete it, or never give it again)")?;
        }
    }
    match r.kept.as_slice() {
        [one] => outln!("the repository {will} now on one store: {one}")?,
        kept => outln!(
            "the repository {will} now on {} replicas: {}",
            kept.len(),
            kept.join(", ")
        )?,
    }
    Ok(0)
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
    outln!(
        "stores: {} ({})",
        a.layout.describe(),
        count(a.objects, "object")
    )?;
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
                "error: {label} is gone ({why}): it misses all {} (run `secrate sync`)",
                count(s.missing.len(), "object")
            )?;
            continue;
        }
        for n in &s.removed {
            outln!(
                "error: {label} still holds {n}, {} (run `secrate sync` to delete it)",
                removed_what(n)
            )?;
        }
        if s.is_clean() {
            outln!(
                "{label}: complete, {}, {}",
                count(s.objects, "object"),
                bytes(s.bytes)
            )?;
            continue;
        }
        if s.missing.is_empty() && s.corrupt.is_empty() {
            continue;
        }
        outln!(
            "error: {label} misses {} and holds {} damaged of {} (run `secrate sync`)",
            s.missing.len(),
            s.corrupt.len(),
            count(a.objects, "object")
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
        if let Some(id) = n.strip_prefix("snapshots/") {
            outln!(
                "warning: {n} has a forgotten record but every store still holds it (a forget \
                 stopped half-way; if the record checks it is no snapshot): `secrate prune` \
                 deletes it ({}…)",
                &id[..id.len().min(8)]
            )?;
            continue;
        }
        outln!(
            "warning: {n} has a removal record but every store still holds it (it opens nothing): \
             `secrate key remove {}` finishes the removal",
            n.trim_start_matches("keys/")
        )?;
    }
    Ok(())
}

/// What a removal record says an object named by it is.
fn removed_what(name: &str) -> &'static str {
    if name.starts_with("snapshots/") {
        "a forgotten snapshot"
    } else {
        "a removed key"
    }
}

//! `secrate forget` and `secrate prune`: thin out history, remove data.

use std::time::Duration;

use secrate::crypto::Id;
use secrate::ops::forget::{decide, forget as forget_snapshots, parse_duration, Policy};
use secrate::ops::prune::{prune as prune_repo, PruneOptions, PruneReport};
use secrate::repo::find_in;

use super::format::{agree, bytes, count, parse_percent};
use super::progress::Bar;
use super::Globals;

#[derive(clap::Args)]
pub struct ForgetArgs {
    /// Snapshots to forget (ids or unique prefixes), whatever the policy says.
    snapshots: Vec<String>,
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    #[arg(long, value_name = "N")]
    keep_hourly: Option<u32>,
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    #[arg(long, value_name = "N")]
    keep_yearly: Option<u32>,
    /// Keep every snapshot up to this much older than the newest (e.g. 7d).
    #[arg(long, value_name = "DURATION", value_parser = |s: &str| parse_duration(s).map_err(|e| e.to_string()))]
    keep_within: Option<Duration>,
    /// Show what would be kept and removed, and why; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Prune afterwards (remove the data only forgotten snapshots used).
    #[arg(long)]
    prune: bool,
    /// With --prune: see `secrate prune --max-unused`.
    #[arg(long, default_value_t = 5.0, value_name = "PERCENT", value_parser = parse_percent)]
    max_unused: f64,
}

#[derive(clap::Args)]
pub struct PruneArgs {
    /// Repack packs with more than this percentage of unused bytes (0 removes
    /// every unused byte: use it to truly delete forgotten data).
    #[arg(long, default_value_t = 5.0, value_name = "PERCENT", value_parser = parse_percent)]
    max_unused: f64,
    /// Show what would be removed; change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn forget(g: &Globals, a: ForgetArgs) -> anyhow::Result<i32> {
    let policy = Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: a.keep_within,
    };
    if policy.is_empty() && a.snapshots.is_empty() {
        anyhow::bail!(
            "say which snapshots to forget: ids, or a policy such as --keep-last 10 --keep-daily 7"
        );
    }
    if !policy.is_empty() && policy.keeps_nothing() {
        anyhow::bail!(
            "a policy of only counts of 0 keeps no snapshot and would forget them all; give a count of 1 or more, or name the snapshots to forget"
        );
    }
    let repo = g.open_repo()?;
    let (all, bad) = repo.snapshots()?;
    for e in &bad {
        errln!("warning: {e}");
    }
    let mut ids: Vec<Id> = Vec::new();
    for s in &a.snapshots {
        ids.push(find_in(all.clone(), s, repo.url())?.0);
    }
    let policy = (!policy.is_empty()).then_some(policy);
    let mut decisions = decide(&all, policy.as_ref(), &ids);
    if policy.is_none() {
        // Only named snapshots go; the rest stay.
        for d in &mut decisions {
            if !ids.contains(&d.id) {
                d.keep = true;
                d.reasons = vec!["not named".into()];
            }
        }
    }
    for d in &decisions {
        outln!(
            "{} {} {:<20} {:<16} {}  ({})",
            if d.keep { "keep  " } else { "remove" },
            d.id.short(),
            d.snapshot.time_rfc3339(),
            d.snapshot.host,
            d.snapshot.source,
            d.reasons.join(", ")
        )?;
    }
    let gone = decisions.iter().filter(|d| !d.keep).count();
    if a.dry_run {
        outln!(
            "dry run: would remove {gone} of {}",
            count(decisions.len(), "snapshot")
        )?;
        return Ok(0);
    }
    let n = forget_snapshots(&repo, &decisions)?;
    outln!("removed {n} of {}", count(decisions.len(), "snapshot"))?;
    if a.prune {
        let r = prune_repo(
            repo,
            &PruneOptions {
                max_unused: a.max_unused / 100.0,
                dry_run: false,
            },
            &Bar::new(g.quiet),
        )?;
        print_prune(&r, false)?;
    }
    Ok(0)
}

pub fn prune(g: &Globals, a: PruneArgs) -> anyhow::Result<i32> {
    let repo = g.open_repo()?;
    let r = prune_repo(
        repo,
        &PruneOptions {
            max_unused: a.max_unused / 100.0,
            dry_run: a.dry_run,
        },
        &Bar::new(g.quiet),
    )?;
    print_prune(&r, a.dry_run)?;
    Ok(0)
}

fn print_prune(r: &PruneReport, dry: bool) -> secrate::Result<()> {
    let (remove, repack, replace) = if dry {
        ("would remove", "would repack", "would be replaced")
    } else {
        ("removed", "repacked", "replaced")
    };
    outln!(
        "{} {} {}; {} {} unused",
        count(r.snapshots, "snapshot"),
        agree(r.snapshots, "references", "reference"),
        count(r.blobs_used, "blob"),
        count(r.blobs_unused, "blob"),
        agree(r.blobs_unused, "is", "are")
    )?;
    if r.forgotten_left > 0 {
        outln!(
            "{remove} {} that a store still held (it missed the forget)",
            count(r.forgotten_left, "forgotten snapshot")
        )?;
    }
    if r.sets_merged > 0 {
        outln!(
            "merged {} into one",
            count(r.sets_merged, "forgotten set record")
        )?;
    }
    outln!(
        "{remove} {} and {repack} {} into {} new ({} removed, {} written); {} {replace}",
        count(r.packs_deleted, "pack"),
        r.packs_repacked,
        r.packs_written,
        bytes(r.bytes_deleted),
        bytes(r.bytes_written),
        count(r.index_deleted, "old index delta")
    )?;
    outln!(
        "store: {} before, {} after",
        bytes(r.bytes_before),
        bytes(r.bytes_after())
    )?;
    Ok(())
}

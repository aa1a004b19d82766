//! `secrate snapshots`: a table, or JSON for scripts.

use super::format::{bytes, count};
use super::Globals;

#[derive(clap::Args)]
pub struct Args {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let repo = g.open_repo()?;
    let (all, bad) = repo.snapshots()?;
    for e in &bad {
        errln!("warning: {e}");
    }
    if a.json {
        let v: Vec<serde_json::Value> = all
            .iter()
            .map(|(id, s)| {
                serde_json::json!({
                    "id": id.to_hex(),
                    "short_id": id.short(),
                    "time": s.time_rfc3339(),
                    "time_ns": s.time_ns,
                    "host": s.host,
                    "user": s.user,
                    "source": s.source,
                    "origin": match s.origin { secrate::repo::snapshot::Origin::Backup => "backup", secrate::repo::snapshot::Origin::Mount => "mount" },
                    "files": s.files,
                    "dirs": s.dirs,
                    "bytes": s.bytes,
                    "added_bytes": s.added_bytes,
                    "root": s.root.to_hex(),
                    "parent": s.parent.map(|p| p.to_hex()),
                    "tags": s.tags,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        outln!(
            "{:<8}  {:<20}  {:<16}  {:>9}  {:>10}  {:<10}  SOURCE",
            "ID",
            "TIME (UTC)",
            "HOST",
            "FILES",
            "SIZE",
            "TAGS"
        )?;
        for (id, s) in &all {
            // `partial` (a backup that could not read everything) shows here.
            let tags = if s.tags.is_empty() {
                "-".to_string()
            } else {
                s.tags.join(",")
            };
            outln!(
                "{:<8}  {:<20}  {:<16}  {:>9}  {:>10}  {:<10}  {}",
                id.short(),
                s.time_rfc3339(),
                s.host,
                s.files,
                bytes(s.bytes),
                tags,
                s.source
            )?;
        }
        outln!("{}", count(all.len(), "snapshot"))?;
    }
    Ok(if bad.is_empty() { 0 } else { 1 })
}

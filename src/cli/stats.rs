//! `secrate stats [--json]`: how big the repository is, per store and in
//! total; logical data vs unique blobs vs packs (dedup), and the redundancy
//! of the stores (replicas N×, erasure coding (K+M)/K).

use std::collections::HashSet;

use super::format::{agree, bytes, count};
use super::Globals;
use secrate::crypto::BlobKind;
use secrate::store::Mode;

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let repo = g.open_repo()?;
    let store = repo.store();
    let (snaps, bad) = repo.snapshots()?;
    for e in &bad {
        errln!("warning: {e}");
    }
    let latest = snaps.iter().max_by_key(|(_, s)| s.time_ns);
    let latest_bytes = latest.map_or(0, |(_, s)| s.bytes);
    let all_bytes: u64 = snaps.iter().map(|(_, s)| s.bytes).sum();
    let (data_blobs, data_raw, tree_blobs, tree_raw, packs, pack_bytes) = {
        let ix = repo.index();
        let (mut db, mut dr, mut tb, mut tr) = (0u64, 0u64, 0u64, 0u64);
        for (_, l) in ix.blobs() {
            match ix.packs()[l.pack as usize].kind {
                BlobKind::Data => {
                    db += 1;
                    dr += l.raw_len as u64;
                }
                BlobKind::Tree => {
                    tb += 1;
                    tr += l.raw_len as u64;
                }
            }
        }
        let mut seen = HashSet::new();
        let packs: Vec<u64> = ix
            .packs()
            .iter()
            .filter(|p| seen.insert(p.id))
            .map(|p| p.size)
            .collect();
        (
            db,
            dr,
            tb,
            tr,
            packs.len() as u64,
            packs.iter().sum::<u64>(),
        )
    };
    let mut stores = Vec::new();
    let mut stored = 0u64;
    let mut held: Vec<Option<HashSet<String>>> = Vec::new();
    for (url, b) in store.backends() {
        match b
            .map_err(|e| e.to_string())
            .and_then(|b| b.list_all().map_err(|e| e.to_string()))
        {
            Ok(l) => {
                let n: u64 = l.iter().map(|o| o.size).sum();
                stored += n;
                stores.push(serde_json::json!({"url": url, "objects": l.len(), "bytes": n}));
                held.push(Some(
                    l.into_iter()
                        .map(|o| o.name)
                        .filter(|n| !n.starts_with("locks/"))
                        .collect(),
                ));
            }
            Err(e) => {
                stores.push(serde_json::json!({"url": url, "error": e}));
                held.push(None);
            }
        }
    }
    // The redundancy is the layout's only while every store holds every
    // object: a store that is gone, wiped or behind is said to be so.
    let all: HashSet<&String> = held.iter().flatten().flatten().collect();
    let mut short = 0;
    for (s, h) in stores.iter_mut().zip(&held) {
        let missing = match h {
            Some(h) => all.iter().filter(|n| !h.contains(**n)).count(),
            None => all.len(),
        };
        if missing > 0 {
            short += 1;
        }
        s["missing"] = missing.into();
    }
    let (mode, k, m) = match store.mode() {
        Mode::Single => ("single", None, None),
        Mode::Replicas => ("replicas", None, None),
        Mode::Ec(p) => ("ec", Some(p.k), Some(p.m)),
    };
    let redundancy = store.redundancy();
    let v = serde_json::json!({
        "mode": mode,
        "ec_k": k,
        "ec_m": m,
        "stores": stores,
        "snapshots": snaps.len(),
        "latest_snapshot_bytes": latest_bytes,
        "all_snapshots_bytes": all_bytes,
        "unique_data_blobs": data_blobs,
        "unique_data_bytes": data_raw,
        "tree_blobs": tree_blobs,
        "tree_bytes": tree_raw,
        "packs": packs,
        "pack_bytes": pack_bytes,
        "stored_bytes": stored,
        "dedup_ratio": ratio(all_bytes, data_raw),
        "compression_ratio": ratio(data_raw + tree_raw, pack_bytes),
        "redundancy": redundancy,
        "stored_per_logical": ratio(stored, all_bytes),
    });
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(0);
    }
    let how = match store.mode() {
        Mode::Single => "one store".to_string(),
        Mode::Replicas => format!("{} replicas", store.backends().len()),
        Mode::Ec(p) => format!("erasure-coded {p}"),
    };
    if short == 0 {
        outln!("stores ({how}, redundancy {redundancy:.2}×):")?;
    } else {
        outln!(
            "stores ({how}, redundancy {redundancy:.2}× only once every store is complete: {short} of {} {} objects, run `secrate sync`):",
            stores.len(),
            agree(short, "misses", "miss")
        )?;
    }
    for s in &stores {
        match s.get("error") {
            Some(e) => outln!(
                "  {}: unavailable: {}",
                s["url"].as_str().unwrap_or(""),
                e.as_str().unwrap_or("")
            )?,
            None => outln!(
                "  {}: {}, {}{}",
                s["url"].as_str().unwrap_or(""),
                count(s["objects"].as_u64().unwrap_or(0), "object"),
                bytes(s["bytes"].as_u64().unwrap_or(0)),
                match s["missing"].as_u64().unwrap_or(0) {
                    0 => String::new(),
                    n => format!(" (misses {})", count(n, "object")),
                }
            )?,
        }
    }
    outln!("snapshots:                    {}", snaps.len())?;
    outln!("latest snapshot (logical):    {}", bytes(latest_bytes))?;
    outln!("all snapshots (logical):      {}", bytes(all_bytes))?;
    outln!(
        "unique data (after dedup):    {} in {} (dedup {:.2}×)",
        bytes(data_raw),
        count(data_blobs, "chunk"),
        ratio(all_bytes, data_raw)
    )?;
    outln!(
        "trees:                        {} in {}",
        bytes(tree_raw),
        count(tree_blobs, "blob")
    )?;
    outln!(
        "packs (compressed, sealed):   {} in {} ({:.2}× from data and trees)",
        bytes(pack_bytes),
        count(packs, "pack"),
        ratio(data_raw + tree_raw, pack_bytes)
    )?;
    outln!(
        "stored on all stores:         {} ({:.2}× the packs, {:.3}× the logical data)",
        bytes(stored),
        ratio(stored, pack_bytes),
        ratio(stored, all_bytes)
    )?;
    Ok(0)
}

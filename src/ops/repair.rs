//! `repair`: after packs were lost or damaged in the store, put back what
//! can be found elsewhere and make the index tell the truth about the rest.
//!
//! 1. Find the bad packs: indexed but missing, of the wrong size, or (with
//!    `read_data`) holding blobs that fail to decrypt.
//! 2. Put whole packs back from mount caches (`packs/`, `outbox/`) when a
//!    cached copy hashes to the pack's name.
//! 3. Salvage lost blobs: the readable blobs of damaged packs, decrypted
//!    chunks in mount caches (`chunks/`), and the chunks of files in mount
//!    caches (`staged/`) and in source folders (`--from`), each verified
//!    against its keyed id. They go into new packs.
//! 4. Record the blobs found nowhere in a damage record (`damage/<id>`,
//!    src/repo/damage.rs), then write a complete new index without the bad
//!    packs, then delete the old index deltas and the damaged packs (the
//!    same order as prune, under the writer lock: a crash at any point loses
//!    nothing, and the record exists before any index stops listing what it
//!    names).
//!
//! Blobs found nowhere stay lost, recorded, and the index no longer lists
//! them: a backup then reads a file that needs them again instead of
//! trusting the old chunk list, a mount marks those ranges of its files lost
//! so its new snapshots never reference them, and storing the chunks again
//! heals every snapshot that referenced them. The report names each damaged
//! file per snapshot.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::crypto::{BlobKind, Id};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::index::index_name;
use crate::repo::pack::{pack_name, PackBlob, PackInfo};
use crate::repo::tree::Kind;
use crate::repo::writer::{BlobWriter, StoreSink};
use crate::repo::Repository;

#[derive(Debug, Default, Clone)]
pub struct RepairOptions {
    /// Folders whose files may hold lost chunks (the backed-up sources).
    pub from: Vec<PathBuf>,
    /// Mount cache directories.
    pub caches: Vec<PathBuf>,
    /// Decrypt every blob to find damaged ones (not only missing packs).
    pub read_data: bool,
    pub dry_run: bool,
}

#[derive(Debug, Default)]
pub struct RepairReport {
    pub packs_missing: usize,
    pub packs_damaged: usize,
    pub packs_put_back: usize,
    pub blobs_lost: usize,
    /// Chunks that snapshots reference and no index lists.
    pub blobs_unindexed: usize,
    pub blobs_salvaged: usize,
    /// Lost blobs newly written into a damage record.
    pub blobs_recorded: usize,
    pub packs_written: usize,
    pub index_rewritten: bool,
    /// (snapshot short id, path) of files that still reference lost blobs.
    pub damaged_files: Vec<(String, String)>,
}

pub fn repair(
    repo: Arc<Repository>,
    opts: &RepairOptions,
    progress: &dyn Progress,
) -> Result<RepairReport> {
    let lock = repo.lock("repair")?;
    for p in repo.load_index()? {
        progress.warn(&format!("{p}; its packs are read from their headers"));
    }
    let (orphans, bad_headers) = repo.find_unindexed_packs()?;
    for e in &bad_headers {
        progress.warn(&format!("{e} (left alone)"));
    }
    repo.add_to_index(&orphans);
    let mut report = RepairReport::default();

    let listed: HashMap<Id, u64> = repo
        .store()
        .list("packs")?
        .into_iter()
        .filter_map(|o| crate::repo::pack::pack_id_from_name(&o.name).map(|id| (id, o.size)))
        .collect();
    let (packs, by_pack) = {
        let ix = repo.index();
        (ix.packs().to_vec(), ix.blobs_by_pack())
    };

    // 1. Bad packs, and which of their blobs are unreadable.
    let mut bad: HashMap<usize, Vec<PackBlob>> = HashMap::new(); // pack position → lost blobs
    let mut damaged_present: HashSet<usize> = HashSet::new();
    for (i, p) in packs.iter().enumerate() {
        match listed.get(&p.id) {
            None => {
                report.packs_missing += 1;
                bad.insert(i, by_pack[i].clone());
            }
            Some(&size) if size != p.size => {
                report.packs_damaged += 1;
                damaged_present.insert(i);
                bad.insert(i, by_pack[i].clone());
            }
            Some(_) if opts.read_data => {
                let lost: Vec<PackBlob> = by_pack[i]
                    .iter()
                    .filter(|b| repo.read_blob(p.kind, &b.id).is_err())
                    .cloned()
                    .collect();
                if !lost.is_empty() {
                    report.packs_damaged += 1;
                    damaged_present.insert(i);
                    bad.insert(i, lost);
                }
            }
            Some(_) => {}
        }
    }
    // Chunks snapshots reference that no index lists (forgotten by an
    // earlier repair, or lost with an index): salvageable too.
    let unindexed = referenced_unindexed(&repo)?;
    report.blobs_unindexed = unindexed.len();
    if bad.is_empty() && unindexed.is_empty() {
        return Ok(report);
    }

    // 2. Whole packs from mount caches, verified by their names.
    let mut put_back: HashSet<usize> = HashSet::new();
    for (&i, _) in bad.iter() {
        let id = packs[i].id;
        let name = pack_name(&id);
        let candidates: Vec<PathBuf> = opts
            .caches
            .iter()
            .flat_map(|c| {
                [
                    c.join("packs").join(id.to_hex()),
                    c.join("outbox").join(name.replace('/', "_")),
                ]
            })
            .collect();
        for path in candidates {
            let Ok(bytes) = fs::read(&path) else { continue };
            if Id::of_object(&bytes) == id && bytes.len() as u64 == packs[i].size {
                if !opts.dry_run {
                    repo.store().put(&name, bytes.into())?;
                }
                put_back.insert(i);
                report.packs_put_back += 1;
                progress.warn(&format!("{name} put back from {}", path.display()));
                break;
            }
        }
    }
    for i in &put_back {
        bad.remove(i);
        damaged_present.remove(i);
    }
    if bad.is_empty() && unindexed.is_empty() {
        return Ok(report);
    }

    // Lost blobs, unless another healthy pack holds a copy (the index keeps
    // one location per blob, so look at every pack's list).
    let healthy_has: HashSet<Id> = by_pack
        .iter()
        .enumerate()
        .filter(|(i, _)| !bad.contains_key(i))
        .flat_map(|(_, b)| b.iter().map(|b| b.id))
        .collect();
    let mut lost: HashMap<Id, BlobKind> = HashMap::new();
    for (&i, blobs) in &bad {
        for b in blobs {
            if !healthy_has.contains(&b.id) {
                lost.insert(b.id, packs[i].kind);
            }
        }
    }
    for id in &unindexed {
        lost.entry(*id).or_insert(BlobKind::Data);
    }
    report.blobs_lost = lost.len();

    // 3. Salvage.
    let writer = BlobWriter::for_repack(repo.clone(), Arc::new(StoreSink(repo.clone())), 3);
    let mut found: HashSet<Id> = HashSet::new();
    let mut offer = |kind: BlobKind, id: Id, data: &[u8]| -> Result<()> {
        if lost.get(&id) == Some(&kind) && !found.contains(&id) {
            if !opts.dry_run {
                writer.add_with_id(kind, id, data)?;
            }
            found.insert(id);
        }
        Ok(())
    };
    // The readable blobs of damaged packs that are still present move too,
    // since those packs are deleted below.
    for &i in &damaged_present {
        let lost_here: HashSet<Id> = bad[&i].iter().map(|b| b.id).collect();
        for b in &by_pack[i] {
            if !lost_here.contains(&b.id) && !healthy_has.contains(&b.id) {
                if let Ok(data) = repo.read_blob(packs[i].kind, &b.id) {
                    if !opts.dry_run {
                        writer.add_with_id(packs[i].kind, b.id, &data)?;
                    }
                }
            }
        }
    }
    let keys = repo.keys().clone();
    let chunker = repo.chunker();
    let mut files: Vec<PathBuf> = Vec::new();
    for c in &opts.caches {
        if let Ok(rd) = fs::read_dir(c.join("chunks")) {
            for e in rd.flatten() {
                let Some(id) = e.file_name().to_str().and_then(Id::from_hex) else {
                    continue;
                };
                if !lost.contains_key(&id) {
                    continue;
                }
                if let Ok(data) = fs::read(e.path()) {
                    if keys.blob_id(BlobKind::Data, &data) == id {
                        offer(BlobKind::Data, id, &data)?;
                    }
                }
            }
        }
        collect_files(&crate::live::staged_dir(c), &mut files);
    }
    for f in &opts.from {
        collect_files(f, &mut files);
    }
    progress.start("salvage", None);
    for path in files {
        let Ok(file) = fs::File::open(&path) else {
            continue;
        };
        for chunk in chunker.stream(file) {
            let Ok(chunk) = chunk else { break };
            let id = keys.blob_id(BlobKind::Data, &chunk);
            offer(BlobKind::Data, id, &chunk)?;
        }
        progress.advance(1);
    }
    progress.finish();

    report.blobs_salvaged = found.len();
    if opts.dry_run {
        report.damaged_files = damaged_files(&repo, &lost, &found)?;
        return Ok(report);
    }
    let (written, _) = writer.finish()?;
    report.packs_written = written.len();

    // 4. The damage record first (only what no record lists yet), then the
    // index that forgets those blobs.
    let (recorded, bad_records) = repo.recorded_damage()?;
    for e in &bad_records {
        progress.warn(&format!(
            "{e} (a new record lists its blobs again if still lost)"
        ));
    }
    let record = crate::repo::damage::DamageRecord::new(
        lost.iter()
            .filter(|(id, _)| !found.contains(id) && !recorded.contains_key(id))
            .map(|(id, kind)| (*kind, *id)),
    );
    if !record.lost.is_empty() {
        lock.check()?;
        let id = repo.write_damage(&record)?;
        report.blobs_recorded = record.lost.len();
        progress.warn(&format!(
            "{} recorded: {} blobs lost for good",
            crate::repo::damage::damage_name(&id),
            record.lost.len()
        ));
    }

    // A complete new index without the bad packs, then the old deltas, then
    // the damaged packs.
    let old_deltas: Vec<String> = repo
        .store()
        .list("index")?
        .into_iter()
        .map(|o| o.name)
        .collect();
    let mut all: Vec<PackInfo> = packs
        .iter()
        .enumerate()
        .filter(|(i, _)| !bad.contains_key(i))
        .map(|(i, p)| PackInfo {
            id: p.id,
            kind: p.kind,
            size: p.size,
            wrapped_key: p.wrapped_key.clone(),
            blobs: by_pack[i].clone(),
        })
        .collect();
    all.extend(written);
    let mut new_deltas = HashSet::new();
    for batch in all.chunks(256) {
        new_deltas.insert(index_name(&repo.write_index(batch)?));
    }
    lock.check()?;
    for d in old_deltas.iter().filter(|d| !new_deltas.contains(*d)) {
        repo.store().delete(d)?;
    }
    for i in &damaged_present {
        repo.store().delete(&pack_name(&packs[*i].id))?;
    }
    report.index_rewritten = true;
    report.damaged_files = damaged_files(&repo, &lost, &found)?;
    drop(lock);
    Ok(report)
}

/// Data chunks referenced by any snapshot's readable trees and in no index.
fn referenced_unindexed(repo: &Repository) -> Result<HashSet<Id>> {
    let (snaps, _) = repo.snapshots()?;
    let mut seen: HashSet<Id> = HashSet::new();
    let mut out = HashSet::new();
    let mut todo: Vec<Id> = snaps.iter().map(|(_, s)| s.root).collect();
    while let Some(t) = todo.pop() {
        if !seen.insert(t) {
            continue;
        }
        let Ok(tree) = repo.read_tree(&t) else {
            continue;
        };
        let ix = repo.index();
        for e in &tree.entries {
            if let Some(sub) = e.subtree() {
                todo.push(sub);
            }
            out.extend(
                e.chunks()
                    .iter()
                    .map(|c| c.id)
                    .filter(|id| !id.is_lost() && !ix.contains(id)),
            );
        }
    }
    Ok(out)
}

/// Regular files under `dir`, recursively (symlinks not followed).
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => collect_files(&e.path(), out),
            Ok(t) if t.is_file() => out.push(e.path()),
            _ => {}
        }
    }
}

/// Files of every snapshot that reference a blob lost and not found.
fn damaged_files(
    repo: &Repository,
    lost: &HashMap<Id, BlobKind>,
    found: &HashSet<Id>,
) -> Result<Vec<(String, String)>> {
    let gone: HashSet<Id> = lost
        .keys()
        .filter(|id| !found.contains(id))
        .copied()
        .collect();
    let mut out = Vec::new();
    let (snaps, _) = repo.snapshots()?;
    for (id, s) in &snaps {
        let mut stack = vec![(s.root, String::new())];
        while let Some((tree, prefix)) = stack.pop() {
            if gone.contains(&tree) {
                out.push((id.short(), format!("{prefix}/ (the directory itself)")));
                continue;
            }
            let t = match repo.read_tree(&tree) {
                Ok(t) => t,
                Err(Error::Missing { .. }) | Err(Error::Corrupt { .. }) => {
                    out.push((id.short(), format!("{prefix}/ (unreadable directory)")));
                    continue;
                }
                Err(e) => return Err(e),
            };
            for e in &t.entries {
                let path = format!("{prefix}/{}", String::from_utf8_lossy(&e.name));
                match e.kind {
                    Kind::Dir => {
                        if let Some(sub) = e.subtree() {
                            stack.push((sub, path));
                        }
                    }
                    Kind::File
                        if e.chunks()
                            .iter()
                            .any(|c| c.id.is_lost() || gone.contains(&c.id)) =>
                    {
                        out.push((id.short(), path));
                    }
                    _ => {}
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

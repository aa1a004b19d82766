//! `repair`: after packs were lost or damaged in the store, put back what
//! can be found elsewhere and make the index tell the truth about the rest.
//!
//! 1. Find the bad packs: indexed but missing, of the wrong size, or (with
//!    `read_data`) holding blobs that fail to decrypt. Only a missing object
//!    or bytes that fail to verify make a blob lost: any other error (the
//!    store failing, a write-only key) stops repair before it changes
//!    anything.
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
use crate::repo::index::{index_name, PackMeta};
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
    if opts.read_data && !repo.keys().can_read_data() {
        return Err(Error::WriteOnly {
            what: "repair --read-data needs a key that can read".into(),
        });
    }
    let lock = repo.lock("repair")?;
    // Afresh: packs a prune deleted after the index was first loaded are
    // not lost.
    for p in repo.load_index_afresh()? {
        progress.warn(&format!("{p}; its packs are read from their headers"));
    }
    let (orphans, bad_headers) = repo.find_unindexed_packs()?;
    for e in &bad_headers {
        progress.warn(&format!("{e} (left alone)"));
    }
    repo.add_to_index(&orphans);
    let mut report = RepairReport::default();

    let listed: HashMap<Id, u64> = repo.listed_packs()?;
    let (packs, by_pack) = {
        let ix = repo.index();
        // Every copy of every blob: a copy in a healthy pack keeps a blob
        // whose first copy is lost, and the new index lists it.
        (ix.packs().to_vec(), ix.all_blobs_by_pack())
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
                // Truncated or extended: the blobs within it may still read.
                let lost = unreadable(&repo, p, &by_pack[i], size)?;
                report.packs_damaged += 1;
                damaged_present.insert(i);
                bad.insert(i, lost);
            }
            Some(&size) if opts.read_data => {
                let lost = unreadable(&repo, p, &by_pack[i], size)?;
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

    // Lost blobs, unless another healthy pack holds a copy, or a damaged
    // one holds a readable copy (moved below).
    let healthy_has: HashSet<Id> = by_pack
        .iter()
        .enumerate()
        .filter(|(i, _)| !bad.contains_key(i))
        .flat_map(|(_, b)| b.iter().map(|b| b.id))
        .collect();
    let readable_in_damaged: HashSet<Id> = damaged_present
        .iter()
        .flat_map(|i| {
            let lost_here: HashSet<Id> = bad[i].iter().map(|b| b.id).collect();
            by_pack[*i]
                .iter()
                .map(|b| b.id)
                .filter(move |id| !lost_here.contains(id))
        })
        .collect();
    let mut lost: HashMap<Id, BlobKind> = HashMap::new();
    for (&i, blobs) in &bad {
        for b in blobs {
            if !healthy_has.contains(&b.id) && !readable_in_damaged.contains(&b.id) {
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
                // It read a moment ago: an error now (the store failing or
                // changing) stops repair before anything is deleted.
                let data = repo.read_blob_in(&packs[i], b)?;
                if !opts.dry_run {
                    writer.add_with_id(packs[i].kind, b.id, &data)?;
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
            "{} recorded: {} lost for good",
            crate::repo::damage::damage_name(&id),
            crate::log::count(record.lost.len(), "blob")
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

/// The blobs of pack `p` (`size` bytes in the store) that are lost: past
/// its end, missing, or failing to verify. Any other error says nothing
/// about them and is returned.
fn unreadable(
    repo: &Repository,
    p: &PackMeta,
    blobs: &[PackBlob],
    size: u64,
) -> Result<Vec<PackBlob>> {
    let mut lost = Vec::new();
    for b in blobs {
        if b.offset as u64 + b.length as u64 > size {
            lost.push(*b);
            continue;
        }
        match repo.read_blob_in(p, b) {
            Ok(_) => {}
            Err(e) if e.is_damage() => lost.push(*b),
            Err(Error::WriteOnly { .. }) => {
                return Err(Error::WriteOnly {
                    what: format!(
                        "repair needs a key that can read to salvage the blobs of {}",
                        pack_name(&p.id)
                    ),
                })
            }
            Err(e) => return Err(e),
        }
    }
    Ok(lost)
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::repo::lock::{hostname, now_ns};
    use crate::repo::snapshot::{Origin, Snapshot};
    use crate::repo::tests::test_init;
    use crate::repo::tree::tests::file;
    use crate::repo::tree::{ChunkRef, Entry, Tree};
    use crate::repo::Secret;
    use crate::store::Store;

    pub(crate) use crate::progress::Quiet;

    /// The repository in `store`, opened with passphrase `pw`, index loaded.
    pub(crate) fn open(store: &Store, pw: &str) -> Arc<Repository> {
        let r =
            Repository::open(store.clone(), &Secret::Passphrase(pw.to_string().into())).unwrap();
        r.load_index().unwrap();
        Arc::new(r)
    }

    /// Chunk `i` of the test files: 2000 bytes that hardly compress.
    pub(crate) fn chunk(i: u8) -> Vec<u8> {
        (0..2000u32)
            .map(|j| (j.wrapping_mul(2_654_435_761) >> 13) as u8 ^ i)
            .collect()
    }

    /// A snapshot of files `f0`.. whose one chunk each is `ids[i]`.
    fn snapshot_of_chunks(repo: &Arc<Repository>, ids: &[Id]) {
        let files = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| file(&format!("f{i}"), vec![ChunkRef { id, len: 2000 }]))
            .collect();
        snapshot_of(repo, files);
    }

    /// A snapshot of a directory holding `entries`.
    pub(crate) fn snapshot_of(repo: &Arc<Repository>, entries: Vec<Entry>) -> Id {
        let w = BlobWriter::new(repo.clone(), Arc::new(StoreSink(repo.clone())), 1);
        let root = w.add(BlobKind::Tree, &Tree { entries }.encode()).unwrap();
        let (packs, _) = w.finish().unwrap();
        repo.write_index(&packs).unwrap();
        repo.write_snapshot(&Snapshot {
            host: hostname(),
            ..Snapshot::test(now_ns(), Origin::Backup, root)
        })
        .unwrap()
    }

    /// A repository with one snapshot of files `f0`..: file `fi` is chunk
    /// `i`, and all chunks are in one data pack, returned with its blobs
    /// in the order of their offsets.
    pub(crate) fn one_pack_repo(url: &str, n: u8) -> (Arc<Repository>, PackInfo) {
        let repo = Arc::new(test_init(url));
        let w = BlobWriter::new(repo.clone(), Arc::new(StoreSink(repo.clone())), 1);
        let ids: Vec<Id> = (0..n)
            .map(|i| w.add(BlobKind::Data, &chunk(i)).unwrap())
            .collect();
        let (mut packs, _) = w.finish().unwrap();
        assert_eq!(packs.len(), 1);
        let mut pack = packs.pop().unwrap();
        pack.blobs.sort_by_key(|b| b.offset);
        repo.write_index(std::slice::from_ref(&pack)).unwrap();
        snapshot_of_chunks(&repo, &ids);
        (repo, pack)
    }

    /// A repository stored twice over in part, as two writers racing, a
    /// retried upload or `repair` leave one (`two_copies_repo`).
    pub(crate) struct TwoCopies {
        pub repo: Arc<Repository>,
        /// The data packs holding chunk 0: `data[0]` is the copy lookups
        /// find (in a repository opened afresh), `data[1]` the other.
        pub data: Vec<PackInfo>,
        /// The tree packs holding the snapshot's root, in the same order.
        pub trees: Vec<PackInfo>,
        /// Chunks 0, 1 and 2: files `f0`, `f1` and `f2`.
        pub ids: Vec<Id>,
        /// The chunk (1 or 2) whose one copy is in `data[0]`.
        pub lone: usize,
        pub root: Id,
    }

    /// A repository with one snapshot of files `f0`, `f1` and `f2` (chunks
    /// 0, 1 and 2): chunk 0 is in two data packs, one with chunk 1, the
    /// other with chunk 2, and the root tree is in two tree packs.
    pub(crate) fn two_copies_repo(url: &str) -> TwoCopies {
        let repo = Arc::new(test_init(url));
        let repack = || BlobWriter::for_repack(repo.clone(), Arc::new(StoreSink(repo.clone())), 1);
        for other in [1, 2] {
            let w = repack();
            w.add(BlobKind::Data, &chunk(0)).unwrap();
            w.add(BlobKind::Data, &chunk(other)).unwrap();
            let (packs, _) = w.finish().unwrap();
            assert_eq!(packs.len(), 1);
            repo.write_index(&packs).unwrap();
        }
        let ids: Vec<Id> = (0..3)
            .map(|i| repo.keys().blob_id(BlobKind::Data, &chunk(i)))
            .collect();
        snapshot_of_chunks(&repo, &ids);
        let root = repo.find_snapshot("latest").unwrap().1.root;
        let raw = repo.read_blob(BlobKind::Tree, &root).unwrap();
        let w = repack();
        w.add_with_id(BlobKind::Tree, root, &raw).unwrap();
        let (again, _) = w.finish().unwrap();
        repo.write_index(&again).unwrap();
        // Which copy comes first depends on the order the index deltas
        // load in: ask a repository opened afresh.
        let fresh = open(repo.store(), "pw");
        let copies_of = |id: &Id| -> Vec<PackInfo> {
            let ix = fresh.index();
            let by_pack = ix.all_blobs_by_pack();
            ix.copies(id)
                .iter()
                .map(|(p, _)| {
                    let i = ix.packs().iter().position(|q| q.id == p.id).unwrap();
                    PackInfo {
                        id: p.id,
                        kind: p.kind,
                        size: p.size,
                        wrapped_key: p.wrapped_key.clone(),
                        blobs: by_pack[i].clone(),
                    }
                })
                .collect()
        };
        let (data, trees) = (copies_of(&ids[0]), copies_of(&root));
        assert_eq!((data.len(), trees.len()), (2, 2));
        let lone = if data[0].blobs.iter().any(|b| b.id == ids[1]) {
            1
        } else {
            2
        };
        TwoCopies {
            repo,
            data,
            trees,
            ids,
            lone,
            root,
        }
    }

    impl TwoCopies {
        /// Spoil the first copies of chunk 0 and of the root: their packs
        /// deleted (`delete`), or a byte flipped in each blob.
        pub(crate) fn spoil_first(&self, delete: bool) {
            let (repo, data, trees) = (&self.repo, &self.data, &self.trees);
            if delete {
                for p in [&data[0], &trees[0]] {
                    repo.store().delete(&pack_name(&p.id)).unwrap();
                }
            } else {
                damage_blob(repo, &data[0], &self.ids[0]);
                damage_blob(repo, &trees[0], &self.root);
            }
        }
    }

    /// Flip a byte inside the copy of blob `id` in pack `pack`.
    pub(crate) fn damage_blob(repo: &Repository, pack: &PackInfo, id: &Id) {
        let b = pack.blobs.iter().find(|b| b.id == *id).unwrap();
        rewrite(repo, &pack.id, |bytes| {
            bytes[b.offset as usize + b.length as usize / 2] ^= 1
        });
    }

    /// The file that holds blob `id` (as `one_pack_repo` made them).
    pub(crate) fn file_of(repo: &Repository, id: &Id) -> String {
        let i = (0..=255u8)
            .position(|i| repo.keys().blob_id(BlobKind::Data, &chunk(i)) == *id)
            .unwrap();
        format!("f{i}")
    }

    /// Change the stored bytes of pack `id`.
    pub(crate) fn rewrite(repo: &Repository, id: &Id, f: impl FnOnce(&mut Vec<u8>)) {
        let name = pack_name(id);
        let mut b = repo.store().get(&name).unwrap().to_vec();
        f(&mut b);
        repo.store().put(&name, b.into()).unwrap();
    }

    /// The packs, index deltas and damage records in the store.
    fn listing(store: &Store) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for dir in ["packs", "index", "damage"] {
            out.extend(
                store
                    .list(dir)
                    .unwrap()
                    .into_iter()
                    .map(|o| (o.name, o.size)),
            );
        }
        out.sort();
        out
    }

    fn write_only(repo: &Repository) -> Arc<Repository> {
        repo.add_key(&Secret::Passphrase("wo".to_string().into()), true, 4)
            .unwrap();
        let wo = open(repo.store(), "wo");
        assert!(!wo.keys().can_read_data());
        wo
    }

    const READ_DATA: RepairOptions = RepairOptions {
        from: Vec::new(),
        caches: Vec::new(),
        read_data: true,
        dry_run: false,
    };

    /// A key that cannot decrypt data cannot tell a damaged blob from a
    /// healthy one: refused, nothing changed (it once deleted every pack).
    #[test]
    fn read_data_with_a_write_only_key_is_refused() {
        let (repo, _) = one_pack_repo("memory://repair-wo-read", 3);
        let wo = write_only(&repo);
        let before = listing(repo.store());
        let err = repair(wo, &READ_DATA, &Quiet).expect_err("refused");
        assert!(matches!(err, Error::WriteOnly { .. }), "{err}");
        assert_eq!(listing(repo.store()), before);
    }

    /// Salvaging the blobs of a damaged data pack needs to read them.
    #[test]
    fn a_write_only_key_cannot_salvage_a_damaged_data_pack() {
        let (repo, pack) = one_pack_repo("memory://repair-wo-size", 3);
        let wo = write_only(&repo);
        rewrite(&repo, &pack.id, |b| b.truncate(b.len() - 7));
        let before = listing(repo.store());
        let err = repair(wo, &RepairOptions::default(), &Quiet).expect_err("refused");
        assert!(matches!(err, Error::WriteOnly { .. }), "{err}");
        assert_eq!(listing(repo.store()), before);
    }

    /// A store that fails to serve a pack says nothing about its bytes:
    /// repair stops before deleting anything.
    #[test]
    fn a_store_error_stops_repair_before_anything_changes() {
        let (repo, _) = one_pack_repo("memory://repair-store-error", 3);
        let before = listing(repo.store());
        let faulty = repo.store().with_faults("error_rate=1,reads_of=packs");
        let err = repair(open(&faulty, "pw"), &READ_DATA, &Quiet).expect_err("stopped");
        assert!(matches!(err, Error::Store { .. }), "{err}");
        assert_eq!(listing(repo.store()), before);
    }

    /// A truncated pack loses the blobs past the cut, no others.
    #[test]
    fn the_readable_blobs_of_a_truncated_pack_are_kept() {
        let (repo, pack) = one_pack_repo("memory://repair-truncated", 3);
        let last = *pack.blobs.last().unwrap();
        rewrite(&repo, &pack.id, |b| {
            b.truncate(last.offset as usize + last.length as usize / 2)
        });
        let report = repair(open(repo.store(), "pw"), &RepairOptions::default(), &Quiet).unwrap();
        assert_eq!(
            (report.packs_damaged, report.blobs_lost),
            (1, 1),
            "{report:?}"
        );
        let after = open(repo.store(), "pw");
        for b in &pack.blobs[..2] {
            after.read_blob(BlobKind::Data, &b.id).unwrap();
        }
        assert!(!after.index().contains(&last.id));
        let (recorded, _) = after.recorded_damage().unwrap();
        assert_eq!(recorded.keys().collect::<Vec<_>>(), vec![&last.id]);
        let damaged: Vec<String> = report.damaged_files.into_iter().map(|f| f.1).collect();
        assert_eq!(damaged, vec![format!("/{}", file_of(&repo, &last.id))]);
    }

    /// Bytes appended to a pack hide none of its blobs.
    #[test]
    fn a_pack_with_bytes_appended_loses_nothing() {
        let (repo, pack) = one_pack_repo("memory://repair-appended", 3);
        rewrite(&repo, &pack.id, |b| b.extend_from_slice(&[7; 100]));
        let report = repair(open(repo.store(), "pw"), &RepairOptions::default(), &Quiet).unwrap();
        assert_eq!(
            (report.packs_damaged, report.blobs_lost),
            (1, 0),
            "{report:?}"
        );
        assert!(report.damaged_files.is_empty(), "{report:?}");
        let after = open(repo.store(), "pw");
        for b in &pack.blobs {
            after.read_blob(BlobKind::Data, &b.id).unwrap();
        }
        assert!(!after.index().has_pack(&pack.id));
        assert!(after.recorded_damage().unwrap().0.is_empty());
        let checked = crate::ops::check::check(&after, true, &Quiet).unwrap();
        assert!(checked.is_clean(), "{checked:?}");
    }

    /// A blob stored in two packs survives the loss of the one the index
    /// reads it from.
    #[test]
    fn a_blob_with_a_healthy_copy_elsewhere_is_not_lost() {
        let two = two_copies_repo("memory://repair-two-copies");
        let (repo, ids) = (&two.repo, &two.ids);
        repo.store().delete(&pack_name(&two.data[0].id)).unwrap();
        let report = repair(open(repo.store(), "pw"), &RepairOptions::default(), &Quiet).unwrap();
        assert_eq!(
            (report.packs_missing, report.blobs_lost),
            (1, 1),
            "{report:?}"
        );
        let after = open(repo.store(), "pw");
        assert_eq!(after.read_blob(BlobKind::Data, &ids[0]).unwrap(), chunk(0));
        assert!(!after.recorded_damage().unwrap().0.contains_key(&ids[0]));
        assert_eq!(report.damaged_files.len(), 1, "{report:?}");
    }
}

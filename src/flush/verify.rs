//! VERIFY: what the uploader makes sure of before an outbox item goes to
//! the store, and what it does when that fails.
//!
//! An outbox item (a pack, an index delta or a snapshot object, each named
//! by the BLAKE3 hash of its bytes) can wait on the local disk for days.
//! Its bytes are hashed again before its put (`Repository::put_sealed`);
//! one that changed since the seal is never uploaded. It is moved to
//! `damaged/` in the cache (to look at, never read again) and replaced:
//! an index delta or a snapshot object is sealed again from what the cache
//! keeps of it (`outbox_packs`, `pending_snapshots`); a pack's blobs are
//! dropped from the index and marked lost in the live tree
//! (src/live/lost.rs), so the next seal stores them again from the staged
//! copies that still hold them.
//!
//! A pending snapshot is *confirmed* before its upload when something may
//! have taken blobs it relies on: a damaged outbox pack, or a writer lock
//! this mount did not inherit from itself (`secrate unlock` removed it, and
//! a prune may then have deleted packs the snapshot shares with snapshots
//! forgotten since; then the next snapshot too, built from a live tree
//! that may name such blobs). Confirming walks its trees and finds every blob in the
//! index (which the mount loaded from the store at start; packs this mount
//! uploaded but no delta lists yet are looked up in the store). Blobs
//! missing are marked lost in the live tree, a new seal stores what the
//! cache still holds, and its packs and index deltas go up first; if the
//! snapshot is then whole it goes up, else it is never uploaded: it is
//! dropped from the outbox and `.history`, and the mount says so in its log
//! and in `secrate status`. Snapshots sealed after such an event are built
//! from an index without those blobs and need no walk.
//!
//! Invariant: a snapshot object reaches the store only when every blob it
//! names is in a pack the store holds, as far as this mount can know.

use std::collections::{HashMap, HashSet};

use redb::ReadableTable;

use crate::crypto::{BlobKind, Id};
use crate::error::{Error, Result};
use crate::flush::outbox::{self, Item, ItemKind};
use crate::flush::{live_err, Flusher};
use crate::live::cache_err;
use crate::repo::index::{decode_delta, index_name};
use crate::repo::pack::{pack_id_from_name, pack_name, PackInfo};
use crate::repo::snapshot::{snapshot_name, Snapshot};
use crate::repo::tree::Content;

/// Snapshots of this seal generation or older are confirmed before upload.
const CONFIRM_THROUGH: &str = "confirm_through_gen";
/// What went wrong in the outbox, newest last, for `secrate status`.
const PROBLEMS: &str = "outbox_problems";
/// Problems kept for `status` (each is in the mount's log too).
const MAX_PROBLEMS: usize = 20;

fn problems_in(tx: &crate::live::Tx<'_, '_>) -> crate::live::LiveResult<Vec<String>> {
    let raw = tx.state(PROBLEMS)?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&raw)
        .lines()
        .map(str::to_string)
        .collect())
}

/// What confirming a pending snapshot found.
pub(crate) enum Confirmed {
    /// Nothing since its seal calls for a look: upload as usual.
    Untouched,
    /// Every blob it names is in the store (maybe stored again just now,
    /// which uploaded items after it: the caller reads the outbox again).
    Whole,
    /// It cannot be made whole and is gone from the outbox.
    Refused,
}

impl Flusher {
    /// Confirm every snapshot sealed so far before its upload, and the
    /// next one (the lock was not inherited from this cache's last mount).
    /// The next one is built from the live tree, whose clean directories
    /// and files may name what a prune took although no snapshot waits.
    pub(crate) fn confirm_pending(&self) -> Result<()> {
        let _seal = self.seal_mutex.lock().unwrap_or_else(|e| e.into_inner());
        self.live
            .tx(|tx| {
                let through = (tx.state_u64("seal_gen")? + 1).max(tx.state_u64(CONFIRM_THROUGH)?);
                tx.set_state_u64(CONFIRM_THROUGH, through)
            })
            .map_err(live_err)?;
        self.live.commit(true).map_err(live_err)
    }

    /// Problems found in the outbox (also in the mount's log), oldest first.
    pub fn outbox_problems(&self) -> Vec<String> {
        self.live.tx(|tx| problems_in(tx)).unwrap_or_default()
    }

    fn report(&self, problem: String) {
        crate::log!("error: {problem}");
        let r = self
            .live
            .tx(|tx| {
                let mut all = problems_in(tx)?;
                all.push(problem.replace('\n', " "));
                let skip = all.len().saturating_sub(MAX_PROBLEMS);
                tx.set_state(PROBLEMS, all[skip..].join("\n").as_bytes())
            })
            .and_then(|()| self.live.commit(true));
        if let Err(e) = r {
            crate::log!("warning: recording the outbox problem for status: {e}");
        }
    }

    /// Where damaged outbox items are set aside, to look at.
    fn damaged_dir(&self) -> std::path::PathBuf {
        self.live.dir().join("damaged")
    }

    /// The user has seen the problems in `seen` (`secrate status
    /// --clear-problems`): forget them, and delete the items set aside in
    /// `damaged/` that no problem still listed names (a problem reported
    /// since keeps its item). Returns (problems forgotten, items deleted).
    pub fn clear_outbox_problems(&self, seen: &[String]) -> Result<(usize, usize)> {
        let (cleared, left) = self
            .live
            .tx(|tx| {
                let all = problems_in(tx)?;
                let (cleared, left): (Vec<String>, Vec<String>) =
                    all.into_iter().partition(|p| seen.contains(p));
                tx.set_state(PROBLEMS, left.join("\n").as_bytes())?;
                Ok((cleared.len(), left))
            })
            .map_err(live_err)?;
        self.live.commit(true).map_err(live_err)?;
        let dir = self.damaged_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((cleared, 0)),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut deleted = 0;
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&dir, e))?.path();
            let shown = path.display().to_string();
            if left.iter().any(|p| p.contains(&shown)) {
                continue;
            }
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            deleted += 1;
        }
        Ok((cleared, deleted))
    }

    /// Item `seq` failed its check before upload (`Error::OutboxDamaged`):
    /// set it aside and replace it as far as the cache allows.
    pub(crate) fn set_aside_damaged(&self, seq: u64, item: &Item) -> Result<()> {
        let path = outbox::file_for(self.live.dir(), &item.name);
        let aside = self.damaged_dir();
        std::fs::create_dir_all(&aside).map_err(|e| Error::io(&aside, e))?;
        let kept = aside.join(item.name.replace('/', "_"));
        // A second name first: the item lists this file until replaced.
        if std::fs::hard_link(&path, &kept).is_err() && !kept.exists() {
            let _ = std::fs::copy(&path, &kept);
        }
        // Nothing reads it again: not the uploader, not the blob reader.
        if let Some(id) = pack_id_from_name(&item.name) {
            self.reader.remove_outbox(&id);
        }
        let what = match item.kind {
            ItemKind::Pack => self.replace_damaged_pack(seq, item)?,
            ItemKind::Index => {
                self.reseal_index(seq, item.gen)?;
                "its index delta was sealed again from this cache's records; nothing is lost"
                    .to_string()
            }
            ItemKind::Snapshot => self.reseal_snapshot(seq, item)?,
        };
        // Listed no more (committed above).
        let _ = std::fs::remove_file(&path);
        self.report(format!(
            "outbox: {} was damaged on this cache's disk after it was sealed (its bytes no longer \
             hash to its name): not uploaded, kept as {}; {what}",
            item.name,
            kept.display()
        ));
        Ok(())
    }

    /// A damaged pack: out of the outbox, the index and the index delta of
    /// its seal; its blobs marked lost in the live tree (the files whose
    /// staged copy holds them are sealed again); every snapshot sealed so
    /// far is confirmed before its upload.
    fn replace_damaged_pack(&self, seq: u64, item: &Item) -> Result<String> {
        let Some(id) = pack_id_from_name(&item.name) else {
            return Err(Error::Invalid(format!(
                "outbox item {}: not a pack",
                item.name
            )));
        };
        // No seal may run meanwhile: one that deduplicated against these
        // blobs after the confirmation mark was set would not be confirmed.
        let _seal = self.seal_mutex.lock().unwrap_or_else(|e| e.into_inner());
        let info: Vec<PackInfo> = self
            .live
            .tx(|tx| {
                let t = tx
                    .txn()
                    .open_table(outbox::OUTBOX_PACKS)
                    .map_err(cache_err)?;
                let v = t.get(&id.0[..]).map_err(cache_err)?;
                match v {
                    Some(v) => decode_delta(v.value())
                        .map_err(|e| crate::live::LiveError::Cache(format!("outbox pack: {e}"))),
                    None => Ok(Vec::new()),
                }
            })
            .map_err(live_err)?;
        let lost: HashMap<Id, BlobKind> = info
            .iter()
            .flat_map(|p| p.blobs.iter().map(move |b| (b.id, p.kind)))
            .collect();
        // In one commit with the removal: once the pack is gone from the
        // outbox, every snapshot sealed so far is confirmed (which marks
        // the live tree again if a crash comes before `mark_lost` below).
        self.live
            .tx(|tx| {
                outbox::remove(tx, seq)?;
                let through = tx
                    .state_u64("seal_gen")?
                    .max(tx.state_u64(CONFIRM_THROUGH)?);
                tx.set_state_u64(CONFIRM_THROUGH, through)?;
                let mut t = tx
                    .txn()
                    .open_table(outbox::OUTBOX_PACKS)
                    .map_err(cache_err)?;
                t.remove(&id.0[..]).map_err(cache_err)?;
                Ok(())
            })
            .map_err(live_err)?;
        self.reseal_index_of_gen(item.gen)?;
        self.live.commit(true).map_err(live_err)?;
        self.repo.drop_packs(&[id]);
        let marked = self.live.mark_lost(&lost).map_err(live_err)?;
        let mut what = format!(
            "the blobs it held ({}) are stored again where this cache still has them",
            lost.len()
        );
        for path in &marked.restaged {
            crate::log!("{path}: stored again from this cache's copy (an outbox pack was damaged)");
        }
        for (path, bytes) in &marked.damaged {
            what.push_str(&format!(
                "; {path}: {bytes} bytes are lost (reads give EIO until it is rewritten)"
            ));
        }
        Ok(what)
    }

    /// The packs whose index delta belongs to seal `gen`: those this cache
    /// records that are not waiting for the upload of a later seal. (At
    /// this point every earlier seal's delta is uploaded, which drops its
    /// packs' records.)
    fn packs_of_gen(tx: &crate::live::Tx, gen: u64) -> crate::live::LiveResult<Vec<PackInfo>> {
        let later: HashSet<Id> = outbox::items(tx)?
            .iter()
            .filter(|(_, i)| i.kind == ItemKind::Pack && i.gen != gen)
            .filter_map(|(_, i)| pack_id_from_name(&i.name))
            .collect();
        let mut packs = Vec::new();
        for (id, delta) in recorded_packs(tx)? {
            if later.contains(&id) {
                continue;
            }
            packs.extend(
                decode_delta(&delta)
                    .map_err(|e| crate::live::LiveError::Cache(format!("outbox pack: {e}")))?,
            );
        }
        Ok(packs)
    }

    /// Seal seal `gen`'s index delta again if it is waiting in the outbox.
    fn reseal_index_of_gen(&self, gen: u64) -> Result<()> {
        let items = self.live.tx(|tx| outbox::items(tx)).map_err(live_err)?;
        match items
            .iter()
            .find(|(_, i)| i.kind == ItemKind::Index && i.gen == gen)
        {
            Some((seq, _)) => self.reseal_index(*seq, gen),
            None => Ok(()),
        }
    }

    /// Replace index delta item `seq` with one sealed again from the
    /// records of its packs (none left: the item goes).
    fn reseal_index(&self, seq: u64, gen: u64) -> Result<()> {
        let packs = self
            .live
            .tx(|tx| Self::packs_of_gen(tx, gen))
            .map_err(live_err)?;
        let old = self
            .live
            .tx(|tx| Ok(outbox::items(tx)?.into_iter().find(|(s, _)| *s == seq)))
            .map_err(live_err)?;
        let Some((_, old)) = old else { return Ok(()) };
        let new = if packs.is_empty() {
            None
        } else {
            let (id, bytes) = self.repo.seal_index(&packs);
            let name = index_name(&id);
            let p = outbox::file_for(self.live.dir(), &name);
            outbox::write_durable(&p, &bytes).map_err(|e| Error::io(&p, e))?;
            Some(Item {
                kind: ItemKind::Index,
                gen,
                name,
                size: bytes.len() as u64,
            })
        };
        self.live
            .tx(|tx| match &new {
                Some(item) => outbox::replace(tx, seq, item),
                None => outbox::remove(tx, seq),
            })
            .map_err(live_err)?;
        self.live.commit(true).map_err(live_err)?;
        if new.as_ref().map(|n| &n.name) != Some(&old.name) {
            let _ = std::fs::remove_file(outbox::file_for(self.live.dir(), &old.name));
        }
        Ok(())
    }

    /// Replace snapshot item `seq` with its snapshot sealed again from the
    /// plaintext the cache keeps (a new id: the sealing is randomized).
    fn reseal_snapshot(&self, seq: u64, item: &Item) -> Result<String> {
        self.reseal_snapshot_with(seq, item, |_| {})
    }

    /// `reseal_snapshot`, changing the snapshot with `edit` first.
    fn reseal_snapshot_with(
        &self,
        seq: u64,
        item: &Item,
        edit: impl FnOnce(&mut Snapshot),
    ) -> Result<String> {
        let old_id = item
            .name
            .strip_prefix("snapshots/")
            .and_then(Id::from_hex)
            .ok_or_else(|| Error::Invalid(format!("outbox item {}: not a snapshot", item.name)))?;
        let Some(mut snapshot) = self.pending_snapshot(&old_id)? else {
            // Nothing to seal it from: it goes, as a snapshot that cannot
            // be made whole does.
            self.refuse_snapshot(seq, &item.name)?;
            return Ok("the cache holds no other copy of it: that snapshot is not uploaded".into());
        };
        edit(&mut snapshot);
        let (id, bytes) = self.repo.seal_snapshot(&snapshot);
        let name = snapshot_name(&id);
        let p = outbox::file_for(self.live.dir(), &name);
        outbox::write_durable(&p, &bytes).map_err(|e| Error::io(&p, e))?;
        let new = Item {
            kind: ItemKind::Snapshot,
            gen: item.gen,
            name,
            size: bytes.len() as u64,
        };
        self.live
            .tx(|tx| {
                outbox::replace(tx, seq, &new)?;
                let mut t = tx
                    .txn()
                    .open_table(outbox::PENDING_SNAPSHOTS)
                    .map_err(cache_err)?;
                t.remove(&old_id.0[..]).map_err(cache_err)?;
                t.insert(&id.0[..], snapshot.encode().as_slice())
                    .map_err(cache_err)?;
                drop(t);
                if tx.state("last_snapshot")?.as_deref() == Some(&old_id.0[..]) {
                    tx.set_state("last_snapshot", &id.0)?;
                }
                Ok(())
            })
            .map_err(live_err)?;
        self.live.commit(true).map_err(live_err)?;
        {
            let mut snaps = self.snapshots.write().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = snaps.iter_mut().find(|s| s.id == old_id) {
                s.id = id;
            }
        }
        self.snapshots_changed();
        Ok(format!(
            "the snapshot was sealed again from this cache's record of it, as {}; nothing is lost",
            id.to_hex()
        ))
    }

    /// The plaintext of pending snapshot `id`, as the seal recorded it.
    fn pending_snapshot(&self, id: &Id) -> Result<Option<Snapshot>> {
        let plain = self
            .live
            .tx(|tx| {
                let t = tx
                    .txn()
                    .open_table(outbox::PENDING_SNAPSHOTS)
                    .map_err(cache_err)?;
                let v = t.get(&id.0[..]).map_err(cache_err)?;
                Ok(v.map(|v| v.value().to_vec()))
            })
            .map_err(live_err)?;
        Ok(plain.as_deref().and_then(|p| Snapshot::decode(p).ok()))
    }

    /// Before snapshot item `seq`, the first in the outbox, goes up.
    pub(crate) fn confirm_snapshot(&self, seq: u64, item: &Item) -> Result<Confirmed> {
        let through = self
            .live
            .tx(|tx| tx.state_u64(CONFIRM_THROUGH))
            .map_err(live_err)?;
        if item.gen > through {
            return Ok(Confirmed::Untouched);
        }
        let id = item.name.strip_prefix("snapshots/").and_then(Id::from_hex);
        let snap = match id {
            Some(id) => self.pending_snapshot(&id)?,
            None => None,
        };
        let (Some(id), Some(snap)) = (id, snap) else {
            self.refuse_snapshot(seq, &item.name)?;
            self.report(format!(
                "outbox: {} is not uploaded: this cache has no record of what it names, so it \
                 cannot be confirmed whole",
                item.name
            ));
            return Ok(Confirmed::Refused);
        };
        self.forget_own_packs_gone()?;
        if self.missing_blobs(&snap.root)?.is_empty() {
            return Ok(Confirmed::Whole);
        }
        // Some may be in packs of later seals (one sealed to store them
        // again, before an upload failed): those go up first.
        self.upload_ahead(seq)?;
        let missing = self.missing_blobs(&snap.root)?;
        if missing.is_empty() {
            return Ok(Confirmed::Whole);
        }
        crate::log!(
            "snapshot {} ({}), not yet uploaded, names {} the store does not hold (a prune \
             after its lock was removed, or a damaged outbox pack): storing again what this cache has",
            id.short(),
            snap.time_rfc3339(),
            crate::log::count(missing.len(), "blob")
        );
        {
            // As for a damaged pack: no seal in between may keep them.
            let _seal = self.seal_mutex.lock().unwrap_or_else(|e| e.into_inner());
            let marked = self.live.mark_lost(&missing).map_err(live_err)?;
            for path in &marked.restaged {
                crate::log!("{path}: stored again from this cache's copy");
            }
            for (path, bytes) in &marked.damaged {
                crate::log!(
                    "damaged: {path}: {bytes} bytes are in no pack the store holds and not in this \
                     cache; reads of them give EIO until the file is rewritten"
                );
            }
            self.live
                .tx(|tx| {
                    let g = tx.state_u64("seal_gen")?;
                    tx.set_state_u64(CONFIRM_THROUGH, g.max(through))
                })
                .map_err(live_err)?;
            self.live.commit(true).map_err(live_err)?;
        }
        // On the upload thread: the seal tells the kernel of the new
        // snapshot with the upload mutex held, which no request of the
        // filesystem takes (only the uploader and the final flush do).
        self.seal()?;
        self.upload_ahead(seq)?;
        let still = self.missing_blobs(&snap.root)?;
        if still.is_empty() {
            crate::log!(
                "snapshot {}: every blob it names is stored again; uploading it",
                id.short()
            );
            return Ok(Confirmed::Whole);
        }
        self.refuse_snapshot(seq, &item.name)?;
        self.report(format!(
            "snapshot {} of {} is not uploaded: {} it names {} gone from the store and from \
             this cache (a prune after its lock was removed, or a damaged outbox pack); the live \
             tree keeps what it still has and later snapshots hold it",
            id.to_hex(),
            snap.time_rfc3339(),
            crate::log::count(still.len(), "blob"),
            crate::log::agree(still.len(), "is", "are")
        ));
        Ok(Confirmed::Refused)
    }

    /// Upload the packs and index deltas waiting after item `after`, seal
    /// by seal (each delta after its packs), leaving snapshots where they
    /// are: what a snapshot at `after` needs stored again goes up first.
    fn upload_ahead(&self, after: u64) -> Result<()> {
        loop {
            let items = self.live.tx(|tx| outbox::items(tx)).map_err(live_err)?;
            let next = items
                .into_iter()
                .filter(|(s, i)| *s > after && i.kind != ItemKind::Snapshot)
                .min_by_key(|(s, i)| (i.gen, i.kind == ItemKind::Index, *s));
            let Some((seq, item)) = next else {
                return Ok(());
            };
            match self.upload_item(&item) {
                Ok(()) => self.finish_item(seq, &item)?,
                Err(Error::OutboxDamaged { .. }) => self.set_aside_damaged(seq, &item)?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Take a snapshot that cannot be made whole out of the outbox and
    /// the list (`.history`).
    ///
    /// If it was the live tree's last snapshot, the root is made dirty: the
    /// next seal takes the live tree again (a clean live tree whose own
    /// snapshot is in no list would be replaced by the store's latest at
    /// the next start, `mount::behind`).
    fn refuse_snapshot(&self, seq: u64, name: &str) -> Result<()> {
        let id = name.strip_prefix("snapshots/").and_then(Id::from_hex);
        // What the refused one followed, for those that followed it.
        let parent = match id {
            Some(id) => self.pending_snapshot(&id)?.and_then(|s| s.parent),
            None => None,
        };
        // A seal's view must see the root stamped or not at all.
        let seal = self.seal_mutex.lock().unwrap_or_else(|e| e.into_inner());
        self.live
            .tx(|tx| {
                outbox::remove(tx, seq)?;
                if let Some(id) = id {
                    let mut t = tx
                        .txn()
                        .open_table(outbox::PENDING_SNAPSHOTS)
                        .map_err(cache_err)?;
                    t.remove(&id.0[..]).map_err(cache_err)?;
                    drop(t);
                    if tx.state("last_snapshot")?.as_deref() == Some(&id.0[..]) {
                        let mut root = tx.get(crate::live::ROOT)?;
                        tx.stamp(crate::live::ROOT, &mut root)?;
                        match parent {
                            Some(p) => tx.set_state("last_snapshot", &p.0)?,
                            None => tx.remove_state("last_snapshot")?,
                        }
                    }
                }
                Ok(())
            })
            .map_err(live_err)?;
        self.live.commit(true).map_err(live_err)?;
        drop(seal);
        let _ = std::fs::remove_file(outbox::file_for(self.live.dir(), name));
        self.snapshots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| Some(s.id) != id);
        // With none of the flusher's locks held (`on_change`).
        self.snapshots_changed();
        // Snapshots sealed after it, waiting too, name it as their parent:
        // they now follow what it followed.
        let Some(id) = id else { return Ok(()) };
        let waiting = self.live.tx(|tx| outbox::items(tx)).map_err(live_err)?;
        for (seq, item) in waiting {
            let Some(later) = item.name.strip_prefix("snapshots/").and_then(Id::from_hex) else {
                continue;
            };
            if self
                .pending_snapshot(&later)?
                .is_some_and(|s| s.parent == Some(id))
            {
                self.reseal_snapshot_with(seq, &item, |s| s.parent = parent)?;
            }
        }
        Ok(())
    }

    /// Packs this mount uploaded whose index delta is not uploaded yet are
    /// in the index from the cache's records alone: look them up in the
    /// store (a prune may have deleted them) and drop those gone.
    fn forget_own_packs_gone(&self) -> Result<()> {
        let uploaded: Vec<Id> = self
            .live
            .tx(|tx| {
                let waiting: HashSet<Id> = outbox::items(tx)?
                    .iter()
                    .filter_map(|(_, i)| pack_id_from_name(&i.name))
                    .collect();
                Ok(recorded_packs(tx)?
                    .into_iter()
                    .map(|(id, _)| id)
                    .filter(|id| !waiting.contains(id))
                    .collect())
            })
            .map_err(live_err)?;
        let mut gone = Vec::new();
        for id in uploaded {
            if self.repo.store().head(&pack_name(&id))?.is_none() {
                gone.push(id);
            }
        }
        self.repo.drop_packs(&gone);
        Ok(())
    }

    /// Every blob the tree at `root` names that is in no pack the store
    /// holds: in no index, or only in packs still waiting in the outbox
    /// (all after the snapshot at its head). Trees under a missing tree
    /// are not looked at: they count once it is back.
    fn missing_blobs(&self, root: &Id) -> Result<HashMap<Id, BlobKind>> {
        let waiting: HashSet<Id> = self
            .live
            .tx(|tx| outbox::items(tx))
            .map_err(live_err)?
            .iter()
            .filter(|(_, i)| i.kind == ItemKind::Pack)
            .filter_map(|(_, i)| pack_id_from_name(&i.name))
            .collect();
        let stored = |ix: &crate::repo::index::Index, id: &Id| {
            ix.copies(id).iter().any(|(p, _)| !waiting.contains(&p.id))
        };
        let mut missing = HashMap::new();
        let mut seen = HashSet::new();
        let mut todo = vec![*root];
        while let Some(t) = todo.pop() {
            if !seen.insert(t) {
                continue;
            }
            if !stored(&self.repo.index(), &t) {
                missing.insert(t, BlobKind::Tree);
                continue;
            }
            let tree = match self.reader.read_tree(&t) {
                Ok(tree) => tree,
                Err(Error::Missing { .. } | Error::Corrupt { .. }) => {
                    missing.insert(t, BlobKind::Tree);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let ix = self.repo.index();
            for e in &tree.entries {
                match &e.content {
                    Content::Subtree(sub) => todo.push(*sub),
                    Content::Chunks(chunks) => {
                        for c in chunks {
                            if !c.id.is_lost() && !stored(&ix, &c.id) {
                                missing.insert(c.id, BlobKind::Data);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(missing)
    }
}

/// The packs this cache records (`OUTBOX_PACKS`: sealed, their index
/// delta not uploaded yet), each with its index entry.
fn recorded_packs(tx: &crate::live::Tx) -> crate::live::LiveResult<Vec<(Id, Vec<u8>)>> {
    let t = tx
        .txn()
        .open_table(outbox::OUTBOX_PACKS)
        .map_err(cache_err)?;
    let mut out = Vec::new();
    for r in t.iter().map_err(cache_err)? {
        let (k, v) = r.map_err(cache_err)?;
        out.push((
            Id(k.value().try_into().map_err(cache_err)?),
            v.value().to_vec(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::crypto::BlobKind;
    use crate::flush::outbox::{self, ItemKind};
    use crate::flush::testing::{machine, mkfile, noise, reopen, Machine};
    use crate::live::data::Times;
    use crate::live::ROOT;
    use crate::ops::check::check;
    use crate::ops::prune::{prune, PruneOptions};
    use crate::progress::Quiet;
    use crate::repo::pack::pack_id_from_name;
    use crate::repo::snapshot::snapshot_name;

    /// Flip one byte in the middle of every outbox pack of `kind`; their names.
    fn damage_outbox_packs(m: &Machine, kind: BlobKind) -> Vec<String> {
        let items = m.live.tx(|tx| outbox::items(tx)).unwrap();
        let mut hit = Vec::new();
        for (_, item) in items.iter().filter(|(_, i)| i.kind == ItemKind::Pack) {
            let id = pack_id_from_name(&item.name).unwrap();
            if m.flusher.repo.index().pack(&id).unwrap().kind != kind {
                continue;
            }
            let path = outbox::file_for(m.live.dir(), &item.name);
            let mut b = std::fs::read(&path).unwrap();
            let mid = b.len() / 2;
            b[mid] ^= 0x40;
            std::fs::write(&path, b).unwrap();
            hit.push(item.name.clone());
        }
        assert!(!hit.is_empty());
        hit
    }

    fn assert_store_is_whole(repo: &crate::repo::Repository) {
        let r = check(&reopen(repo), true, &Quiet).unwrap();
        assert!(
            r.is_clean(),
            "damage {:?}, problems {:?}",
            r.damage,
            r.problems
        );
    }

    fn stored_snapshots(repo: &crate::repo::Repository) -> Vec<crate::crypto::Id> {
        repo.snapshot_ids().unwrap()
    }

    /// An outbox pack damaged on the local disk between seal and upload
    /// (bit rot, a stray write) was uploaded as it was: the snapshot named
    /// data nobody could read back. It is never uploaded; its blobs are
    /// stored again from the staged copies, and the snapshot goes up whole.
    #[test]
    fn a_damaged_outbox_pack_is_stored_again_from_the_cache() {
        let repo = Arc::new(crate::repo::tests::test_init("memory://outbox-rot"));
        let m = machine(&repo);
        let data = noise(1, 3 << 20);
        mkfile(&m, b"f", &data);
        let s1 = m.flusher.seal().unwrap().unwrap();
        let bad = damage_outbox_packs(&m, BlobKind::Data);
        m.flusher.upload_pending().unwrap();
        for name in &bad {
            assert!(
                repo.store().head(name).unwrap().is_none(),
                "{name} uploaded"
            );
        }
        assert_store_is_whole(&repo);
        assert!(stored_snapshots(&repo).contains(&s1.id), "s1 was healed");
        assert_eq!(m.live.tx(|tx| outbox::items(tx)).unwrap(), vec![]);
        let problems = m.flusher.status().outbox_problems;
        assert!(
            problems
                .iter()
                .any(|p| p.contains(&bad[0]) && p.contains("damaged")),
            "{problems:?}"
        );
        assert!(m.dir.path().join("damaged").read_dir().unwrap().count() > 0);
    }

    /// `secrate status --clear-problems` forgets the problems it showed
    /// and deletes the items they kept; a problem reported after the
    /// listing stays, and so does its item. (Before stop 30 neither could
    /// be cleared: `damaged/` only grew.)
    #[test]
    fn clearing_outbox_problems_keeps_what_was_not_seen() {
        let repo = Arc::new(crate::repo::tests::test_init("memory://outbox-clear"));
        let m = machine(&repo);
        mkfile(&m, b"f", &noise(2, 1 << 20));
        m.flusher.seal().unwrap().unwrap();
        damage_outbox_packs(&m, BlobKind::Data);
        m.flusher.upload_pending().unwrap();
        let seen = m.flusher.status().outbox_problems;
        assert!(!seen.is_empty());
        let dir = m.dir.path().join("damaged");
        let kept = dir.read_dir().unwrap().count();
        assert!(kept > 0);
        // Reported after `status` listed the others.
        let late = dir.join("late");
        std::fs::write(&late, b"x").unwrap();
        m.flusher
            .report(format!("a later problem, kept as {}", late.display()));

        let (cleared, deleted) = m.flusher.clear_outbox_problems(&seen).unwrap();
        assert_eq!((cleared, deleted), (seen.len(), kept));
        let left = m.flusher.status().outbox_problems;
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].starts_with("a later problem"));
        let names: Vec<_> = dir
            .read_dir()
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("late")]);

        // Nothing more to clear once it is seen too.
        assert_eq!(m.flusher.clear_outbox_problems(&left).unwrap(), (1, 1));
        assert!(m.flusher.status().outbox_problems.is_empty());
        assert_eq!(m.flusher.clear_outbox_problems(&[]).unwrap(), (0, 0));
    }

    /// A damaged index delta or snapshot object is sealed again from what
    /// the cache records of it; the snapshot goes up whole (under a new id:
    /// sealing is randomized) and `.history` lists it once.
    #[test]
    fn a_damaged_index_delta_or_snapshot_object_is_sealed_again() {
        let repo = Arc::new(crate::repo::tests::test_init("memory://outbox-rot-meta"));
        let m = machine(&repo);
        let data = noise(5, 1 << 20);
        mkfile(&m, b"f", &data);
        let s1 = m.flusher.seal().unwrap().unwrap();
        let items = m.live.tx(|tx| outbox::items(tx)).unwrap();
        for (_, item) in items.iter().filter(|(_, i)| i.kind != ItemKind::Pack) {
            let path = outbox::file_for(m.live.dir(), &item.name);
            let mut b = std::fs::read(&path).unwrap();
            let last = b.len() - 1;
            b[last] ^= 1;
            std::fs::write(&path, b).unwrap();
        }
        m.flusher.upload_pending().unwrap();
        let ids = stored_snapshots(&repo);
        assert_eq!(ids.len(), 1);
        assert_ne!(ids[0], s1.id);
        for (_, item) in &items {
            let stored = repo.store().head(&item.name).unwrap().is_some();
            assert_eq!(stored, item.kind == ItemKind::Pack, "{}", item.name);
        }
        assert_store_is_whole(&repo);
        let listed: Vec<_> = m
            .flusher
            .snapshots()
            .iter()
            .map(|s| (s.id, s.uploaded))
            .collect();
        assert_eq!(listed, [(ids[0], true)]);
        assert_eq!(m.flusher.status().outbox_problems.len(), 2);
        assert_eq!(
            m.live.state("last_snapshot").unwrap().as_deref(),
            Some(&ids[0].0[..])
        );
    }

    /// The same, when the file changed after the seal: the sealed content
    /// is nowhere else, so that snapshot is not uploaded at all (never as
    /// if it were whole); the live tree's content is, in a new snapshot.
    #[test]
    fn a_snapshot_whose_outbox_pack_is_damaged_and_gone_is_not_uploaded() {
        let repo = Arc::new(crate::repo::tests::test_init("memory://outbox-rot-gone"));
        let m = machine(&repo);
        let f = mkfile(&m, b"f", &noise(2, 3 << 20));
        let s1 = m.flusher.seal().unwrap().unwrap();
        let now = noise(3, 1 << 20);
        m.live.truncate(f, 0, &*m.reader).unwrap();
        m.live.write(f, 0, &now, Times::Now, &*m.reader).unwrap();
        damage_outbox_packs(&m, BlobKind::Data);
        m.flusher.upload_pending().unwrap();
        m.flusher.seal().unwrap();
        m.flusher.upload_pending().unwrap();
        let ids = stored_snapshots(&repo);
        assert!(
            !ids.contains(&s1.id),
            "s1 uploaded although its data is gone"
        );
        assert!(!ids.is_empty());
        assert_store_is_whole(&repo);
        let problems = m.flusher.status().outbox_problems;
        let refused = format!("snapshot {} of", s1.id.to_hex());
        assert!(
            problems
                .iter()
                .any(|p| p.contains(&refused) && p.contains("not uploaded")),
            "{problems:?}"
        );
        assert!(m.flusher.snapshots().iter().all(|s| s.id != s1.id));
        // The snapshot after it does not name it as its parent (it did
        // before stop 30): s1 followed none, and so does it.
        for id in &ids {
            assert_eq!(repo.read_snapshot(id).unwrap().parent, None);
        }
        let (ino, _) = m.live.lookup(ROOT, b"f").unwrap();
        assert_eq!(
            &m.live.read(ino, 0, 2 << 20, &*m.reader).unwrap()[..],
            &now[..]
        );
    }

    /// A mount stopped with a snapshot not uploaded whose lock was removed
    /// with `secrate unlock`: a forget and a prune then deleted a pack that
    /// snapshot relies on (it was in the store already). The restarted
    /// mount stores those blobs again from its cache before the snapshot.
    #[test]
    fn a_pending_snapshot_is_confirmed_after_the_lock_was_broken() {
        let repo = Arc::new(crate::repo::tests::test_init("memory://unlock-prune"));
        let m = machine(&repo);
        mkfile(&m, b"old", &noise(4, 3 << 20));
        let s1 = m.flusher.seal().unwrap().unwrap();
        m.flusher.upload_pending().unwrap();
        mkfile(&m, b"new", b"sealed, not uploaded");
        let s2 = m.flusher.seal().unwrap().unwrap();

        // Stopped; `secrate unlock`; another writer forgets s1 and prunes.
        repo.store().delete(&snapshot_name(&s1.id)).unwrap();
        let opts = PruneOptions {
            max_unused: 0.0,
            dry_run: false,
        };
        let report = prune(reopen(&repo), &opts, &Quiet).unwrap();
        assert!(report.packs_deleted > 0);

        // The mount starts again and takes a new lock (its own was gone).
        let repo2 = reopen(&repo);
        repo2.forget_missing_packs().unwrap();
        let outbox = format!(
            "{}:{}",
            crate::repo::lock::hostname(),
            m.dir.path().display()
        );
        let lock = repo2.lock_mount("mount at /mnt", &outbox).unwrap();
        let m = m.restart(&repo2, Some(lock));
        m.flusher.upload_pending().unwrap();
        assert!(stored_snapshots(&repo).contains(&s2.id));
        assert_store_is_whole(&repo);
    }
}

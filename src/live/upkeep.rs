//! Start-up recovery and eviction of staged data.
//!
//! After a crash, `meta.redb` is back at its last durable commit while
//! `staged/` holds whatever was written: files no record wants are removed,
//! records whose staged file is gone fall back to their sealed chunks, and
//! inodes that were unlinked while open are dropped. Eviction frees the
//! staged copies of files whose content is sealed and uploaded, and only
//! those whose every chunk the index holds: a pack missing from the store
//! leaves the staged copy the last one (see `live/lost.rs`).

use std::collections::HashSet;

use crate::crypto::Id;
use crate::live::{Body, Live, LiveError, LiveResult};
use crate::repo::tree::Kind;

#[derive(Debug, Default)]
pub struct Recovery {
    pub removed_files: u64,
    pub lost_dirty: Vec<u64>,
    pub dropped_orphans: u64,
    /// Staged copies of sealed files dropped: they may have been written
    /// after the last durable commit, so the sealed chunks are used.
    pub dropped_clean: u64,
    /// Unsealed files whose size was set to their staged file's length.
    pub resized: u64,
}

/// The state key of the clean-stop mark.
const CLEAN_STOP: &str = "clean_stop";

use crate::repo::lock::boot_id;

impl Live {
    /// Mark that the filesystem has stopped cleanly: nothing writes to the
    /// staged files any more, so every clean staged copy holds what its
    /// record says. The mark names this boot, and only a mount in the same
    /// boot trusts it: the page cache that holds those copies' last writes
    /// survives a crash of the process, not of the machine. Call after the
    /// FUSE session has ended, before the last durable commit.
    pub fn mark_clean_stop(&self) -> LiveResult<()> {
        self.remove_unused_spares()?;
        let Some(id) = boot_id() else { return Ok(()) };
        self.tx(|tx| tx.set_state(CLEAN_STOP, &id))
    }

    pub fn recover(&self) -> LiveResult<Recovery> {
        let mut rep = Recovery::default();
        let staged_dir = self.staged_dir();
        // After a clean stop in this boot, clean staged copies match their
        // records; after a crash they may have been written since the last
        // durable commit. The mark is used once.
        let clean_stop = self.tx(|tx| {
            let mark = tx.state(CLEAN_STOP)?;
            tx.state
                .table_mut()?
                .remove(CLEAN_STOP)
                .map_err(crate::live::cache_err)?;
            Ok(mark.is_some() && mark == boot_id())
        })?;
        let (dirty, clean, orphans) =
            self.tx(|tx| Ok((tx.dirty_files()?, tx.clean_staged()?, tx.orphans()?)))?;
        for ino in &orphans {
            self.tx(|tx| tx.remove_inode(*ino))?;
            rep.dropped_orphans += 1;
        }
        // Which staged files some record still wants.
        let mut wanted = HashSet::new();
        for &ino in dirty.iter().chain(&clean) {
            let Ok(rec) = self.inode(ino) else {
                self.tx(|tx| {
                    tx.clear_dirty_file(ino)?;
                    tx.unmark_clean_staged(ino)?;
                    Ok(())
                })?;
                continue;
            };
            if rec.kind == Kind::File && rec.is_staged() {
                wanted.insert(ino);
            }
        }
        if let Ok(rd) = std::fs::read_dir(&staged_dir) {
            for e in rd.flatten() {
                let keep = e
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|ino| {
                        wanted.contains(&ino) || self.inode(ino).is_ok_and(|r| r.is_staged())
                    });
                if !keep {
                    let _ = std::fs::remove_file(e.path());
                    rep.removed_files += 1;
                }
            }
        }
        let dirty_set: HashSet<u64> = dirty.iter().copied().collect();
        for ino in wanted {
            if let Ok(md) = std::fs::metadata(self.staged_path(ino)) {
                // Writes after the last durable commit reached the staged
                // file but not the record.
                self.tx(|tx| {
                    let mut r = tx.get(ino)?;
                    if !dirty_set.contains(&ino) && r.chunks().is_some() {
                        // A copy of another length than its record's was
                        // changed outside the mount (or damaged): reading
                        // it would give zeros or a short file.
                        if clean_stop && md.len() == r.size {
                            return Ok(());
                        }
                        // Recorded as equal to its sealed chunks, but it may
                        // have been written since: the chunks are the
                        // content the record describes.
                        if let Body::File { staged, .. } = &mut r.body {
                            *staged = false;
                        }
                        tx.unmark_clean_staged(ino)?;
                        tx.put(ino, &r)?;
                        rep.dropped_clean += 1;
                    } else if r.size != md.len() {
                        // Unsealed: the staged file is the content; its
                        // length is the size (appended or truncated since).
                        r.size = md.len();
                        tx.put(ino, &r)?;
                        rep.resized += 1;
                    }
                    Ok(())
                })?;
                if !self.inode(ino)?.is_staged() {
                    std::fs::remove_file(self.staged_path(ino))?;
                }
                continue;
            }
            let lost = self.tx(|tx| {
                let mut r = tx.get(ino)?;
                let lost = match &mut r.body {
                    Body::File {
                        staged,
                        chunks: Some(_),
                        ..
                    } => {
                        *staged = false;
                        false
                    }
                    _ => true,
                };
                tx.put(ino, &r)?;
                Ok(lost)
            })?;
            if lost {
                // Never fsync'd since it changed (fsync commits the record
                // and the data together), so POSIX lets it go; keep an empty
                // file rather than a dangling record.
                std::fs::write(self.staged_path(ino), b"")?;
                self.tx(|tx| {
                    tx.modify(ino, |r| {
                        r.size = 0;
                        Ok(())
                    })
                })?;
                rep.lost_dirty.push(ino);
            }
        }
        self.commit(true)?;
        Ok(rep)
    }

    /// Staged copies that may be dropped: content sealed in a seal that is
    /// uploaded (`uploaded_gen`), every chunk `indexed`, not open. Oldest
    /// access first, with sizes. None at all while they take at most `room`
    /// bytes by their recorded sizes (in 4 KiB blocks), so that the common
    /// case, a cache within its budget, costs no `stat` of every staged
    /// file after each upload.
    ///
    /// A chunk the index lacks lived in a pack the store no longer holds
    /// (the index forgot it at start): the copy is the only one left, and
    /// `restage_unindexed` has made it dirty so the next seal stores it
    /// again. An index lookup is in memory.
    pub fn evictable(
        &self,
        uploaded_gen: u64,
        room: u64,
        indexed: &dyn Fn(&Id) -> bool,
    ) -> LiveResult<Vec<(u64, u64)>> {
        let clean = self.tx(|tx| tx.clean_staged())?;
        let mut inos = Vec::new();
        let mut estimate = 0u64;
        for ino in clean {
            let Ok(rec) = self.inode(ino) else { continue };
            if !may_evict(&rec.body, uploaded_gen, indexed) || self.open_files.is_open(ino) {
                continue;
            }
            estimate = estimate.saturating_add(rec.size.div_ceil(4096) * 4096);
            inos.push(ino);
        }
        if estimate <= room {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for ino in inos {
            let Ok(md) = std::fs::metadata(self.staged_path(ino)) else {
                continue;
            };
            let used = std::os::unix::fs::MetadataExt::blocks(&md) * 512;
            out.push((md.accessed().unwrap_or(std::time::UNIX_EPOCH), ino, used));
        }
        out.sort();
        Ok(out.into_iter().map(|(_, ino, n)| (ino, n)).collect())
    }

    /// Drop one staged copy; its content is read from the chunks again.
    /// Checks again what `evictable` checked, under the file's locks.
    pub fn evict(
        &self,
        ino: u64,
        uploaded_gen: u64,
        indexed: &dyn Fn(&Id) -> bool,
    ) -> LiveResult<bool> {
        let _b = self.barrier.read().unwrap_or_else(|e| e.into_inner());
        // No write, truncation or fsync of this file is under way until the
        // file is gone and its record says so (see `OpenFiles::keep`).
        let _k = self
            .open_files
            .keep(ino)
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if self.open_files.is_open(ino) {
            return Ok(false);
        }
        let done = self.tx(|tx| {
            // Removed since the caller listed it: nothing to drop.
            let mut r = match tx.get(ino) {
                Err(LiveError::NotFound) => return Ok(false),
                r => r?,
            };
            if !may_evict(&r.body, uploaded_gen, indexed) {
                return Ok(false);
            }
            if let Body::File { staged, .. } = &mut r.body {
                *staged = false;
            }
            tx.put(ino, &r)?;
            tx.unmark_clean_staged(ino)?;
            Ok(true)
        })?;
        if done {
            self.open_files.forget_handle(ino);
            let _ = std::fs::remove_file(self.staged_path(ino));
        }
        Ok(done)
    }
}

/// A clean staged copy whose content is uploaded and whose every chunk is
/// in the index: the store holds all of it.
fn may_evict(body: &Body, uploaded_gen: u64, indexed: &dyn Fn(&Id) -> bool) -> bool {
    match body {
        Body::File {
            staged: true,
            chunks: Some(c),
            sealed_gen,
        } => *sealed_gen <= uploaded_gen && c.iter().all(|c| indexed(&c.id)),
        _ => false,
    }
}

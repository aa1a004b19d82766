//! Prune while mounted: the mount holds the writer lock, so `secrate
//! prune` cannot run beside it, and the snapshots its retention forgets
//! would otherwise keep their data (and their cached tree packs) for as
//! long as it stays mounted.
//!
//! It runs between seals and uploads, never beside them, and only with
//! the outbox empty: every pack the index lists is then in the store, and
//! no sealed snapshot waits on data a prune could judge unused. Beside the
//! snapshots it keeps what the live tree stands on (`Live::references`).
//! The index is swapped for the new one before anything is deleted
//! (`ops::prune::prune_held`), so the next seal deduplicates only against
//! blobs still stored.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use super::{live_err, time_str, Flusher};
use crate::error::Result;
use crate::ops::prune::{prune_held, Holder, PruneOptions, PruneReport};

/// A mount's prune repacks a pack only when more than this fraction of it
/// is unused (`secrate prune` 5 %): repacking downloads and uploads the
/// used part again, and a mount that seals every minute makes many small
/// packs that each lose a little. A soak on S3 (a seal every 2 s) spent
/// 14–17 s per prune repacking 20 packs at 5 %. Space left unused is at
/// most a quarter of what is used, packs wholly unused always go.
pub const MAX_UNUSED: f64 = 0.2;

/// What the last prune of a mount did, for `status`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PruneDone {
    pub at: String,
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// What it found wrong and went on past (as `secrate prune` warns:
    /// a damaged index delta, a pack the store lost, a forged record),
    /// each also in the mount's log.
    pub warnings: Vec<String>,
}

/// The prune's progress in a mount: nothing shown, warnings kept (and
/// logged) for `status`.
#[derive(Default)]
struct Warnings(std::sync::Mutex<Vec<String>>);

/// Warnings kept for `status` (a store can hold any number of forged
/// records; the log has them all).
const MAX_WARNINGS: usize = 20;

impl crate::progress::Progress for Warnings {
    fn warn(&self, message: &str) {
        crate::log!("warning: prune: {message}");
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < MAX_WARNINGS {
            kept.push(message.to_string());
        } else if kept.len() == MAX_WARNINGS {
            kept.push("more warnings: see the mount's log".to_string());
        }
    }
}

impl Flusher {
    /// Call `f` at each prune for what it must keep beside the snapshots
    /// and the live tree: (trees, with all they reach; blobs). The mount's
    /// `.history` gives the nodes the kernel still holds.
    pub fn keep_for_prune(
        &self,
        f: impl Fn() -> (Vec<crate::crypto::Id>, HashSet<crate::crypto::Id>) + Send + Sync + 'static,
    ) {
        *self.prune_keep.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(f));
    }

    /// Remove the data no snapshot and nothing in the live tree uses.
    /// `None` while something waits for upload (try again later).
    pub fn prune(&self, opts: &PruneOptions) -> Result<Option<PruneReport>> {
        // The uploader's order: it takes the seal mutex under its own.
        let _upload = self.upload_mutex.lock().unwrap_or_else(|e| e.into_inner());
        let _seal = self.seal_mutex.lock().unwrap_or_else(|e| e.into_inner());
        if self.pending().map_err(live_err)?.0 > 0 {
            return Ok(None);
        }
        self.check_lock()?;
        let (mut trees, mut blobs) = self.live.references().map_err(live_err)?;
        // The snapshots `.history` shows, also if a listing of the store
        // were to miss one.
        trees.extend(self.snapshots().iter().map(|s| s.snapshot.root));
        // And what it showed that the kernel still holds: a file open in
        // a snapshot retention just forgot (a `cp` out of it) reads on.
        let keep = self
            .prune_keep
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(f) = keep {
            let (t, b) = f();
            trees.extend(t);
            blobs.extend(b);
        }
        // Repeated trees cost nothing: the walk visits each once.
        let read_tree = |id: &crate::crypto::Id| self.reader.read_tree(id);
        let holder = Holder {
            check: &|| self.check_lock(),
            stopping: &|| self.stopped(),
            read_tree: &read_tree,
            trees,
            blobs,
        };
        let started = std::time::Instant::now();
        let warnings = Warnings::default();
        let report = prune_held(self.repo.clone(), opts, &holder, &warnings)?;
        let dropped = self.reader.drop_unindexed_tree_packs();
        let after = report.bytes_after();
        crate::log!(
            "prune: {} removed and {} repacked, {} dropped; \
             store {} -> {} bytes, in {:.1} s",
            crate::log::count(report.packs_deleted, "pack"),
            report.packs_repacked,
            crate::log::count(dropped, "cached tree pack"),
            report.bytes_before,
            after,
            started.elapsed().as_secs_f64()
        );
        self.prune_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        *self.last_prune.lock().unwrap_or_else(|e| e.into_inner()) = Some(PruneDone {
            at: time_str(SystemTime::now()),
            packs_deleted: report.packs_deleted,
            packs_repacked: report.packs_repacked,
            bytes_before: report.bytes_before,
            bytes_after: after,
            warnings: warnings.0.into_inner().unwrap_or_else(|e| e.into_inner()),
        });
        Ok(Some(report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flush::testing::{machine, mkfile, noise, reopen, Machine};
    use crate::ops::forget::Policy;
    use crate::progress::Quiet;
    use crate::repo::tests::test_init;
    use std::sync::Arc;

    fn rewrite(m: &Machine, ino: u64, data: &[u8]) {
        m.live
            .write(ino, 0, data, crate::live::data::Times::Now, &*m.reader)
            .unwrap();
    }

    fn seal_and_upload(m: &Machine) {
        m.flusher.seal().unwrap();
        m.flusher.upload_pending().unwrap();
    }

    /// Retention `last=1`: it forgets the one snapshot before the newest.
    fn keep_the_newest(m: &Machine) {
        let policy = Policy::parse("last=1").unwrap().unwrap();
        assert_eq!(m.flusher.apply_retention(&policy).unwrap(), 1);
    }

    fn content(m: &Machine, ino: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < len {
            let r = m
                .live
                .read(ino, out.len() as u64, 128 * 1024, &*m.reader)
                .unwrap();
            assert!(!r.is_empty(), "a read came short at {}", out.len());
            out.extend_from_slice(&r);
        }
        out
    }

    fn stored_bytes(repo: &crate::repo::Repository) -> u64 {
        repo.store()
            .list("packs")
            .unwrap()
            .iter()
            .map(|o| o.size)
            .sum()
    }

    /// A mount's prune removes the data only forgotten snapshots used,
    /// keeps every byte the live tree shows (files read back from the
    /// store after their staged copies were evicted), and the next seal
    /// stores again a content whose blobs were just deleted instead of
    /// naming them: `check` then finds the repository whole.
    #[test]
    fn a_mount_prunes_what_retention_forgot_and_keeps_what_it_shows() {
        let repo = Arc::new(test_init("memory://mount-prune"));
        let m = machine(&repo);
        const N: usize = 400_000;
        let a = mkfile(&m, b"a", &noise(1, N));
        let b = mkfile(&m, b"b", &noise(2, N));
        let c = mkfile(&m, b"c", &noise(3, N));
        seal_and_upload(&m);
        rewrite(&m, a, &noise(4, N));
        rewrite(&m, b, &noise(5, N));
        seal_and_upload(&m);
        keep_the_newest(&m);
        // The live files now come from the store.
        m.flusher.set_cache_size(0);
        m.flusher.evict_to_budget().unwrap();
        assert!(!m.live.inode(c).unwrap().is_staged());

        let before = stored_bytes(&repo);
        let report = m
            .flusher
            .prune(&PruneOptions::default())
            .unwrap()
            .expect("nothing waits for upload");
        let after = stored_bytes(&repo);
        assert!(
            report.packs_deleted + report.packs_repacked > 0,
            "{report:?}"
        );
        assert!(
            after + 2 * N as u64 * 9 / 10 < before,
            "the two overwritten contents are gone: {before} -> {after}"
        );
        assert!(m.flusher.status().last_prune.is_some());
        for (ino, seed) in [(a, 4), (b, 5), (c, 3)] {
            assert!(content(&m, ino, N) == noise(seed, N), "file {ino}");
        }

        // The old content of `a` again: its blobs were deleted.
        mkfile(&m, b"d", &noise(1, N));
        seal_and_upload(&m);
        let fresh = reopen(&repo);
        let r = crate::ops::check::check(&fresh, true, &Quiet).unwrap();
        assert!(r.is_clean(), "{:?} {:?}", r.problems, r.damage);
        assert_eq!(r.snapshots, 2);
    }

    /// Retention forgets with a record on every store: a replica that
    /// missed the delete and gives the snapshot back after its data was
    /// pruned does not make it a damaged snapshot; the next prune deletes
    /// it there and goes on, and `check` finds the repository whole.
    /// (Before, the mount deleted without a record: the snapshot was
    /// listed again, its data gone, and every later prune refused.)
    #[test]
    fn a_snapshot_retention_forgot_stays_forgotten_on_a_stale_replica() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Arc::new(crate::repo::tests::test_init_many(
            dir.path(),
            &["a", "b"],
            None,
        ));
        let m = machine(&repo);
        const N: usize = 300_000;
        let a = mkfile(&m, b"a", &noise(1, N));
        let first = m.flusher.seal().unwrap().expect("a snapshot").id;
        m.flusher.upload_pending().unwrap();
        let name = crate::repo::snapshot::snapshot_name(&first);
        let stale = dir.path().join("b").join(&name);
        let old = std::fs::read(&stale).unwrap();
        // Two retention passes, a forgotten set each; the prune merges them.
        for seed in [2, 3] {
            rewrite(&m, a, &noise(seed, N));
            seal_and_upload(&m);
            keep_the_newest(&m);
        }
        assert!(!stale.exists());
        let sets = || {
            std::fs::read_dir(dir.path().join("a/snapshots-forgotten"))
                .unwrap()
                .count()
        };
        assert_eq!(sets(), 2);
        let report = m.flusher.prune(&PruneOptions::default()).unwrap().unwrap();
        assert!(
            report.packs_deleted + report.packs_repacked > 0,
            "{report:?}"
        );
        assert_eq!((report.sets_merged, sets()), (2, 1), "{report:?}");
        // The older copy of store b comes back, its data pruned.
        std::fs::write(&stale, &old).unwrap();
        let fresh = reopen(&repo);
        assert!(!fresh.snapshot_ids().unwrap().contains(&first));
        let report = m.flusher.prune(&PruneOptions::default()).unwrap().unwrap();
        assert_eq!(report.forgotten_left, 1, "{report:?}");
        assert!(!stale.exists());
        assert!(m.flusher.status().prune_error.is_none());
        let r = crate::ops::check::check(&reopen(&repo), true, &Quiet).unwrap();
        assert!(r.is_clean(), "{:?} {:?}", r.problems, r.damage);
        assert_eq!(r.snapshots, 1);
    }

    /// The live tree is kept by itself, not only through the newest
    /// snapshot: here its snapshot is gone from the store (deleted by
    /// hand, or by another writer), and the files, their staged copies
    /// evicted, still read back whole after a prune.
    #[test]
    fn a_mount_prune_keeps_the_live_tree_without_its_snapshot() {
        let repo = Arc::new(test_init("memory://mount-prune-live"));
        let m = machine(&repo);
        const N: usize = 300_000;
        let a = mkfile(&m, b"a", &noise(1, N));
        let sealed = m.flusher.seal().unwrap().expect("a snapshot");
        m.flusher.upload_pending().unwrap();
        m.flusher.set_cache_size(0);
        m.flusher.evict_to_budget().unwrap();
        assert!(!m.live.inode(a).unwrap().is_staged());
        repo.store()
            .delete(&crate::repo::snapshot::snapshot_name(&sealed.id))
            .unwrap();
        m.flusher.snapshots.write().unwrap().clear();
        m.flusher.prune(&PruneOptions::default()).unwrap().unwrap();
        assert!(content(&m, a, N) == noise(1, N));
    }

    /// A mount that stops (unmounting) ends its prune before the next
    /// pack or the new index, deleting nothing (before, `umount` waited
    /// for the whole prune: 16 s in a soak on S3).
    #[test]
    fn a_stopping_mount_ends_its_prune_and_deletes_nothing() {
        let repo = Arc::new(test_init("memory://mount-prune-stop"));
        let m = machine(&repo);
        let a = mkfile(&m, b"a", &noise(1, 200_000));
        seal_and_upload(&m);
        rewrite(&m, a, &noise(2, 200_000));
        seal_and_upload(&m);
        keep_the_newest(&m);
        let before = stored_bytes(&repo);
        m.flusher.stop();
        let e = m.flusher.prune(&PruneOptions::default()).unwrap_err();
        assert!(
            e.to_string().contains("stopped before it deleted anything"),
            "{e}"
        );
        assert_eq!(stored_bytes(&repo), before);
    }

    /// The prune interval counts across mounts of one cache: a fresh
    /// cache waits a whole interval (and starts the clock), and a cache
    /// whose last prune (or first mount) was longer ago than the interval
    /// prunes at once, however short each mount is.
    #[test]
    fn the_prune_interval_counts_across_mounts() {
        let repo = Arc::new(test_init("memory://mount-prune-clock"));
        let m = machine(&repo);
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(m.flusher.prune_wait(hour), hour);
        let w = m.flusher.prune_wait(hour);
        assert!(
            w <= hour && w > hour - std::time::Duration::from_secs(5),
            "{w:?}"
        );
        m.flusher
            .pruned_at(std::time::SystemTime::now() - std::time::Duration::from_secs(3000));
        let m = m.restart(&repo, None);
        let w = m.flusher.prune_wait(hour);
        assert!(
            w <= std::time::Duration::from_secs(600) && w > std::time::Duration::from_secs(595),
            "{w:?}"
        );
        m.flusher
            .pruned_at(std::time::SystemTime::now() - std::time::Duration::from_secs(4000));
        assert_eq!(m.flusher.prune_wait(hour), std::time::Duration::ZERO);
    }

    /// Found by review: a file open in `.history` (a `cp` out of an old
    /// snapshot) read EIO as soon as retention forgot its snapshot and
    /// the mount pruned, while the kernel still held it open. Before the
    /// mount pruned, that data stayed until the unmount. What `.history`
    /// nodes alive stand on is kept now, and goes at a prune after the
    /// kernel let go of them.
    #[test]
    fn a_mount_prune_keeps_what_an_open_history_file_reads() {
        use crate::fs::history::{History, HISTORY_INO};
        let repo = Arc::new(test_init("memory://mount-prune-history"));
        let m = machine(&repo);
        let history = History::attach(m.flusher.clone(), m.reader.clone());
        const N: usize = 300_000;
        let a = mkfile(&m, b"a", &noise(1, N));
        m.flusher.seal().unwrap().expect("a snapshot");
        m.flusher.upload_pending().unwrap();
        // A process opens `.history/<that snapshot>/a`.
        let (listed, pins) = history.readdir(HISTORY_INO).unwrap();
        let name = listed[0].2.clone();
        drop(pins);
        let root = history.lookup(HISTORY_INO, &name).unwrap();
        let file = history.lookup(root, b"a").unwrap();
        // The live file gets another content; retention forgets the
        // snapshot the open file is in.
        rewrite(&m, a, &noise(2, N));
        m.flusher.seal().unwrap().expect("a snapshot");
        m.flusher.upload_pending().unwrap();
        keep_the_newest(&m);
        m.flusher.prune(&PruneOptions::default()).unwrap().unwrap();
        let read = |ino: u64| {
            let mut out = Vec::new();
            while out.len() < N {
                let r = history.read(ino, out.len() as u64, 128 * 1024).unwrap();
                assert!(!r.is_empty());
                out.extend_from_slice(&r);
            }
            out
        };
        assert!(read(file) == noise(1, N), "the open file reads on");

        // The kernel lets go: the next prune frees it.
        let before = stored_bytes(&repo);
        history.forget(file, 1);
        history.forget(root, 1);
        m.flusher.prune(&PruneOptions::default()).unwrap().unwrap();
        let after = stored_bytes(&repo);
        assert!(after + N as u64 * 9 / 10 < before, "{before} -> {after}");
        assert!(content(&m, a, N) == noise(2, N));
    }

    /// Found by review: the mount's prune reported to `Quiet`, so what
    /// `secrate prune` warns of went nowhere: here a forged "forgotten"
    /// record for the mount's own snapshot (the store trying to make it
    /// look forgotten), also a pack the store lost or a damaged index
    /// delta. Now each is in the log and in `status` (`last_prune`).
    #[test]
    fn a_mount_prune_reports_what_it_finds_wrong() {
        use crate::repo::removal::Removed;
        let repo = Arc::new(test_init("memory://mount-prune-warns"));
        let m = machine(&repo);
        mkfile(&m, b"a", &noise(1, 1000));
        let s = m.flusher.seal().unwrap().expect("a snapshot");
        m.flusher.upload_pending().unwrap();
        let record = Removed::Snapshot.record_name(&crate::repo::snapshot::snapshot_name(&s.id));
        repo.store()
            .put(&record, bytes::Bytes::from_static(b"not a record"))
            .unwrap();
        m.flusher.prune(&PruneOptions::default()).unwrap().unwrap();
        let done = m.flusher.status().last_prune.unwrap();
        assert_eq!(done.warnings.len(), 1, "{:?}", done.warnings);
        assert!(
            done.warnings[0].contains(&s.id.short()),
            "{:?}",
            done.warnings
        );
    }

    /// A store can hold any number of forged records: `status` keeps the
    /// first warnings and says there are more.
    #[test]
    fn a_mount_prune_keeps_a_bounded_list_of_warnings() {
        use crate::progress::Progress;
        let w = Warnings::default();
        for i in 0..MAX_WARNINGS + 5 {
            w.warn(&format!("warning {i}"));
        }
        let kept = w.0.into_inner().unwrap();
        assert_eq!(kept.len(), MAX_WARNINGS + 1);
        assert_eq!(
            kept[MAX_WARNINGS - 1],
            format!("warning {}", MAX_WARNINGS - 1)
        );
        assert!(kept[MAX_WARNINGS].contains("more warnings"));
    }

    /// Something waiting for upload: no prune (what it names could look
    /// unused to the store's snapshots).
    #[test]
    fn a_mount_does_not_prune_while_something_waits_for_upload() {
        let repo = Arc::new(test_init("memory://mount-prune-pending"));
        let m = machine(&repo);
        mkfile(&m, b"a", &noise(1, 1000));
        m.flusher.seal().unwrap();
        assert!(m.flusher.prune(&PruneOptions::default()).unwrap().is_none());
        m.flusher.upload_pending().unwrap();
        assert!(m.flusher.prune(&PruneOptions::default()).unwrap().is_some());
    }
}

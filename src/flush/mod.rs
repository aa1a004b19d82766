//! Seal and upload: turning the live tree into snapshots in the store.
//!
//! SEAL is local and quick: under the exclusive barrier it takes a view of
//! the live tree and copies the staged files that changed; then, with the
//! filesystem running again, it chunks those copies, encodes the changed
//! directories, and writes packs, an index delta and a snapshot object to
//! the outbox, committing it all in one transaction. UPLOAD runs in the
//! background, takes outbox items in order, and retries until the store
//! has them; a kill at any point resumes from the outbox. A read-only
//! mount runs neither; it follows the store's snapshot list instead
//! (`follow_store`). Whoever shows the list (`.history`) is told after it
//! changed, with no lock of the flusher held (`on_snapshots_changed`).

#[cfg(test)]
mod import_tests;
pub mod outbox;
mod prune;
mod seal;
#[cfg(test)]
pub(crate) mod testing;
mod upload;
mod verify;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use redb::ReadableTable;

use crate::blobs::BlobReader;
use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::live::{cache_err, Live, LiveError, LiveResult};
use crate::repo::index::decode_delta;
use crate::repo::lock::WriterLock;
use crate::repo::snapshot::Snapshot;
use crate::repo::Repository;

pub use self::prune::PruneDone;
pub use self::seal::SealOutcome;

/// A snapshot the mount knows of, uploaded or not.
#[derive(Clone, Debug)]
pub struct SnapEntry {
    pub id: Id,
    pub snapshot: Snapshot,
    pub uploaded: bool,
}

/// What `secrate status` shows.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Status {
    pub pending_objects: u64,
    pub pending_bytes: u64,
    pub store_reachable: bool,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub last_upload_at: Option<String>,
    pub last_snapshot: Option<String>,
    pub last_snapshot_time: Option<String>,
    pub last_snapshot_uploaded: bool,
    pub sealed_gen: u64,
    pub uploaded_gen: u64,
    pub dirty: bool,
    pub cache_bytes: u64,
    pub store: String,
    pub cache_dir: String,
    /// Damaged outbox items and snapshots not uploaded because what they
    /// name is gone (src/flush/verify.rs), oldest first; each is in the
    /// mount's log too.
    pub outbox_problems: Vec<String>,
    /// Nodes of `.history` alive (the kernel or an open listing holds
    /// them); filled in by the mount, which owns the view.
    pub history_nodes: u64,
    /// What this mount's last prune did (`--prune-interval`).
    pub last_prune: Option<PruneDone>,
    /// Why the last prune failed, until one succeeds (it is tried again
    /// an interval later).
    pub prune_error: Option<String>,
}

#[derive(Default)]
struct UploadState {
    last_error: Option<(String, SystemTime)>,
    last_ok: Option<SystemTime>,
    reachable: bool,
}

pub struct Flusher {
    pub(crate) live: Arc<Live>,
    pub(crate) reader: Arc<BlobReader>,
    pub(crate) repo: Arc<Repository>,
    lock: Mutex<Option<WriterLock>>,
    pub(crate) source: String,
    seal_mutex: Mutex<()>,
    upload_mutex: Mutex<()>,
    state: Mutex<UploadState>,
    wake: (Mutex<bool>, Condvar),
    /// Counts seal and upload progress; waiters sleep until it moves.
    progress: (Mutex<u64>, Condvar),
    stop: AtomicBool,
    snapshots: RwLock<Vec<SnapEntry>>,
    /// Called after the snapshot list gained or lost a snapshot, on the
    /// thread that changed it, with none of the flusher's locks held: it
    /// tells the kernel, which may call back into the filesystem
    /// meanwhile.
    on_change: Mutex<Option<ChangeHook>>,
    cache_size: std::sync::atomic::AtomicU64,
    /// (uploaded generation, cache size, chunk cache usage) at which clean
    /// data last fit the cache size. Staged copies only become evictable
    /// when an upload completes, so until one does, or the chunk cache
    /// grows, it still fits.
    fit: Mutex<Option<(u64, u64, u64)>>,
    last_prune: Mutex<Option<PruneDone>>,
    prune_error: Mutex<Option<String>>,
    prune_keep: Mutex<Option<KeepHook>>,
}

type ChangeHook = Arc<dyn Fn() + Send + Sync>;
/// What a prune keeps beside the snapshots and the live tree: (trees,
/// blobs) the mount's `.history` still shows (`keep_for_prune`).
type KeepHook = Arc<dyn Fn() -> (Vec<Id>, std::collections::HashSet<Id>) + Send + Sync>;

fn time_str(t: SystemTime) -> String {
    let ns = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    crate::repo::snapshot::format_time(ns)
}

impl Flusher {
    /// Set up the flusher: recover the outbox after a crash (drop unlisted
    /// files, make listed packs readable) and learn the snapshot list.
    pub fn new(
        live: Arc<Live>,
        reader: Arc<BlobReader>,
        repo: Arc<Repository>,
        lock: Option<WriterLock>,
        source: String,
    ) -> Result<Arc<Flusher>> {
        let dir = live.dir().join("outbox");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let (items, packs, pending) = live
            .tx(|tx| {
                outbox::create_tables(tx)?;
                let items = outbox::items(tx)?;
                let mut packs = Vec::new();
                for r in tx
                    .txn()
                    .open_table(outbox::OUTBOX_PACKS)
                    .map_err(cache_err)?
                    .iter()
                    .map_err(cache_err)?
                {
                    let (_, v) = r.map_err(cache_err)?;
                    packs.extend(
                        decode_delta(v.value())
                            .map_err(|e| LiveError::Cache(format!("outbox pack: {e}")))?,
                    );
                }
                let mut pending = Vec::new();
                for r in tx
                    .txn()
                    .open_table(outbox::PENDING_SNAPSHOTS)
                    .map_err(cache_err)?
                    .iter()
                    .map_err(cache_err)?
                {
                    let (k, v) = r.map_err(cache_err)?;
                    let id = Id(k.value().try_into().map_err(cache_err)?);
                    let s = Snapshot::decode(v.value())
                        .map_err(|e| LiveError::Cache(format!("pending snapshot: {e}")))?;
                    pending.push(SnapEntry {
                        id,
                        snapshot: s,
                        uploaded: false,
                    });
                }
                Ok((items, packs, pending))
            })
            .map_err(live_err)?;
        live.commit(true).map_err(live_err)?;
        // Files no item lists come from seals that never committed.
        let listed: std::collections::HashSet<_> = items
            .iter()
            .map(|(_, i)| outbox::file_for(live.dir(), &i.name))
            .collect();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if !listed.contains(&e.path()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(live.dir().join("sealing"));
        repo.add_to_index(&packs);
        for p in &packs {
            // Uploaded packs whose index delta is not yet are read from the
            // store.
            let file = outbox::file_for(live.dir(), &crate::repo::pack::pack_name(&p.id));
            if file.exists() {
                reader.add_outbox(p.id, file);
            }
        }
        let (uploaded, problems) = repo.snapshots()?;
        for p in problems {
            crate::log!("warning: {p}");
        }
        let mut snaps: Vec<SnapEntry> = uploaded
            .into_iter()
            .map(|(id, snapshot)| SnapEntry {
                id,
                snapshot,
                uploaded: true,
            })
            .collect();
        for p in pending {
            if !snaps.iter().any(|s| s.id == p.id) {
                snaps.push(p);
            }
        }
        sort_snapshots(&mut snaps);
        // A lock this cache's last mount did not leave behind: someone ran
        // `secrate unlock`, and a prune may have taken blobs the snapshots
        // still in the outbox share with the store (src/flush/verify.rs).
        let distrust = lock.as_ref().is_some_and(|l| !l.inherited());
        let flusher = Arc::new(Flusher {
            live,
            reader,
            repo,
            lock: Mutex::new(lock),
            source,
            seal_mutex: Mutex::new(()),
            upload_mutex: Mutex::new(()),
            state: Mutex::new(UploadState {
                reachable: true,
                ..Default::default()
            }),
            wake: (Mutex::new(false), Condvar::new()),
            progress: (Mutex::new(0), Condvar::new()),
            stop: AtomicBool::new(false),
            snapshots: RwLock::new(snaps),
            on_change: Mutex::new(None),
            cache_size: std::sync::atomic::AtomicU64::new(u64::MAX),
            fit: Mutex::new(None),
            last_prune: Mutex::new(None),
            prune_error: Mutex::new(None),
            prune_keep: Mutex::new(None),
        });
        if distrust {
            flusher.confirm_pending()?;
        }
        Ok(flusher)
    }

    pub fn snapshots(&self) -> Vec<SnapEntry> {
        self.snapshots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Call `f` after each change of the snapshot list (a snapshot sealed,
    /// forgotten by retention, or added or forgotten in the store and
    /// followed), with no lock of the flusher held.
    pub fn on_snapshots_changed(&self, f: impl Fn() + Send + Sync + 'static) {
        *self.on_change.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(f));
    }

    /// The list changed: tell whoever shows it. Callers hold no lock.
    fn snapshots_changed(&self) {
        let hook = self
            .on_change
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(f) = hook {
            f();
        }
    }

    /// Wake the uploader.
    pub fn kick(&self) {
        let mut w = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
        *w = true;
        self.wake.1.notify_all();
    }

    fn notify_progress(&self) {
        let mut g = self.progress.0.lock().unwrap_or_else(|e| e.into_inner());
        *g += 1;
        self.progress.1.notify_all();
    }

    /// The progress counter: read it before looking at the state, then
    /// `wait_progress(seen, ..)` cannot miss progress made in between.
    pub fn progress_seen(&self) -> u64 {
        *self.progress.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait up to `timeout` for progress after `seen` (from `progress_seen`).
    pub fn wait_progress(&self, seen: u64, timeout: Duration) {
        let g = self.progress.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .progress
            .1
            .wait_timeout_while(g, timeout, |n| *n == seen);
    }

    pub fn gens(&self) -> LiveResult<(u64, u64)> {
        self.live
            .tx(|tx| Ok((tx.state_u64("seal_gen")?, tx.state_u64("uploaded_gen")?)))
    }

    /// Everything waiting for upload: (objects, bytes).
    pub fn pending(&self) -> LiveResult<(u64, u64)> {
        let items = self.live.tx(|tx| outbox::items(tx))?;
        Ok((items.len() as u64, items.iter().map(|(_, i)| i.size).sum()))
    }

    /// Whether the live tree holds changes no snapshot records yet (a
    /// crash can leave them behind with nothing in the outbox). An empty
    /// live tree needs no blob, so it counts as sealed.
    pub fn unsealed_changes(&self) -> LiveResult<bool> {
        let root = self.live.inode(crate::live::ROOT)?;
        Ok(root.dir_tree().is_none() && self.live.tx(|tx| tx.has_children(crate::live::ROOT))?)
    }

    /// The last upload error while the store is unreachable (cheap, unlike
    /// `status`, which adds up the cache directory).
    pub fn upload_problem(&self) -> Option<String> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.last_error
            .as_ref()
            .filter(|_| !st.reachable)
            .map(|(e, _)| e.clone())
    }

    pub fn status(&self) -> Status {
        let (objects, bytes) = self.pending().unwrap_or_default();
        let (sealed, uploaded) = self.gens().unwrap_or_default();
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let last = self.snapshots().last().cloned();
        let dirty = seal::has_changes(&self.live).unwrap_or(true);
        Status {
            pending_objects: objects,
            pending_bytes: bytes,
            store_reachable: st.reachable,
            last_error: st.last_error.as_ref().map(|(e, _)| e.clone()),
            last_error_at: st.last_error.as_ref().map(|(_, t)| time_str(*t)),
            last_upload_at: st.last_ok.map(time_str),
            last_snapshot: last.as_ref().map(|s| s.id.to_hex()),
            last_snapshot_time: last.as_ref().map(|s| s.snapshot.time_rfc3339()),
            last_snapshot_uploaded: last.map(|s| s.uploaded).unwrap_or(true),
            sealed_gen: sealed,
            uploaded_gen: uploaded,
            dirty,
            cache_bytes: dir_size(self.live.dir()),
            store: self.repo.url().to_string(),
            cache_dir: self.live.dir().display().to_string(),
            outbox_problems: self.outbox_problems(),
            history_nodes: 0,
            last_prune: self
                .last_prune
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            prune_error: self
                .prune_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Start the background threads: uploader, periodic sealer (which also
    /// applies `retention` to this mount's snapshots and, at most every
    /// `prune_every`, prunes after it forgot some), committer.
    pub fn start(
        self: &Arc<Self>,
        snapshot_interval: Duration,
        retention: Option<crate::ops::forget::Policy>,
        prune_every: Duration,
    ) -> Vec<std::thread::JoinHandle<()>> {
        let mut handles = Vec::new();
        let me = self.clone();
        handles.push(spawn("secrate-upload", move || me.upload_loop()));
        let me = self.clone();
        handles.push(spawn("secrate-commit", move || {
            while !me.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
                if let Err(e) = me.live.commit_if_pending() {
                    crate::log!("error: committing the live tree: {e}");
                }
            }
        }));
        if !snapshot_interval.is_zero() {
            let me = self.clone();
            handles.push(spawn("secrate-seal", move || {
                let mut last = std::time::Instant::now();
                let mut next_prune = last + me.prune_wait(prune_every);
                // What earlier runs or `forget` left is not known: once.
                let mut prune_due = true;
                while !me.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(200));
                    if last.elapsed() < snapshot_interval {
                        continue;
                    }
                    last = std::time::Instant::now();
                    // Before the seal: a prune needs an empty outbox, and
                    // the last seal's upload had a whole interval to
                    // finish. Right after a seal it could find that seal's
                    // snapshot still waiting, tick after tick on a busy
                    // mount.
                    let due = retention.is_some()
                        && prune_due
                        && !prune_every.is_zero()
                        && std::time::Instant::now() >= next_prune;
                    if due {
                        let opts = crate::ops::prune::PruneOptions {
                            max_unused: prune::MAX_UNUSED,
                            dry_run: false,
                        };
                        match me.prune(&opts) {
                            // Something waits for upload: at the next tick.
                            Ok(None) => {}
                            Ok(Some(_)) => {
                                prune_due = false;
                                me.pruned_at(SystemTime::now());
                                next_prune = std::time::Instant::now() + prune_every;
                            }
                            Err(e) => {
                                crate::log!("warning: prune: {e}");
                                *me.prune_error.lock().unwrap_or_else(|e| e.into_inner()) =
                                    Some(e.to_string());
                                next_prune = std::time::Instant::now() + prune_every;
                            }
                        }
                    }
                    if let Err(e) = me.seal() {
                        crate::log!("error: automatic snapshot failed: {e}");
                    }
                    let Some(p) = &retention else { continue };
                    match me.apply_retention(p) {
                        Ok(0) => {}
                        Ok(n) => {
                            crate::log!(
                                "retention: forgot {}",
                                crate::log::count(n, "automatic snapshot")
                            );
                            prune_due = true;
                        }
                        Err(e) => crate::log!("warning: retention: {e}"),
                    }
                }
            }));
        }
        handles
    }

    /// How long until the next prune is due: `every` counts across mounts
    /// of this cache, from its last prune or, before any, from its first
    /// mount (counted from each mount's start, a mount shorter than the
    /// interval, a laptop's working day, never pruned).
    fn prune_wait(&self, every: Duration) -> Duration {
        let now = unix_secs(SystemTime::now());
        let since = match self.live.tx(|tx| tx.state_u64(PRUNE_CLOCK)) {
            Ok(0) => {
                self.pruned_at(SystemTime::now());
                0
            }
            Ok(t) => now.saturating_sub(t),
            Err(_) => 0,
        };
        every.saturating_sub(Duration::from_secs(since))
    }

    /// Record a prune (or the first mount) at `t` for `prune_wait`.
    fn pruned_at(&self, t: SystemTime) {
        if let Err(e) = self
            .live
            .tx(|tx| tx.set_state_u64(PRUNE_CLOCK, unix_secs(t).max(1)))
        {
            crate::log!("warning: cannot record the prune's time in the cache: {e}");
        }
    }

    /// Start following the store (a read-only mount, whose flusher threads
    /// do not run): every `interval`, `follow_store`, then `then` (the
    /// mount moves its live tree to the newest snapshot). None for a zero
    /// interval.
    pub fn start_following(
        self: &Arc<Self>,
        interval: Duration,
        then: impl Fn() -> Result<()> + Send + 'static,
    ) -> Option<std::thread::JoinHandle<()>> {
        if interval.is_zero() {
            return None;
        }
        let me = self.clone();
        Some(spawn("secrate-follow", move || {
            let mut last = std::time::Instant::now();
            // Each problem is logged once, not every interval.
            let mut told = std::collections::HashSet::new();
            while !me.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                if last.elapsed() < interval {
                    continue;
                }
                last = std::time::Instant::now();
                let mut problems = match me.follow_store() {
                    Ok(problems) => problems,
                    Err(e) => vec![e],
                };
                // Also after a failed listing: a snapshot read before may
                // still wait to become the live tree (its import failed).
                if let Err(e) = then() {
                    problems.push(e);
                }
                for p in problems {
                    let p = p.to_string();
                    if told.insert(p.clone()) {
                        crate::log!("warning: following the store: {p}");
                    }
                }
            }
        }))
    }

    /// Take up the snapshots other processes added to the store or forgot
    /// since the list was last read (what a read-only mount shows in
    /// `.history`; a writable mount holds the writer lock, and no other
    /// process changes the list meanwhile). The index deltas written before
    /// a new snapshot are loaded before it is listed, so that its trees and
    /// chunks can be read the moment it shows. Snapshots that cannot be
    /// read now are returned as problems and tried again next time; a
    /// failed listing changes nothing.
    pub fn follow_store(&self) -> Result<Vec<Error>> {
        let ids = self.repo.snapshot_ids()?;
        let known: std::collections::HashSet<Id> = self
            .snapshots()
            .iter()
            .filter(|s| s.uploaded)
            .map(|s| s.id)
            .collect();
        let new: Vec<Id> = ids
            .iter()
            .filter(|id| !known.contains(id))
            .copied()
            .collect();
        let (added, mut problems) = self.repo.read_snapshots(new);
        if !added.is_empty() {
            // Listed after the snapshots: a snapshot is written after the
            // deltas of its blobs.
            problems.extend(self.repo.load_index()?);
        }
        // A prune or repair elsewhere replaced index deltas (it writes the
        // complete new one first): the packs only the old ones listed are
        // gone from the store. Their entries and cached tree packs go too,
        // so a mount that follows the store for months holds what the
        // store holds, not every pack it ever saw.
        if self.repo.loaded_deltas_gone()? {
            problems.extend(self.repo.load_index()?);
            let gone = self.repo.forget_missing_packs()?;
            let dropped = self.reader.drop_unindexed_tree_packs();
            if !gone.is_empty() {
                crate::log!(
                    "the store's index was rewritten (a prune): {} gone, {} dropped",
                    crate::log::count(gone.len(), "pack"),
                    crate::log::count(dropped, "cached tree pack")
                );
            }
        }
        let listed: std::collections::HashSet<Id> = ids.into_iter().collect();
        let changed = {
            let mut snaps = self.snapshots.write().unwrap_or_else(|e| e.into_inner());
            let before = snaps.len();
            // Gone from the listing: forgotten (one not uploaded yet is ours).
            snaps.retain(|s| !s.uploaded || listed.contains(&s.id));
            let mut changed = snaps.len() != before;
            for (id, snapshot) in added {
                if !snaps.iter().any(|s| s.id == id) {
                    snaps.push(SnapEntry {
                        id,
                        snapshot,
                        uploaded: true,
                    });
                    changed = true;
                }
            }
            sort_snapshots(&mut snaps);
            changed
        };
        if changed {
            self.snapshots_changed();
        }
        Ok(problems)
    }

    /// Forget this mount's uploaded snapshots that `policy` does not keep.
    /// Only snapshot objects go (their data stays until a prune);
    /// the newest snapshot is always kept: the live tree stands on it.
    pub fn apply_retention(&self, policy: &crate::ops::forget::Policy) -> Result<usize> {
        let host = crate::repo::lock::hostname();
        let mine: Vec<(Id, Snapshot)> = self
            .snapshots()
            .into_iter()
            .filter(|s| s.uploaded && s.snapshot.origin == crate::repo::snapshot::Origin::Mount)
            .filter(|s| s.snapshot.source == self.source && s.snapshot.host == host)
            .map(|s| (s.id, s.snapshot))
            .collect();
        if mine.len() < 2 {
            return Ok(0);
        }
        let decisions = crate::ops::forget::decide(&mine, Some(policy), &[]);
        let newest = decisions.first().map(|d| d.id);
        let gone: Vec<Id> = decisions
            .iter()
            .filter(|d| !d.keep && Some(d.id) != newest)
            .map(|d| d.id)
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        // One forgotten set record for all of them, on every store before
        // any is deleted: a store that misses the deletes (a stale replica
        // given back) cannot bring them back, with their data pruned.
        let result = self
            .check_lock()
            .and_then(|()| self.repo.forget_snapshots(&gone));
        // Also when a delete failed: they are forgotten (the record holds),
        // and those deleted are gone. A record taken back forgets nothing.
        let forgotten: HashSet<Id> = match &result {
            Ok(()) => gone.iter().copied().collect(),
            Err(_) => match self.repo.snapshot_ids() {
                Ok(ids) => gone
                    .iter()
                    .filter(|id| !ids.contains(id))
                    .copied()
                    .collect(),
                Err(_) => HashSet::new(),
            },
        };
        if !forgotten.is_empty() {
            self.snapshots
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|s| !forgotten.contains(&s.id));
            self.snapshots_changed();
        }
        result.map(|()| forgotten.len())
    }

    /// Ask the background threads to stop (the uploader finishes its item).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.kick();
    }

    /// Bound on clean cached data (chunk cache plus staged copies of
    /// uploaded files).
    pub fn set_cache_size(&self, bytes: u64) {
        self.cache_size.store(bytes, Ordering::SeqCst);
    }

    /// Drop staged copies of uploaded files, oldest first, until clean data
    /// fits the cache size. Data not yet uploaded is never touched.
    pub fn evict_to_budget(&self) -> LiveResult<u64> {
        let budget = self.cache_size.load(Ordering::SeqCst);
        let (_, uploaded) = self.gens()?;
        let chunks = self.reader.disk_usage();
        let mut fit = self.fit.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*fit, Some((u, b, c)) if u == uploaded && b == budget && chunks <= c) {
            return Ok(0);
        }
        let room = budget.saturating_sub(chunks);
        // The index's lock is taken per lookup, never held across an
        // eviction (which waits for the barrier a seal may hold while it
        // adds to the index).
        let indexed = |id: &Id| self.repo.index().contains(id);
        let candidates = self.live.evictable(uploaded, room, &indexed)?;
        let mut used = chunks + candidates.iter().map(|(_, n)| n).sum::<u64>();
        let mut freed = 0;
        for (ino, n) in candidates {
            if used <= budget {
                break;
            }
            if self.live.evict(ino, uploaded, &indexed)? {
                used -= n;
                freed += n;
            }
        }
        // An open file can keep clean data over the size: look again.
        *fit = (used <= budget).then_some((uploaded, budget, chunks));
        Ok(freed)
    }

    /// Give up the repository's writer lock (after the last upload).
    pub fn release_lock(&self) {
        self.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Stop holding the writer lock but leave it in the store: the last
    /// upload failed and the outbox still holds what it did not upload.
    pub fn leave_lock(&self) {
        if let Some(l) = self.lock.lock().unwrap_or_else(|e| e.into_inner()).take() {
            l.leave();
        }
    }

    /// Fails if this mount no longer holds the writer lock.
    pub(crate) fn check_lock(&self) -> Result<()> {
        match &*self.lock.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(l) => l.check(),
            None => Ok(()),
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Keep uploading until the outbox is empty; `progress` hears
    /// (objects, bytes) left after each attempt.
    pub fn drain(&self, progress: &dyn Fn(u64, u64, Option<&str>)) -> Result<()> {
        loop {
            let r = self.upload_pending();
            let (n, b) = self.pending().map_err(live_err)?;
            let err = r.as_ref().err().map(|e| e.to_string());
            progress(n, b, err.as_deref());
            if n == 0 {
                return Ok(());
            }
            if let Err(Error::Locked { .. }) = r {
                return r;
            }
            std::thread::sleep(Duration::from_secs(if r.is_ok() { 0 } else { 2 }));
        }
    }

    fn record_ok(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.last_ok = Some(SystemTime::now());
        st.reachable = true;
    }

    fn record_err(&self, e: &Error) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.last_error = Some((e.to_string(), SystemTime::now()));
        st.reachable = !matches!(e, Error::Store { .. });
    }
}

/// The cache's record of its last prune (Unix seconds), or of its first
/// mount before any.
const PRUNE_CLOCK: &str = "prune_clock";

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Oldest first (by time, then id), as `.history` names them.
fn sort_snapshots(snaps: &mut [SnapEntry]) {
    snaps.sort_by(|a, b| {
        a.snapshot
            .time_ns
            .cmp(&b.snapshot.time_ns)
            .then(a.id.cmp(&b.id))
    });
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawning a flusher thread")
}

pub fn live_err(e: LiveError) -> Error {
    match e {
        LiveError::Repo(e) => e,
        LiveError::Io(e) => Error::io("cache", e),
        e => Error::Invalid(format!("cache: {e}")),
    }
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                match e.metadata() {
                    Ok(m) if m.is_dir() => stack.push(e.path()),
                    Ok(m) => total += std::os::unix::fs::MetadataExt::blocks(&m) * 512,
                    Err(_) => {}
                }
            }
        }
    }
    total
}

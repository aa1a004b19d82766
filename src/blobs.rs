//! Reading blobs for the mount: memory cache → disk chunk cache → outbox →
//! store, with read-ahead.
//!
//! Data blobs fetched from the store are kept decrypted in `chunks/` under
//! the cache directory (0700), bounded by the cache size and evicted least
//! recently used; tree blobs are read from whole tree packs cached in
//! `packs/` (one GET serves thousands of directories). Blobs sealed but not
//! yet uploaded are read from their outbox pack. Every blob is verified
//! against its keyed id before it is used, wherever it came from. A blob
//! whose copy there is missing or fails to verify is read from its other
//! copies in the store, if the index lists any (and the mount's log says so).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crossbeam_channel::{bounded, Sender};
use lru::LruCache;

use crate::crypto::{BlobKind, Id};
use crate::error::{Error, Result};
use crate::live::DataSource;
use crate::repo::index::{BlobLoc, PackMeta};
use crate::repo::pack::{open_blob, pack_name};
use crate::repo::tree::Tree;
use crate::repo::Repository;

/// Decrypted chunks kept in memory (sequential reads of ~1 MiB chunks in
/// 128 KiB requests hit here).
const MEM_BYTES: usize = 64 << 20;

/// Decoded trees kept in memory, by what they hold (`Tree::heap_bytes`).
/// A count bound was not enough: a tree of 1,000 small files holds about
/// 440 KB decoded, and the import of a 1M-file snapshot kept all 1,001 of
/// them, about 440 MB.
const TREE_BYTES: usize = 32 << 20;

/// A least-recently-used cache bounded by the bytes its values hold.
struct Bounded<V> {
    cache: LruCache<Id, (V, usize)>,
    bytes: usize,
    limit: usize,
}

impl<V: Clone> Bounded<V> {
    fn new(limit: usize) -> Self {
        Bounded {
            cache: LruCache::unbounded(),
            bytes: 0,
            limit,
        }
    }

    fn get(&mut self, id: &Id) -> Option<V> {
        self.cache.get(id).map(|(v, _)| v.clone())
    }

    /// Keep `v`, which holds `size` bytes, and drop the least recently
    /// used until the rest fits (`v` too, if it alone is over the limit).
    fn put(&mut self, id: Id, v: V, size: usize) {
        if let Some((_, old)) = self.cache.put(id, (v, size)) {
            self.bytes -= old;
        }
        self.bytes += size;
        while self.bytes > self.limit {
            match self.cache.pop_lru() {
                Some((_, (_, s))) => self.bytes -= s,
                None => break,
            }
        }
    }
}

/// The decrypted chunk cache on disk: sizes in least-recently-used order
/// (every operation O(1), also with hundreds of thousands of chunks).
struct DiskCache {
    sizes: LruCache<Id, u64>,
    total: u64,
}

pub struct BlobReader {
    repo: Arc<Repository>,
    chunk_dir: PathBuf,
    pack_dir: PathBuf,
    outbox: RwLock<HashMap<Id, PathBuf>>,
    /// Decrypted data chunks.
    mem: Mutex<Bounded<Arc<Vec<u8>>>>,
    /// Decoded trees (their raw blobs are not kept: only `read_tree` reads
    /// them).
    trees: Mutex<Bounded<Arc<Tree>>>,
    disk: Mutex<DiskCache>,
    disk_budget: u64,
    prefetch_tx: Mutex<Option<Sender<Id>>>,
    /// Blobs queued for the read-ahead threads.
    in_flight: Mutex<HashSet<Id>>,
    /// Data blobs being fetched, decrypted and verified right now: a reader
    /// that wants one waits for that fetch instead of doing it again (the
    /// read-ahead is usually a step ahead of the reader, and each fetch of
    /// a 1 MiB chunk costs milliseconds of CPU).
    fetching: Mutex<HashMap<Id, Arc<Fetch>>>,
    /// Blobs fetched from the store or the outbox (for tests).
    #[cfg(test)]
    fetched: std::sync::atomic::AtomicU64,
    tree_pack_lock: Mutex<()>,
}

impl BlobReader {
    /// `cache_dir` holds `chunks/` and `packs/`; `disk_budget` bounds the
    /// decrypted chunk cache.
    pub fn new(
        repo: Arc<Repository>,
        cache_dir: &Path,
        disk_budget: u64,
    ) -> Result<Arc<BlobReader>> {
        let chunk_dir = cache_dir.join("chunks");
        let pack_dir = cache_dir.join("packs");
        for d in [&chunk_dir, &pack_dir] {
            fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        // Rebuild the chunk cache's order from file times (oldest first).
        let mut found: Vec<(std::time::SystemTime, Id, u64)> = Vec::new();
        if let Ok(rd) = fs::read_dir(&chunk_dir) {
            for e in rd.flatten() {
                let (Some(id), Ok(md)) =
                    (e.file_name().to_str().and_then(Id::from_hex), e.metadata())
                else {
                    let _ = fs::remove_file(e.path());
                    continue;
                };
                found.push((md.modified().unwrap_or(std::time::UNIX_EPOCH), id, md.len()));
            }
        }
        found.sort();
        let mut disk = DiskCache {
            sizes: LruCache::unbounded(),
            total: 0,
        };
        for (_, id, len) in found {
            if disk.sizes.put(id, len).is_none() {
                disk.total += len;
            }
        }
        let reader = Arc::new(BlobReader {
            repo,
            chunk_dir,
            pack_dir,
            outbox: RwLock::new(HashMap::new()),
            mem: Mutex::new(Bounded::new(MEM_BYTES)),
            trees: Mutex::new(Bounded::new(TREE_BYTES)),
            disk: Mutex::new(disk),
            disk_budget,
            prefetch_tx: Mutex::new(None),
            in_flight: Mutex::new(HashSet::new()),
            fetching: Mutex::new(HashMap::new()),
            #[cfg(test)]
            fetched: Default::default(),
            tree_pack_lock: Mutex::new(()),
        });
        // Fetches ahead of the reader at once: from a local store they cost
        // CPU (2 were faster than 8 reading an old snapshot back on this
        // 2-core machine: 13.2-14.2 s against 14.6-15.0 s); from a remote
        // one they wait for round trips (8 against 2 on the S3 test server:
        // 99 s against 178 s, docs/benchmarks.md P8).
        let fetchers = if reader.repo.store().is_local() { 2 } else { 8 };
        reader.start_prefetchers(fetchers);
        Ok(reader)
    }

    pub fn repo(&self) -> &Arc<Repository> {
        &self.repo
    }

    fn start_prefetchers(self: &Arc<Self>, n: usize) {
        let (tx, rx) = bounded::<Id>(64);
        for i in 0..n {
            let rx = rx.clone();
            let me = Arc::downgrade(self);
            let _ = std::thread::Builder::new()
                .name(format!("secrate-ahead{i}"))
                .spawn(move || {
                    for id in rx {
                        let Some(r) = me.upgrade() else { return };
                        let _ = r.blob(BlobKind::Data, &id);
                        r.in_flight
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&id);
                    }
                });
        }
        *self.prefetch_tx.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }

    /// Stop read-ahead threads (they hold no strong reference; this just
    /// lets them exit).
    pub fn stop(&self) {
        self.prefetch_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// A pack sealed but not yet uploaded lives at `path`.
    pub fn add_outbox(&self, pack: Id, path: PathBuf) {
        self.outbox
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pack, path);
    }

    pub fn remove_outbox(&self, pack: &Id) {
        self.outbox
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pack);
    }

    fn mem_get(&self, id: &Id) -> Option<Arc<Vec<u8>>> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner()).get(id)
    }

    fn mem_put(&self, id: Id, data: Arc<Vec<u8>>) {
        let size = data.len();
        self.mem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(id, data, size);
    }

    /// A verified blob, from wherever it is cheapest.
    pub fn blob(&self, kind: BlobKind, id: &Id) -> Result<Arc<Vec<u8>>> {
        if id.is_lost() {
            return Err(Error::Lost {
                what: format!("a range of a file ({} blob)", kind.name()),
            });
        }
        if let Some(d) = self.mem_get(id) {
            return Ok(d);
        }
        if kind != BlobKind::Data {
            return self.fetch(kind, id);
        }
        // One fetch per data blob at a time. After waiting for another's,
        // the blob is in memory, unless that fetch failed or it was evicted
        // meanwhile: then this one fetches it itself, unregistered, and
        // gets its own answer.
        let (fetch, mine) = {
            let mut m = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
            match m.get(id) {
                Some(f) => (f.clone(), false),
                None => {
                    let f = Arc::new(Fetch::default());
                    m.insert(*id, f.clone());
                    (f, true)
                }
            }
        };
        if !mine {
            fetch.wait();
            if let Some(d) = self.mem_get(id) {
                return Ok(d);
            }
            return self.fetch(kind, id);
        }
        let _done = FetchDone {
            reader: self,
            id: *id,
            fetch,
        };
        self.fetch(kind, id)
    }

    /// `blob` without the memory cache's look and without waiting for
    /// other fetches.
    fn fetch(&self, kind: BlobKind, id: &Id) -> Result<Arc<Vec<u8>>> {
        if kind == BlobKind::Data {
            if let Some(d) = self.disk_get(id) {
                let d = Arc::new(d);
                self.mem_put(*id, d.clone());
                return Ok(d);
            }
        }
        let (pack, loc) = self.repo.first_copy(kind, id)?;
        #[cfg(test)]
        self.fetched
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let data = match self.fetch_copy(kind, id, &pack, loc) {
            Ok(d) => d,
            // A blob stored in several packs (two writers, a retried
            // upload, repair) is read from another copy when this one is
            // missing or fails to verify.
            Err(e) if e.is_damage() => {
                let (d, damaged) = self.repo.read_blob_elsewhere(kind, id, (pack.id, loc), e)?;
                // A pack gone from the store is logged once, where it is
                // found gone.
                for e in damaged
                    .into_iter()
                    .filter(|e| !matches!(e, Error::Missing { .. }))
                {
                    crate::log!(
                        "warning: {e}; {} blob {} was read from another copy (run `secrate check`)",
                        kind.name(),
                        id.short()
                    );
                }
                d
            }
            Err(e) => return Err(e),
        };
        let data = Arc::new(data);
        if kind == BlobKind::Data {
            self.disk_put(id, &data);
        }
        // A tree is kept decoded (`read_tree`), never twice.
        if kind != BlobKind::Tree {
            self.mem_put(*id, data.clone());
        }
        Ok(data)
    }

    /// The copy of blob `id` at `loc` in `pack` (this copy only), from the
    /// outbox, the cached tree pack or the store.
    fn fetch_copy(
        &self,
        kind: BlobKind,
        id: &Id,
        pack: &PackMeta,
        loc: BlobLoc,
    ) -> Result<Vec<u8>> {
        let local = self
            .outbox
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pack.id)
            .cloned();
        let (local, cached) = match local {
            Some(p) => (Some(p), false),
            None if kind == BlobKind::Tree => (Some(self.tree_pack(&pack.id)?), true),
            None => (None, false),
        };
        let open_local = |path: &Path| -> Result<Vec<u8>> {
            let sealed = read_range(path, loc.offset as u64, loc.length as u64)?;
            let key = self.repo.pack_key(pack)?;
            open_blob(self.repo.keys(), &key, kind, id, &sealed)
                .map_err(|e| Error::corrupt(pack_name(&pack.id), e.0))
        };
        let from_store = || self.repo.read_blob_at(kind, id, pack, loc);
        match local {
            Some(path) => match open_local(&path) {
                Ok(d) => Ok(d),
                // The cached copy of a tree pack was verified when fetched
                // but is not synced: after a machine crash (or a disk
                // error) it can be short or damaged. It is dropped, to be
                // fetched again by the next reader, and this blob is read
                // from the store, which checks it again.
                Err(_) if cached => {
                    let _ = fs::remove_file(&path);
                    from_store()
                }
                // An outbox copy goes once its upload is done, maybe
                // between the look above and the read: then the store has
                // it. (Not yet uploaded, the local error is the one to
                // tell.)
                Err(e) => from_store().map_err(|_| e),
            },
            None => from_store(),
        }
    }

    /// The local copy of a whole tree pack, fetched once and verified.
    fn tree_pack(&self, pack: &Id) -> Result<PathBuf> {
        let path = self.pack_dir.join(pack.to_hex());
        if path.exists() {
            return Ok(path);
        }
        let _g = self
            .tree_pack_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if path.exists() {
            return Ok(path);
        }
        let name = pack_name(pack);
        let bytes = self.repo.store().get(&name)?;
        if Id::of_object(&bytes) != *pack {
            return Err(Error::corrupt(name, "its content does not match its name"));
        }
        let tmp = path.with_extension("tmp");
        crate::space::check(&self.pack_dir, bytes.len() as u64, crate::space::Use::Data)
            .map_err(|e| Error::io(&tmp, e))?;
        fs::write(&tmp, &bytes).map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        Ok(path)
    }

    /// Remove the cached copies of tree packs the index no longer lists
    /// (pruned, or left out as lost) and copies cut short before their
    /// rename: nothing reads them, and prune after prune they would pile up
    /// outside `--cache-size`. Call after loading the index. Returns how
    /// many went.
    pub fn drop_unindexed_tree_packs(&self) -> usize {
        let Ok(rd) = fs::read_dir(&self.pack_dir) else {
            return 0;
        };
        let ix = self.repo.index();
        let mut dropped = 0;
        for e in rd.flatten() {
            let keep = e
                .file_name()
                .to_str()
                .and_then(Id::from_hex)
                .is_some_and(|id| ix.has_pack(&id));
            if !keep && fs::remove_file(e.path()).is_ok() {
                dropped += 1;
            }
        }
        dropped
    }

    /// Fetch every tree pack in the index now (before walking a whole
    /// snapshot: a few large GETs instead of one per directory). A pack
    /// that is missing or fails to verify is left to the readers of its
    /// trees: they read another copy, or fail on that tree alone.
    pub fn fetch_tree_packs(&self) -> Result<()> {
        use rayon::prelude::*;
        let packs: Vec<Id> = {
            let ix = self.repo.index();
            ix.packs()
                .iter()
                .filter(|p| p.kind == BlobKind::Tree)
                .map(|p| p.id)
                .collect()
        };
        let outbox = self
            .outbox
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        packs
            .par_iter()
            .filter(|p| !outbox.contains_key(p))
            .try_for_each(|p| match self.tree_pack(p) {
                Err(e) if !e.is_damage() => Err(e),
                _ => Ok(()),
            })
    }

    pub fn read_tree(&self, id: &Id) -> Result<Arc<Tree>> {
        if let Some(t) = self.trees.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            return Ok(t);
        }
        let raw = self.blob(BlobKind::Tree, id)?;
        let t = Arc::new(
            Tree::decode(&raw).map_err(|e| Error::corrupt(format!("tree {}", id.short()), e.0))?,
        );
        let size = t.heap_bytes();
        self.trees
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(*id, t.clone(), size);
        Ok(t)
    }

    fn disk_path(&self, id: &Id) -> PathBuf {
        self.chunk_dir.join(id.to_hex())
    }

    fn disk_get(&self, id: &Id) -> Option<Vec<u8>> {
        if !self
            .disk
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sizes
            .contains(id)
        {
            return None;
        }
        let data = fs::read(self.disk_path(id)).ok()?;
        // The cache is local but still checked: a damaged file is refetched.
        if self.repo.keys().blob_id(BlobKind::Data, &data) != *id {
            self.disk_remove(id);
            return None;
        }
        // Most recently used now.
        let _ = self
            .disk
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sizes
            .get(id);
        Some(data)
    }

    fn disk_remove(&self, id: &Id) {
        let mut d = self.disk.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = d.sizes.pop(id) {
            d.total -= n;
        }
        let _ = fs::remove_file(self.disk_path(id));
    }

    fn disk_put(&self, id: &Id, data: &[u8]) {
        if self.disk_budget == 0 || data.len() as u64 > self.disk_budget {
            return;
        }
        let path = self.disk_path(id);
        let tmp = path.with_extension("tmp");
        if crate::space::check(&self.chunk_dir, data.len() as u64, crate::space::Use::Data).is_err()
        {
            return;
        }
        // Room is made before the chunk is written, so that the files on
        // disk never take more than the budget, also while several are
        // being put at once. (A reader that finds the entry before its file
        // is in place fetches the chunk again.)
        let mut evict = Vec::new();
        {
            let mut d = self.disk.lock().unwrap_or_else(|e| e.into_inner());
            match d.sizes.put(*id, data.len() as u64) {
                None => d.total += data.len() as u64,
                Some(old_len) => d.total = d.total - old_len + data.len() as u64,
            }
            while d.total > self.disk_budget {
                let Some((old, n)) = d.sizes.pop_lru() else {
                    break;
                };
                d.total -= n;
                evict.push(old);
            }
        }
        for old in evict {
            let _ = fs::remove_file(self.disk_path(&old));
        }
        if fs::write(&tmp, data)
            .and_then(|()| fs::rename(&tmp, &path))
            .is_err()
        {
            let _ = fs::remove_file(&tmp);
            self.disk_remove(id);
            return;
        }
        // Evicted by another put while it was being written.
        let d = self.disk.lock().unwrap_or_else(|e| e.into_inner());
        if !d.sizes.contains(id) {
            let _ = fs::remove_file(&path);
        }
    }

    /// Bytes in the decrypted chunk cache.
    pub fn disk_usage(&self) -> u64 {
        self.disk.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

/// A fetch under way (`BlobReader::fetching`).
#[derive(Default)]
struct Fetch {
    done: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Fetch {
    fn wait(&self) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            done = self.cv.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Ends a fetch, whatever its outcome: waiters wake up.
struct FetchDone<'a> {
    reader: &'a BlobReader,
    id: Id,
    fetch: Arc<Fetch>,
}

impl Drop for FetchDone<'_> {
    fn drop(&mut self) {
        self.reader
            .fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        *self.fetch.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.fetch.cv.notify_all();
    }
}

fn read_range(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset)
        .map_err(|e| Error::io(path, e))?;
    Ok(buf)
}

impl DataSource for BlobReader {
    fn chunk(&self, id: &Id) -> Result<Arc<Vec<u8>>> {
        self.blob(BlobKind::Data, id)
    }

    fn prefetch(&self, ids: &[Id]) {
        let tx = self
            .prefetch_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(tx) = tx else { return };
        for id in ids {
            if self.mem_get(id).is_some() {
                continue;
            }
            if !self
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(*id)
            {
                continue;
            }
            if tx.try_send(*id).is_err() {
                self.in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_of_one_blob_share_one_fetch() {
        use crate::repo::writer::{BlobWriter, StoreSink};
        use std::sync::atomic::Ordering;
        let repo = Arc::new(crate::repo::tests::test_init("memory://one-fetch"));
        // Big enough that decrypting and verifying it takes milliseconds,
        // while the threads below start within microseconds of each other.
        let data: Vec<u8> = (0..4u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let w = BlobWriter::new(repo.clone(), Arc::new(StoreSink(repo.clone())), 1);
        let id = w.add(BlobKind::Data, &data).unwrap();
        let (packs, _) = w.finish().unwrap();
        repo.write_index(&packs).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // No disk cache: every blob not in memory comes from the store.
        let reader = BlobReader::new(repo, dir.path(), 0).unwrap();
        let start = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (reader, start) = (reader.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    reader.blob(BlobKind::Data, &id).unwrap()
                })
            })
            .collect();
        for t in threads {
            assert!(*t.join().unwrap() == data);
        }
        assert_eq!(reader.fetched.load(Ordering::Relaxed), 1);
        reader.stop();
    }

    /// Cached tree packs the index no longer lists (pruned) and leftover
    /// temporary copies go; the others stay.
    #[test]
    fn unindexed_tree_pack_copies_go() {
        use crate::repo::tree::Tree;
        use crate::repo::writer::{BlobWriter, StoreSink};
        let repo = Arc::new(crate::repo::tests::test_init("memory://tree-pack-gone"));
        let w = BlobWriter::new(repo.clone(), Arc::new(StoreSink(repo.clone())), 1);
        let tree = Tree {
            entries: vec![crate::repo::tree::tests::file("f", vec![])],
        };
        w.add(BlobKind::Tree, &tree.encode()).unwrap();
        let (packs, _) = w.finish().unwrap();
        repo.write_index(&packs).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let reader = BlobReader::new(repo.clone(), dir.path(), 0).unwrap();
        reader.fetch_tree_packs().unwrap();
        let pack_dir = dir.path().join("packs");
        let pruned = pack_dir.join(Id::of_object(b"a pruned pack").to_hex());
        fs::write(&pruned, b"old").unwrap();
        fs::write(pack_dir.join("cut-short.tmp"), b"x").unwrap();
        assert_eq!(reader.drop_unindexed_tree_packs(), 2);
        let left: Vec<_> = fs::read_dir(&pack_dir).unwrap().flatten().collect();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].file_name().to_str(), Some(&*packs[0].id.to_hex()));
        reader.stop();
    }

    /// A damaged cached copy of a tree pack (e.g. cut short by a machine
    /// crash) is read past from the store and fetched again, not an error
    /// for ever.
    #[test]
    fn a_damaged_tree_pack_copy_is_fetched_again() {
        use crate::repo::tree::Tree;
        use crate::repo::writer::{BlobWriter, StoreSink};
        let repo = Arc::new(crate::repo::tests::test_init("memory://tree-pack-again"));
        let w = BlobWriter::new(repo.clone(), Arc::new(StoreSink(repo.clone())), 1);
        let tree = Tree {
            entries: vec![crate::repo::tree::tests::file("f", vec![])],
        };
        let id = w.add(BlobKind::Tree, &tree.encode()).unwrap();
        let (packs, _) = w.finish().unwrap();
        repo.write_index(&packs).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let reader = BlobReader::new(repo.clone(), dir.path(), 0).unwrap();
        reader.fetch_tree_packs().unwrap();
        let copy = fs::read_dir(dir.path().join("packs"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let good = fs::read(&copy).unwrap();
        for damage in [0, 1] {
            let mut bad = good.clone();
            if damage == 0 {
                bad.truncate(16);
            } else {
                bad[16..].iter_mut().for_each(|b| *b ^= 0x5a);
            }
            fs::write(&copy, &bad).unwrap();
            // A fresh reader: nothing decoded in memory yet.
            let reader = BlobReader::new(repo.clone(), dir.path(), 0).unwrap();
            assert_eq!(reader.read_tree(&id).unwrap().entries, tree.entries);
            reader.stop();
            let reader = BlobReader::new(repo.clone(), dir.path(), 0).unwrap();
            assert_eq!(reader.read_tree(&id).unwrap().entries, tree.entries);
            assert_eq!(fs::read(&copy).unwrap(), good, "fetched again");
            reader.stop();
        }
        reader.stop();
    }

    /// A pack whose upload finished (and whose outbox copy went) between
    /// the reader's look at the outbox and its read is read from the store:
    /// a read of the newest snapshot never fails with ENOENT for that.
    #[test]
    fn an_outbox_copy_gone_meanwhile_is_read_from_the_store() {
        use crate::repo::writer::{BlobWriter, StoreSink};
        let repo = Arc::new(crate::repo::tests::test_init("memory://outbox-gone"));
        let w = BlobWriter::new(repo.clone(), Arc::new(StoreSink(repo.clone())), 1);
        let id = w.add(BlobKind::Data, b"uploaded just now").unwrap();
        let (packs, _) = w.finish().unwrap();
        repo.write_index(&packs).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let reader = BlobReader::new(repo, dir.path(), 0).unwrap();
        reader.add_outbox(packs[0].id, dir.path().join("outbox/removed-by-the-upload"));
        assert_eq!(
            &reader.blob(BlobKind::Data, &id).unwrap()[..],
            b"uploaded just now"
        );
        reader.stop();
    }

    #[test]
    fn bounded_keeps_the_most_recent_within_its_bytes() {
        let id = |n: u8| Id([n; 32]);
        let mut c = Bounded::new(10);
        c.put(id(1), 1, 4);
        c.put(id(2), 2, 4);
        assert_eq!(c.get(&id(1)), Some(1)); // 2 is now the least recent
        c.put(id(3), 3, 4);
        assert_eq!(
            (c.get(&id(1)), c.get(&id(2)), c.get(&id(3))),
            (Some(1), None, Some(3))
        );
        assert_eq!(c.bytes, 8);
        c.put(id(1), 10, 6); // replacing counts the new size only
        assert_eq!(
            (c.get(&id(1)), c.get(&id(3)), c.bytes),
            (Some(10), Some(3), 10)
        );
        c.put(id(4), 4, 11); // over the limit alone: nothing stays
        assert_eq!((c.get(&id(4)), c.get(&id(1)), c.bytes), (None, None, 0));
    }

    #[test]
    fn a_tree_is_weighed_by_what_its_entries_hold() {
        use crate::repo::tree::{ChunkRef, Content, Entry, Kind};
        let entry = |name: &[u8], chunks: usize| Entry {
            name: name.to_vec(),
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: Default::default(),
            ctime: None,
            size: 0,
            dev: 0,
            inode: 0,
            links: 1,
            rdev: 0,
            xattrs: vec![(b"user.a".to_vec(), vec![0; 100])],
            content: Content::Chunks(vec![
                ChunkRef {
                    id: Id([0; 32]),
                    len: 1
                };
                chunks
            ]),
        };
        let small = Tree {
            entries: vec![entry(b"a", 1)],
        };
        let big = Tree {
            entries: vec![entry(b"a", 1000), entry(&[b'b'; 300], 1)],
        };
        assert!(small.heap_bytes() >= std::mem::size_of::<Entry>() + 100 + 36);
        assert!(big.heap_bytes() >= small.heap_bytes() + 999 * 36 + 300);
    }

    /// The mount's reader reads a blob stored in two packs from the other
    /// when the copy lookups find is missing or fails to verify: a data
    /// chunk (a ranged read) and a tree (read from whole cached tree
    /// packs); fetching the tree packs ahead passes over the bad one.
    #[test]
    fn a_damaged_copy_is_read_past_by_the_mount() {
        use crate::ops::repair::tests::{chunk, open, two_copies_repo};
        for delete in [true, false] {
            let two = two_copies_repo(&format!("memory://mount-read-past-{delete}"));
            let (repo, ids) = (&two.repo, &two.ids);
            two.spoil_first(delete);
            let dir = tempfile::tempdir().unwrap();
            let reader = BlobReader::new(open(repo.store(), "pw"), dir.path(), 1 << 20).unwrap();
            reader.fetch_tree_packs().unwrap();
            assert_eq!(reader.read_tree(&two.root).unwrap().entries.len(), 3);
            assert!(*reader.blob(BlobKind::Data, &ids[0]).unwrap() == chunk(0));
            let other = 3 - two.lone;
            assert!(*reader.blob(BlobKind::Data, &ids[other]).unwrap() == chunk(other as u8));
            reader.stop();
        }
    }
}

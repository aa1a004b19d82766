//! Writing blobs: dedup, seal into packs, hand full packs to a sink.
//!
//! Callers (many threads at once) call `add`; the caller's own thread
//! compresses and seals the blob into one of a pool of open packs, so sealing
//! runs on as many cores as there are callers and no lock is held while
//! sealing. Full packs go through a bounded queue to uploader threads that
//! call the `PackSink` (the store for `backup`, the outbox for the mount).
//! The queue bound is the memory bound: open packs plus queued packs. At
//! most one open pack per core and kind exists (more callers than cores
//! wait for one): callers may be many more threads than cores, so that
//! reads of small files overlap (`backup`), and a pack per thread would
//! cost 16 MiB each for no gain in sealing speed.
//!
//! Dedup: a blob is skipped if the loaded index has it or if this writer
//! already took it. The caller must not reference a blob in a snapshot before
//! `finish` (or `take_stored`) reports the pack holding it as stored.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Sender};

use std::io::Read;

use crate::chunk::Chunker;
use crate::crypto::{BlobKind, Id};
use crate::error::{Error, Result};
use crate::repo::pack::{PackBuilder, PackInfo};
use crate::repo::tree::ChunkRef;
use crate::repo::Repository;

/// Where finished packs go.
pub trait PackSink: Send + Sync {
    fn store_pack(&self, info: &PackInfo, bytes: Vec<u8>) -> Result<()>;
}

/// Uploads packs straight to the repository's store.
pub struct StoreSink(pub Arc<Repository>);

impl PackSink for StoreSink {
    fn store_pack(&self, info: &PackInfo, bytes: Vec<u8>) -> Result<()> {
        self.0.put_pack(info, bytes)
    }
}

#[derive(Default, Debug, Clone, Copy)]
pub struct WriterStats {
    /// Blobs new to the repository, and their plaintext bytes.
    pub new_blobs: u64,
    pub new_bytes: u64,
    /// Bytes of packs handed to the sink.
    pub stored_bytes: u64,
    pub stored_packs: u64,
}

struct Shared {
    stored: Mutex<Vec<PackInfo>>,
    error: Mutex<Option<Error>>,
    stored_bytes: AtomicU64,
    stored_packs: AtomicU64,
}

type FinishedPack = (PackInfo, Vec<u8>);

/// Packs not being written to right now, and how many exist per kind
/// (those in the pool and those a caller holds).
#[derive(Default)]
struct OpenPacks {
    pool: Vec<PackBuilder>,
    count: [usize; 2],
}

fn kind_slot(kind: BlobKind) -> usize {
    match kind {
        BlobKind::Data => 0,
        BlobKind::Tree => 1,
    }
}

pub struct BlobWriter {
    repo: Arc<Repository>,
    target: usize,
    open: Mutex<OpenPacks>,
    /// Signalled when a pack goes back to the pool or is sent.
    pack_free: Condvar,
    /// Open packs allowed per kind.
    max_open: usize,
    taken: Mutex<HashSet<Id>>,
    tx: Mutex<Option<Sender<FinishedPack>>>,
    uploaders: Mutex<Vec<JoinHandle<()>>>,
    shared: Arc<Shared>,
    new_blobs: AtomicU64,
    new_bytes: AtomicU64,
    /// Repacking: store blobs even though the index has them (elsewhere).
    ignore_index: bool,
}

impl BlobWriter {
    pub fn new(repo: Arc<Repository>, sink: Arc<dyn PackSink>, uploaders: usize) -> BlobWriter {
        let (tx, rx) = bounded::<(PackInfo, Vec<u8>)>(1);
        let shared = Arc::new(Shared {
            stored: Mutex::new(Vec::new()),
            error: Mutex::new(None),
            stored_bytes: AtomicU64::new(0),
            stored_packs: AtomicU64::new(0),
        });
        let uploaders = (0..uploaders.max(1))
            .map(|i| {
                let (rx, sink, shared) = (rx.clone(), sink.clone(), shared.clone());
                std::thread::Builder::new()
                    .name(format!("secrate-up{i}"))
                    .spawn(move || {
                        for (info, bytes) in rx {
                            let len = bytes.len() as u64;
                            match sink.store_pack(&info, bytes) {
                                Ok(()) => {
                                    shared.stored_bytes.fetch_add(len, Ordering::Relaxed);
                                    shared.stored_packs.fetch_add(1, Ordering::Relaxed);
                                    lock(&shared.stored).push(info);
                                }
                                Err(e) => {
                                    let mut slot = lock(&shared.error);
                                    if slot.is_none() {
                                        *slot = Some(e);
                                    }
                                }
                            }
                        }
                    })
                    .expect("spawning an uploader thread")
            })
            .collect();
        let target = repo.config().pack_target as usize;
        BlobWriter {
            repo,
            target,
            open: Mutex::new(OpenPacks::default()),
            pack_free: Condvar::new(),
            max_open: std::thread::available_parallelism().map_or(2, |n| n.get()),
            taken: Mutex::new(HashSet::new()),
            tx: Mutex::new(Some(tx)),
            uploaders: Mutex::new(uploaders),
            shared,
            new_blobs: AtomicU64::new(0),
            new_bytes: AtomicU64::new(0),
            ignore_index: false,
        }
    }

    /// A writer that stores every blob once, whatever the index says (for
    /// moving blobs out of packs that are about to be deleted).
    pub fn for_repack(
        repo: Arc<Repository>,
        sink: Arc<dyn PackSink>,
        uploaders: usize,
    ) -> BlobWriter {
        let mut w = BlobWriter::new(repo, sink, uploaders);
        w.ignore_index = true;
        w
    }

    fn failed(&self) -> Result<()> {
        match lock(&self.shared.error).as_ref() {
            Some(e) => Err(Error::Store {
                url: self.repo.url().into(),
                object: "a pack".into(),
                reason: e.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Store `data` as a blob unless the repository has it; return its id.
    pub fn add(&self, kind: BlobKind, data: &[u8]) -> Result<Id> {
        let id = self.repo.keys().blob_id(kind, data);
        self.add_with_id(kind, id, data)?;
        Ok(id)
    }

    /// As `add` with the id already computed. Returns whether it was new.
    pub fn add_with_id(&self, kind: BlobKind, id: Id, data: &[u8]) -> Result<bool> {
        self.failed()?;
        if (!self.ignore_index && self.repo.index().contains(&id)) || !lock(&self.taken).insert(id)
        {
            return Ok(false);
        }
        let mut pack = self.take_pack(kind);
        pack.add(id, data);
        self.new_blobs.fetch_add(1, Ordering::Relaxed);
        self.new_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        if pack.len() >= self.target {
            lock(&self.open).count[kind_slot(kind)] -= 1;
            self.pack_free.notify_one();
            self.send(pack)?;
        } else {
            lock(&self.open).pool.push(pack);
            self.pack_free.notify_one();
        }
        Ok(true)
    }

    /// An open pack of `kind` from the pool, a new one if fewer than
    /// `max_open` exist, or else the next one another caller puts back.
    /// Holders never wait for anything but the upload queue, so this wait
    /// always ends.
    fn take_pack(&self, kind: BlobKind) -> PackBuilder {
        let mut open = lock(&self.open);
        loop {
            if let Some(i) = open.pool.iter().position(|p| p.kind() == kind) {
                return open.pool.swap_remove(i);
            }
            if open.count[kind_slot(kind)] < self.max_open {
                open.count[kind_slot(kind)] += 1;
                return PackBuilder::new(kind, (self.target + self.target / 8).min(32 << 20));
            }
            open = self.pack_free.wait(open).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn send(&self, pack: PackBuilder) -> Result<()> {
        let (bytes, info) = pack.finish(self.repo.keys());
        let tx = lock(&self.tx)
            .clone()
            .ok_or_else(|| Error::Invalid("the blob writer is finished".into()))?;
        tx.send((info, bytes)).map_err(|_| Error::Store {
            url: self.repo.url().into(),
            object: "a pack".into(),
            reason: "the uploaders stopped".into(),
        })?;
        self.failed()
    }

    /// Chunk a stream and store its chunks, sealing them in parallel while
    /// the stream is still being read; returns the chunk list in order.
    /// `on_read` hears of every chunk's size as it is read.
    pub fn store_stream(
        &self,
        chunker: &Chunker,
        source: impl Read + Send,
        on_read: &(dyn Fn(usize) + Sync),
    ) -> std::io::Result<Result<Vec<ChunkRef>>> {
        use rayon::prelude::*;
        let mut stream = chunker.stream(source);
        // Most files are one chunk: store it here rather than hand one item
        // to the thread pool (whose idle workers spin in sched_yield).
        let Some(first) = stream.next().transpose()? else {
            return Ok(Ok(Vec::new()));
        };
        let second = stream.next().transpose()?;
        if second.is_none() {
            on_read(first.len());
            return Ok(self.add(BlobKind::Data, &first).map(|id| {
                vec![ChunkRef {
                    id,
                    len: first.len() as u32,
                }]
            }));
        }
        let r: std::result::Result<Vec<(usize, ChunkRef)>, StreamError> = [Ok(first)]
            .into_iter()
            .chain(second.map(Ok))
            .chain(stream)
            .enumerate()
            .par_bridge()
            .map(|(i, chunk)| {
                let chunk = chunk.map_err(StreamError::Io)?;
                on_read(chunk.len());
                let id = self
                    .add(BlobKind::Data, &chunk)
                    .map_err(StreamError::Repo)?;
                Ok((
                    i,
                    ChunkRef {
                        id,
                        len: chunk.len() as u32,
                    },
                ))
            })
            .collect();
        match r {
            Ok(mut v) => {
                v.sort_by_key(|(i, _)| *i);
                Ok(Ok(v.into_iter().map(|(_, c)| c).collect()))
            }
            Err(StreamError::Io(e)) => Err(e),
            Err(StreamError::Repo(e)) => Ok(Err(e)),
        }
    }

    /// Packs stored since the last call (for writing index deltas early).
    pub fn take_stored(&self) -> Vec<PackInfo> {
        std::mem::take(&mut *lock(&self.shared.stored))
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            new_blobs: self.new_blobs.load(Ordering::Relaxed),
            new_bytes: self.new_bytes.load(Ordering::Relaxed),
            stored_bytes: self.shared.stored_bytes.load(Ordering::Relaxed),
            stored_packs: self.shared.stored_packs.load(Ordering::Relaxed),
        }
    }

    /// Seal the open packs, wait for every upload, and return the packs
    /// stored since the last `take_stored`.
    pub fn finish(&self) -> Result<(Vec<PackInfo>, WriterStats)> {
        let open = {
            let mut guard = lock(&self.open);
            let o = &mut *guard;
            for p in &o.pool {
                o.count[kind_slot(p.kind())] -= 1;
            }
            std::mem::take(&mut o.pool)
        };
        let mut result = Ok(());
        for p in open.into_iter().filter(|p| !p.is_empty()) {
            if let Err(e) = self.send(p) {
                result = Err(e);
                break;
            }
        }
        self.stop();
        result?;
        self.failed()?;
        let stats = self.stats();
        Ok((self.take_stored(), stats))
    }
}

impl BlobWriter {
    fn stop(&self) {
        lock(&self.tx).take();
        let handles = std::mem::take(&mut *lock(&self.uploaders));
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

enum StreamError {
    Io(std::io::Error),
    Repo(Error),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tests::test_init;

    #[test]
    fn dedups_and_packs() {
        let repo = Arc::new(test_init("memory://writer-test"));
        let w = BlobWriter::new(repo.clone(), Arc::new(StoreSink(repo.clone())), 2);
        let a = w.add(BlobKind::Data, b"aaa").unwrap();
        let a2 = w.add(BlobKind::Data, b"aaa").unwrap();
        assert_eq!(a, a2);
        let t = w.add(BlobKind::Tree, b"tree").unwrap();
        let (packs, stats) = w.finish().unwrap();
        assert_eq!(stats.new_blobs, 2);
        assert_eq!(packs.len(), 2);
        repo.write_index(&packs).unwrap();
        assert_eq!(repo.read_blob(BlobKind::Data, &a).unwrap(), b"aaa");
        assert_eq!(repo.read_blob(BlobKind::Tree, &t).unwrap(), b"tree");
        // Known blobs are not written again.
        let w = BlobWriter::new(repo.clone(), Arc::new(StoreSink(repo.clone())), 1);
        w.add(BlobKind::Data, b"aaa").unwrap();
        let (packs, stats) = w.finish().unwrap();
        assert!(packs.is_empty());
        assert_eq!(stats.new_blobs, 0);
    }
}

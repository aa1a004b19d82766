//! File contents in the live tree: staged files and sealed chunks.
//!
//! A file's content is either its staged file (`staged/<ino>`, written
//! since the file was last sealed, or copied up to be written) or its chunk
//! list, read through a `DataSource` (chunk cache, outbox, store). The first
//! write to a sealed file copies it up into a staged file; a truncation to
//! zero skips the copy. Reads never take the barrier; writes hold it shared,
//! but never while they fetch chunks for a copy-up or copy a file a seal
//! froze: those copies are made first and checked again under the barrier
//! (`staged_for_change`), since a seal waiting for the barrier makes every
//! other change wait behind whoever holds it.
//!
//! Copy-up: the copy is the only place the old content is kept once the
//! write that follows marks the file dirty (chunk list dropped), and any
//! durable commit after that (another file's fsync, a seal, an upload)
//! makes that record durable. So the copy's data is synced before the
//! rename gives it its name, and `staged/` is synced before the record can
//! be committed: on ext4 a journal commit makes a rename durable but not
//! delayed-allocation data, and after a power cut recovery would take the
//! empty or short staged file as the content (found by review; the
//! power-cut test in mount-tests/crash.rs). This is the one sync a write
//! can cost, once per copy-up; ordinary writes never sync (fsync is the
//! user's call). A truncation to zero copies nothing and needs none.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use crate::crypto::Id;
use crate::live::mapped::{Mapped, ReadBuf, MAP_MIN};
use crate::live::{now, Body, Inode, Live, LiveError, LiveResult};
use crate::repo::tree::{ChunkRef, Kind};

/// Where sealed file data comes from.
pub trait DataSource: Send + Sync {
    /// The plaintext of a data blob.
    fn chunk(&self, id: &Id) -> crate::Result<Arc<Vec<u8>>>;
    /// A hint that these chunks will be read soon.
    fn prefetch(&self, _ids: &[Id]) {}
}

#[derive(Default)]
struct OpenEntry {
    count: u32,
    file: Option<Arc<File>>,
    /// Taken around each write into the staged file: the kernel sends a
    /// big write as several requests at once, and threads writing one file
    /// together only spin on its inode lock (10 % of the daemon's CPU in a
    /// sequential write before this lock; they sleep here instead).
    writing: Arc<Mutex<()>>,
    /// Written since the disk was last asked to write this file's pages.
    unkicked: super::writeback::Unkicked,
}

/// Per inode: open counts, staged file handles, and what the kernel holds
/// (its lookup counts and which inodes lost their last link).
#[derive(Default)]
pub struct OpenFiles {
    entries: Mutex<HashMap<u64, OpenEntry>>,
    kernel: Mutex<KernelRefs>,
    copy_up: Mutex<HashMap<u64, Arc<Mutex<()>>>>,
    frozen: Mutex<HashMap<u64, Arc<Mutex<Frozen>>>>,
    /// Held around handing a file's content to the kernel, and waited for
    /// by every open and truncation of the file (inode % GATES).
    gates: [Mutex<()>; GATES],
    /// Read side held by each reply sent from a mapping of a staged file,
    /// write side by each truncation, which may shorten it (inode % GATES;
    /// see `mapped`).
    shrinks: [RwLock<()>; GATES],
    /// Read side held by each write, truncation and fsync of a file's
    /// content, from its look at the record until the record (or the
    /// disk) has the change; write side by eviction, which drops the staged
    /// file (inode % GATES). Without it an eviction could fall between a
    /// write's look ("staged") and its update, and the write would land in
    /// a file already removed.
    keeps: [RwLock<()>; GATES],
    /// Starts the disk's writeback of big writes (see `writeback`).
    kicker: super::writeback::Kicker,
}

/// Gates shared by all inodes; each is held for a few microseconds.
const GATES: usize = 32;

/// What the kernel holds. An inode whose last name went lives on with no
/// links while the kernel knows it, as an unlinked inode lives on a local
/// disk while anything refers to it: the kernel still sends requests for
/// it, a SETATTR of ctime right after every unlink (writeback cache),
/// `fstat` of an O_PATH descriptor or of a removed directory.
#[derive(Default)]
struct KernelRefs {
    /// The kernel's lookup count of each inode it knows: one per entry
    /// sent (LOOKUP, CREATE, MKNOD, MKDIR, SYMLINK, LINK, READDIRPLUS),
    /// less what its FORGETs return. Only the count says when it is done:
    /// it also sends FORGET for one of several references (a revalidation
    /// that found a different inode).
    lookups: HashMap<u64, u64>,
    /// Inodes with no links left that are still in use.
    unlinked: HashSet<u64>,
    /// Inodes whose whole content the kernel was given (or wrote itself,
    /// from creation on) since it looked them up: no need to give it again.
    given: HashSet<u64>,
}

/// Who sets the mtime and ctime of a file whose content changed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Times {
    /// The mount: now.
    Now,
    /// The kernel. With the writeback cache it stamps a write when the
    /// program makes it, keeps that mtime as the truth, and sends it in a
    /// SETATTR of its own; the WRITE carrying the data may reach us after
    /// that SETATTR, and stamping "now" then would leave a later mtime
    /// than the program saw (and than a snapshot should record).
    Kernel,
}

/// What fallocate(2) asks of a file: the modes FUSE passes on
/// (`fuse_file_fallocate` refuses the others itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Falloc {
    /// Reserve space for the range (mode 0, `FALLOC_FL_KEEP_SIZE`).
    Allocate { keep_size: bool },
    /// Make the range read as zeros: `FALLOC_FL_PUNCH_HOLE` (which the
    /// kernel takes only with `FALLOC_FL_KEEP_SIZE`) or
    /// `FALLOC_FL_ZERO_RANGE`.
    Zero { keep_size: bool, punch: bool },
}

impl Falloc {
    /// The request for fallocate's `mode`; `None` for what is not kept
    /// (collapsing or inserting a range, unsharing): EOPNOTSUPP.
    pub fn from_mode(mode: i32) -> Option<Falloc> {
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        match mode & !libc::FALLOC_FL_KEEP_SIZE {
            0 => Some(Falloc::Allocate { keep_size }),
            libc::FALLOC_FL_PUNCH_HOLE if keep_size => Some(Falloc::Zero {
                keep_size,
                punch: true,
            }),
            libc::FALLOC_FL_ZERO_RANGE => Some(Falloc::Zero {
                keep_size,
                punch: false,
            }),
            _ => None,
        }
    }

    fn keep_size(self) -> bool {
        match self {
            Falloc::Allocate { keep_size } | Falloc::Zero { keep_size, .. } => keep_size,
        }
    }

    /// The mode for fallocate(2) on the staged copy.
    fn flags(self) -> rustix::fs::FallocateFlags {
        use rustix::fs::FallocateFlags as F;
        let keep = if self.keep_size() {
            F::KEEP_SIZE
        } else {
            F::empty()
        };
        match self {
            Falloc::Allocate { .. } => keep,
            Falloc::Zero { punch: true, .. } => keep | F::PUNCH_HOLE,
            Falloc::Zero { punch: false, .. } => keep | F::ZERO_RANGE,
        }
    }
}

/// Names given in `staged/` (a create takes a file, a copy-up renames
/// one into place) and how many of them a sync of the directory made
/// durable. `fsync` of a file makes its data durable, and on some file
/// systems not the name a rename gave it; the record that wants the file
/// is made durable by the same `fsync`.
#[derive(Default)]
pub(crate) struct StagedNames {
    given: std::sync::atomic::AtomicU64,
    synced: Mutex<u64>,
}

/// A staged file a seal is about to read. Until the seal has read it, a
/// writer first saves a copy for the seal (copy-on-write), so the seal sees
/// the file as it was when the seal took its view, and nobody waits for the
/// seal unless it is reading that very file.
#[derive(Default)]
pub struct Frozen {
    copy: Option<std::path::PathBuf>,
}

impl OpenFiles {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, OpenEntry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Inodes with an open handle now.
    pub(crate) fn open_inodes(&self) -> Vec<u64> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.count > 0)
            .map(|(&ino, _)| ino)
            .collect()
    }

    pub fn is_open(&self, ino: u64) -> bool {
        self.lock().get(&ino).is_some_and(|e| e.count > 0)
    }

    fn kernel(&self) -> std::sync::MutexGuard<'_, KernelRefs> {
        self.kernel.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kernel is sent an entry for `ino` (call before replying).
    pub fn looked_up(&self, ino: u64) {
        *self.kernel().lookups.entry(ino).or_default() += 1;
    }

    /// The kernel gave back `n` lookups of `ino`; true if it no longer
    /// knows it and `ino` has no links left.
    pub(crate) fn forgotten(&self, ino: u64, n: u64) -> bool {
        let mut k = self.kernel();
        let Some(count) = k.lookups.get_mut(&ino) else {
            return false;
        };
        *count = count.saturating_sub(n);
        if *count > 0 {
            return false;
        }
        k.lookups.remove(&ino);
        k.given.remove(&ino);
        k.unlinked.contains(&ino)
    }

    /// `ino` lost its last link.
    pub(crate) fn unlinked(&self, ino: u64) {
        self.kernel().unlinked.insert(ino);
    }

    /// Whether `ino` has no links, no open handle, and the kernel no
    /// longer knows it.
    pub(crate) fn unused_orphan(&self, ino: u64) -> bool {
        if self.is_open(ino) {
            return false;
        }
        let k = self.kernel();
        k.unlinked.contains(&ino) && !k.lookups.contains_key(&ino)
    }

    /// `ino` is gone from the live tree.
    pub(crate) fn removed(&self, ino: u64) {
        self.kernel().unlinked.remove(&ino);
    }

    /// Drop a cached handle (the staged file was replaced or removed).
    pub fn forget_handle(&self, ino: u64) {
        if let Some(e) = self.lock().get_mut(&ino) {
            e.file = None;
        }
    }

    fn gate(&self, ino: u64) -> std::sync::MutexGuard<'_, ()> {
        self.gates[(ino % GATES as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn shrink(&self, ino: u64) -> &RwLock<()> {
        &self.shrinks[(ino % GATES as u64) as usize]
    }

    pub(super) fn keep(&self, ino: u64) -> &RwLock<()> {
        &self.keeps[(ino % GATES as u64) as usize]
    }

    fn copy_up_lock(&self, ino: u64) -> Arc<Mutex<()>> {
        self.copy_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(ino)
            .or_default()
            .clone()
    }

    /// Give back a `copy_up_lock`; the last one out removes it. Nobody
    /// else holds it when the map's is the only other reference: a clone
    /// is only made under the map's lock.
    fn copy_up_done(&self, ino: u64, lock: Arc<Mutex<()>>) {
        let mut m = self.copy_up.lock().unwrap_or_else(|e| e.into_inner());
        if Arc::strong_count(&lock) == 2 {
            m.remove(&ino);
        }
    }
}

/// Which chunks cover `[offset, offset + size)`: (index, offset in chunk start).
fn chunk_span(chunks: &[ChunkRef], offset: u64, size: u64) -> Vec<(usize, u64)> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    let end = offset + size;
    for (i, c) in chunks.iter().enumerate() {
        let next = pos + c.len as u64;
        if next > offset && pos < end {
            out.push((i, pos));
        }
        if next >= end {
            break;
        }
        pos = next;
    }
    out
}

impl Live {
    /// Freeze the staged content of `ino` for a seal (under the exclusive
    /// barrier, as the seal takes its view).
    pub fn freeze(&self, ino: u64) {
        self.open_files
            .frozen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ino, Arc::new(Mutex::new(Frozen::default())));
    }

    /// Read the frozen content of `ino`: `read` gets the path to read
    /// (a copy, or the staged file itself, which no writer touches until
    /// `read` returns). Unfreezes afterwards.
    pub fn read_frozen<R>(&self, ino: u64, read: impl FnOnce(&std::path::Path) -> R) -> R {
        let entry = self
            .open_files
            .frozen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ino)
            .cloned();
        let Some(entry) = entry else {
            return read(&self.staged_path(ino));
        };
        let state = entry.lock().unwrap_or_else(|e| e.into_inner());
        let path = state.copy.clone().unwrap_or_else(|| self.staged_path(ino));
        let r = read(&path);
        self.open_files
            .frozen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ino);
        if let Some(c) = &state.copy {
            let _ = std::fs::remove_file(c);
        }
        r
    }

    /// Forget every freeze (a seal is over, read or not).
    pub fn unfreeze_all(&self) {
        let all: Vec<_> = self
            .open_files
            .frozen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for (_, entry) in all {
            if let Some(c) = entry.lock().unwrap_or_else(|e| e.into_inner()).copy.take() {
                let _ = std::fs::remove_file(c);
            }
        }
    }

    /// Call before changing or removing `ino`'s staged file: if a seal still
    /// needs its frozen content, save a copy first.
    pub(crate) fn before_change(&self, ino: u64) -> LiveResult<()> {
        let entry = self
            .open_files
            .frozen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ino)
            .cloned();
        let Some(entry) = entry else { return Ok(()) };
        let mut state = entry.lock().unwrap_or_else(|e| e.into_inner());
        let still = self
            .open_files
            .frozen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ino)
            .is_some_and(|e| Arc::ptr_eq(e, &entry));
        if still && state.copy.is_none() {
            let dir = self.dir().join("sealing");
            std::fs::create_dir_all(&dir)?;
            let copy = dir.join(ino.to_string());
            match copy_sparse(&self.staged_path(ino), &copy) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::write(&copy, b"")?,
                Err(e) => {
                    let _ = std::fs::remove_file(&copy);
                    return Err(e.into());
                }
            }
            state.copy = Some(copy);
        }
        Ok(())
    }

    pub fn open_file(&self, ino: u64) {
        self.open_files.lock().entry(ino).or_default().count += 1;
        // Content being given to the kernel lands before this handle can
        // read (a READ would hold the pages the giving waits for) or write
        // (the giving would overwrite what it wrote).
        drop(self.open_files.gate(ino));
    }

    /// `open_file` of a file just created (FUSE CREATE), with its staged
    /// file's handle. The kernel has all of a new file's content: what it
    /// writes, so it is never given.
    pub(super) fn open_new_file(&self, ino: u64, f: File) {
        let mut m = self.open_files.lock();
        let e = m.entry(ino).or_default();
        e.count += 1;
        e.file = Some(Arc::new(f));
        drop(m);
        self.open_files.kernel().given.insert(ino);
    }

    /// Give the whole content of `ino` to `give` (the kernel's page cache,
    /// from an open for reading, before its reply) if that is safe and
    /// worth it: the kernel knows the inode and was not given it since it
    /// looked it up, the caller's handle is its only open one, and it is a
    /// staged file of 1 to `max` bytes. True if given.
    ///
    /// Why that is safe: with no other handle, the kernel has no written
    /// data we have not seen (the writeback cache writes a handle's data
    /// back before its release) and no read in flight whose pages `give`
    /// would wait for. The gate keeps new handles and truncations out
    /// until `give` returns, so what is given is the file's content when it
    /// lands, and `give` never waits for anything that waits for it.
    pub fn give_content(
        &self,
        ino: u64,
        max: u64,
        give: impl FnOnce(&[u8]) -> std::io::Result<()>,
    ) -> bool {
        {
            let k = self.open_files.kernel();
            if !k.lookups.contains_key(&ino) || k.given.contains(&ino) {
                return false;
            }
        }
        let _g = self.open_files.gate(ino);
        if self
            .open_files
            .lock()
            .get(&ino)
            .is_none_or(|e| e.count != 1)
        {
            return false;
        }
        let Ok(Some(len)) = self.tx(|tx| tx.staged_size(ino)) else {
            return false;
        };
        if len == 0 || len > max {
            return false;
        }
        let Ok(f) = self.staged_handle(ino) else {
            return false;
        };
        let mut buf = vec![0u8; len as usize];
        // A short read means the staged file does not match its record:
        // give nothing, the read path reports it.
        if f.read_exact_at(&mut buf, 0).is_err() || give(&buf).is_err() {
            return false;
        }
        self.open_files.kernel().given.insert(ino);
        true
    }

    /// The last close of an unlinked file removes it, if the kernel has
    /// forgotten it too.
    pub fn release_file(&self, ino: u64) -> LiveResult<()> {
        let last = {
            let mut m = self.open_files.lock();
            match m.get_mut(&ino) {
                Some(e) if e.count > 1 => {
                    e.count -= 1;
                    false
                }
                Some(_) => {
                    m.remove(&ino);
                    true
                }
                None => false,
            }
        };
        if last {
            self.drop_if_unused(ino)?;
        }
        Ok(())
    }

    fn staged_handle(&self, ino: u64) -> LiveResult<Arc<File>> {
        if let Some(f) = self
            .open_files
            .lock()
            .get(&ino)
            .and_then(|e| e.file.clone())
        {
            return Ok(f);
        }
        let f = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.staged_path(ino))?,
        );
        if let Some(e) = self.open_files.lock().get_mut(&ino) {
            e.file = Some(f.clone());
        }
        Ok(f)
    }

    /// Make `ino`'s content a staged file, fetching its chunks unless
    /// `truncate` (the caller is about to cut it to zero).
    pub fn ensure_staged(&self, ino: u64, src: &dyn DataSource, truncate: bool) -> LiveResult<()> {
        self.staged_for_change(ino, src, truncate).map(|_| ())
    }

    /// Ready `ino`'s staged file for a change: a copy-up if it has none,
    /// and a copy for a seal that still needs what the change overwrites
    /// (`before_change`). Returns with the barrier's read side and the
    /// file's eviction lock (`OpenFiles::keep`) held, the record saying
    /// "staged": the caller changes the file and its record under them.
    ///
    /// Neither copy is made under the barrier if it can be helped: a
    /// copy-up fetches every chunk from the store (minutes for a big file,
    /// ~20 s of retries with the store down), and std's `RwLock` makes
    /// new readers wait behind a queued writer, so one slow copy under the
    /// read side, with a seal waiting for the write side, stopped every
    /// create, write, unlink and setattr of the mount (found by review).
    /// The copy for a seal is made first and checked again under the
    /// barrier (only a seal frozen in between makes that check copy).
    fn staged_for_change(
        &self,
        ino: u64,
        src: &dyn DataSource,
        truncate: bool,
    ) -> LiveResult<(RwLockReadGuard<'_, ()>, RwLockReadGuard<'_, ()>)> {
        self.before_change(ino)?;
        loop {
            let b = self.barrier.read().unwrap_or_else(|e| e.into_inner());
            let k = self
                .open_files
                .keep(ino)
                .read()
                .unwrap_or_else(|e| e.into_inner());
            // Most changes go to a file staged already: no lock to take.
            if self.tx(|tx| tx.staged_size(ino))?.is_some() {
                self.before_change(ino)?;
                return Ok((b, k));
            }
            drop((k, b));
            let lock = self.open_files.copy_up_lock(ino);
            let r = {
                let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
                self.copy_up(ino, src, truncate)
            };
            self.open_files.copy_up_done(ino, lock);
            if let Some((b, k)) = r? {
                self.before_change(ino)?;
                return Ok((b, k));
            }
            // Staged by someone else meanwhile: look again.
        }
    }

    /// `staged_for_change`'s copy-up, under the file's copy-up lock. The
    /// copy is built and synced with no barrier held; the barrier and the
    /// eviction lock are taken only to check that the record still has
    /// the content copied, rename the copy into place and record it. If
    /// the content changed meanwhile, the copy is made again. `None` if
    /// the file was staged already; otherwise the guards, held.
    #[allow(clippy::type_complexity)]
    fn copy_up(
        &self,
        ino: u64,
        src: &dyn DataSource,
        truncate: bool,
    ) -> LiveResult<Option<(RwLockReadGuard<'_, ()>, RwLockReadGuard<'_, ()>)>> {
        let tmp = self.staged_dir().join(format!("{ino}.tmp"));
        loop {
            let rec = self.inode(ino)?;
            if rec.kind != Kind::File {
                return Err(LiveError::IsDir);
            }
            if rec.is_staged() {
                return Ok(None);
            }
            if let Err(e) = self.copy_chunks(&rec, &tmp, src, truncate) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            let b = self.barrier.read().unwrap_or_else(|e| e.into_inner());
            let k = self
                .open_files
                .keep(ino)
                .read()
                .unwrap_or_else(|e| e.into_inner());
            match self.inode(ino) {
                Ok(now)
                    if !now.is_staged() && now.size == rec.size && now.chunks() == rec.chunks() => {
                }
                other => {
                    let _ = std::fs::remove_file(&tmp);
                    match other? {
                        now if now.is_staged() => return Ok(Some((b, k))),
                        // Another content since we copied: copy again.
                        _ => continue,
                    }
                }
            }
            if let Err(e) = std::fs::rename(&tmp, self.staged_path(ino)) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
            self.staged_name_given();
            if !truncate {
                self.sync_staged_names()?;
            }
            self.open_files.forget_handle(ino);
            self.tx(|tx| {
                let mut r = tx.get(ino)?;
                if let Body::File {
                    staged, chunks: c, ..
                } = &mut r.body
                {
                    *staged = true;
                    if truncate {
                        // The staged file is empty; it no longer matches.
                        *c = None;
                    }
                }
                if truncate {
                    r.size = 0;
                    tx.mark_dirty_file(ino)?;
                    tx.stamp(ino, &mut r)
                } else {
                    // A copy of its chunks until a write changes it:
                    // recovery checks such a copy (a crash of the machine
                    // may leave it short) and eviction may drop it again.
                    if !r.is_dirty_file() {
                        tx.mark_clean_staged(ino)?;
                    }
                    tx.put(ino, &r)
                }
            })?;
            return Ok(Some((b, k)));
        }
    }

    /// Write `rec`'s content (nothing if `truncate`) into `tmp`, synced.
    /// A chunk of zeros is left a hole, and free space is checked for each
    /// chunk written, not for the file's size: a sparse file of 100 GiB
    /// holding 5 GiB of data needs 5 GiB of cache (found by review: the
    /// copy was written densely and refused with ENOSPC).
    fn copy_chunks(
        &self,
        rec: &Inode,
        tmp: &std::path::Path,
        src: &dyn DataSource,
        truncate: bool,
    ) -> LiveResult<()> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(tmp)?;
        if !truncate {
            let mut pos = 0u64;
            for c in rec.chunks().unwrap_or_default() {
                let data = src.chunk(&c.id)?;
                if !is_zero(&data) {
                    crate::space::check(self.dir(), data.len() as u64, crate::space::Use::Data)?;
                    f.write_all_at(&data, pos)?;
                }
                pos += data.len() as u64;
            }
            f.set_len(pos)?;
            // Durable before the name is (see "Copy-up" above).
            f.sync_data()?;
        }
        Ok(())
    }

    pub fn read(
        &self,
        ino: u64,
        offset: u64,
        size: u32,
        src: &dyn DataSource,
    ) -> LiveResult<ReadBuf<'_>> {
        // One look at the record: a staged file needs only its head (its
        // length, as `Err`); anything else, the whole record.
        let rec = self.tx(|tx| match tx.staged_size(ino)? {
            Some(len) => Ok(Err(len)),
            None => tx.get(ino).map(Ok),
        })?;
        match rec {
            Err(len) => read_staged(self, ino, len, offset, size, src),
            Ok(rec) => read_inode(self, ino, &rec, offset, size, src),
        }
    }

    pub fn write(
        &self,
        ino: u64,
        offset: u64,
        data: &[u8],
        times: Times,
        src: &dyn DataSource,
    ) -> LiveResult<usize> {
        let (_b, _k) = self.staged_for_change(ino, src, false)?;
        crate::space::check(self.dir(), data.len() as u64, crate::space::Use::Data)?;
        let f = self.staged_handle(ino)?;
        let kick = {
            let (one, kick) = match self.open_files.lock().get_mut(&ino) {
                Some(e) => (
                    Some(e.writing.clone()),
                    e.unkicked.add(offset, data.len() as u64),
                ),
                None => (None, None),
            };
            let _one = one
                .as_ref()
                .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()));
            if let Err(e) = f.write_all_at(data, offset) {
                // Some bytes may have landed (EIO, ENOSPC, EFBIG partway):
                // the record must still say the file changed (a clean copy
                // counted clean would be evicted back to its old chunks,
                // or never sealed) and how long the staged file now is.
                // Only on this error path: the file's length is asked
                // once.
                let len = f.metadata().map(|m| m.len()).ok();
                self.write_meta(ino, times, |r| {
                    r.size = r.size.max(len.unwrap_or(0));
                    Ok(())
                })?;
                return Err(e.into());
            }
            kick
        };
        if let Some((lo, hi)) = kick {
            self.open_files.kicker.kick(f, lo, hi);
        }
        let end = offset + data.len() as u64;
        self.write_meta(ino, times, |r| {
            r.size = r.size.max(end);
            Ok(())
        })?;
        Ok(data.len())
    }

    /// fallocate(2): done on the staged copy, so a reservation reserves
    /// cache space (ENOSPC now, not at the write) and a zeroed range
    /// becomes a hole there. A reservation that leaves the size as it is
    /// changes nothing a snapshot holds; zeroing or growing marks the
    /// file changed, as a write does.
    pub fn fallocate(
        &self,
        ino: u64,
        offset: u64,
        len: u64,
        how: Falloc,
        times: Times,
        src: &dyn DataSource,
    ) -> LiveResult<()> {
        let end = match offset.checked_add(len) {
            Some(end) if len > 0 && end <= i64::MAX as u64 => end,
            _ => return Err(LiveError::Invalid),
        };
        let (_b, _k) = self.staged_for_change(ino, src, false)?;
        let size = self.inode(ino)?.size;
        let grows = !how.keep_size() && end > size;
        if matches!(how, Falloc::Allocate { .. }) || grows {
            crate::space::check(self.dir(), len, crate::space::Use::Data)?;
        }
        let f = self.staged_handle(ino)?;
        {
            let one = self.open_files.lock().get(&ino).map(|e| e.writing.clone());
            let _one = one
                .as_ref()
                .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()));
            match rustix::fs::fallocate(&*f, how.flags(), offset, len) {
                Ok(()) => {}
                Err(e)
                    if e == rustix::io::Errno::OPNOTSUPP && matches!(how, Falloc::Zero { .. }) =>
                {
                    // The cache's file system cannot zero a range in place
                    // (ext4, xfs, btrfs and tmpfs all can): write zeros.
                    zero_range(&f, offset, end, how.keep_size())?;
                }
                Err(e) => return Err(std::io::Error::from(e).into()),
            }
        }
        if matches!(how, Falloc::Allocate { .. }) && !grows {
            return Ok(());
        }
        self.write_meta(ino, times, |r| {
            if !how.keep_size() {
                r.size = r.size.max(end);
            }
            Ok(())
        })
    }

    /// Record a content change: times, dirty state, and `f`'s edit.
    fn write_meta(
        &self,
        ino: u64,
        times: Times,
        f: impl FnOnce(&mut Inode) -> LiveResult<()>,
    ) -> LiveResult<()> {
        self.tx(|tx| {
            let mut r = tx.get(ino)?;
            f(&mut r)?;
            if times == Times::Now {
                let t = now();
                r.mtime = t;
                r.ctime = t;
            }
            let was_dirty = r.is_dirty_file();
            if let Body::File { chunks, .. } = &mut r.body {
                *chunks = None;
            }
            if !was_dirty {
                tx.mark_dirty_file(ino)?;
            }
            tx.stamp(ino, &mut r)
        })
    }

    /// Set a file's size (truncate or extend with a hole).
    pub fn truncate(&self, ino: u64, size: u64, src: &dyn DataSource) -> LiveResult<()> {
        let (_b, _k) = self.staged_for_change(ino, src, size == 0)?;
        // truncate(2) by path needs no open handle: content being given to
        // the kernel must not cross the cut (it would bring back the old
        // size, which the kernel then keeps).
        let _g = self.open_files.gate(ino);
        let f = self.staged_handle(ino)?;
        {
            // Not while a reply is sent from a mapping of the file.
            let _s = self
                .open_files
                .shrink(ino)
                .write()
                .unwrap_or_else(|e| e.into_inner());
            f.set_len(size)?;
        }
        self.write_meta(ino, Times::Now, |r| {
            r.size = size;
            Ok(())
        })
    }

    /// A name in `staged/` was given (after the rename or create).
    pub(crate) fn staged_name_given(&self) {
        self.names.given.fetch_add(1, Ordering::SeqCst);
    }

    /// Make every name given in `staged/` so far durable, if one is not.
    fn sync_staged_names(&self) -> LiveResult<()> {
        let want = self.names.given.load(Ordering::SeqCst);
        let mut synced = self.names.synced.lock().unwrap_or_else(|e| e.into_inner());
        if *synced >= want {
            return Ok(());
        }
        let given = self.names.given.load(Ordering::SeqCst);
        File::open(self.staged_dir())?.sync_all()?;
        *synced = given;
        Ok(())
    }

    /// Make a file's data and the whole live tree durable.
    pub fn fsync(&self, ino: u64) -> LiveResult<()> {
        {
            let _k = self
                .open_files
                .keep(ino)
                .read()
                .unwrap_or_else(|e| e.into_inner());
            if self.inode(ino)?.is_staged() {
                self.staged_handle(ino)?.sync_data()?;
            }
        }
        self.sync_staged_names()?;
        self.commit(true)
    }

    /// The bytes of a file as `View`/`Inode` describe them, for sealing:
    /// `None` if the content is the chunk list already.
    pub fn staged_file(&self, ino: u64) -> std::path::PathBuf {
        self.staged_path(ino)
    }
}

/// Write zeros over `offset..end` of `f` (only up to its length with
/// `keep_size`), for a file system that cannot zero a range itself.
fn zero_range(f: &File, offset: u64, end: u64, keep_size: bool) -> std::io::Result<()> {
    let len = f.metadata()?.len();
    let stop = if keep_size { end.min(len) } else { end };
    let zeros = vec![0u8; 1 << 20];
    let mut at = offset;
    while at < stop {
        let n = (stop - at).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Whether `b` is all zeros (a hole in the file it came from, as far as
/// anyone reading it can tell). Stops at the first other byte.
fn is_zero(b: &[u8]) -> bool {
    // OR-ing a block at a time vectorizes; stop at the first block with data.
    b.chunks(4096)
        .all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}

/// Copy `from` to a new file `to`, holes as holes: a reflink (`FICLONE`)
/// where the file system has them, else each data range (`SEEK_DATA` /
/// `SEEK_HOLE`) with `copy_file_range`, free space checked per range (so
/// a sparse file needs room for its data only; `std::fs::copy` wrote it
/// densely). `to`'s directory is on the cache disk.
fn copy_sparse(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    let src = File::open(from)?;
    let dst = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(to)?;
    // SAFETY: both descriptors are open files of this process.
    if unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) } == 0 {
        return Ok(());
    }
    let len = src.metadata()?.len();
    let dir = to.parent().unwrap_or(std::path::Path::new("."));
    let seek = |pos: u64, whence| -> std::io::Result<Option<u64>> {
        let at = i64::try_from(pos).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // SAFETY: lseek on an open descriptor.
        let r = unsafe { libc::lseek(src.as_raw_fd(), at, whence) };
        if r >= 0 {
            return Ok(Some(r as u64));
        }
        match std::io::Error::last_os_error() {
            // No data at or after `pos`.
            e if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
            e => Err(e),
        }
    };
    let mut pos = 0;
    while pos < len {
        let start = match seek(pos, libc::SEEK_DATA) {
            Ok(Some(s)) => s,
            Ok(None) => break,
            // No SEEK_DATA here: the whole rest is data.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => pos,
            Err(e) => return Err(e),
        };
        let end = match seek(start, libc::SEEK_HOLE) {
            Ok(Some(e)) => e.min(len),
            Ok(None) => len,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => len,
            Err(e) => return Err(e),
        };
        crate::space::check(dir, end - start, crate::space::Use::Data)?;
        copy_range(&src, &dst, start, end)?;
        pos = end;
    }
    dst.set_len(len)
}

/// Copy `[start, end)` of `src` to the same place in `dst`.
fn copy_range(src: &File, dst: &File, start: u64, end: u64) -> std::io::Result<()> {
    let mut at = start;
    while at < end {
        let mut off_in = at as i64;
        let mut off_out = at as i64;
        let want = (end - at).min(1 << 30) as usize;
        // SAFETY: open descriptors and valid offset pointers.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        if n > 0 {
            at += n as u64;
            continue;
        }
        if n == 0 {
            // The file got shorter meanwhile: nothing more to copy.
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            // No copy_file_range between these files: copy by hand.
            Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP) => {
                let mut buf = vec![0u8; (end - at).min(1 << 20) as usize];
                while at < end {
                    let want = (end - at).min(buf.len() as u64) as usize;
                    let got = src.read_at(&mut buf[..want], at)?;
                    if got == 0 {
                        return Ok(());
                    }
                    dst.write_all_at(&buf[..got], at)?;
                    at += got as u64;
                }
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

/// Read from a record's content (used for the live tree).
pub fn read_inode<'a>(
    live: &'a Live,
    ino: u64,
    rec: &Inode,
    offset: u64,
    size: u32,
    src: &dyn DataSource,
) -> LiveResult<ReadBuf<'a>> {
    if rec.kind == Kind::Dir {
        return Err(LiveError::IsDir);
    }
    if rec.is_staged() {
        return read_staged(live, ino, rec.size, offset, size, src);
    }
    let chunks = rec.chunks().unwrap_or(&[]);
    Ok(read_chunks(chunks, rec.size, offset, size, src)?.into())
}

/// Read `[offset, offset+size)` of `ino`'s staged file, whose record says
/// it is `len` bytes long. A write or truncate changes the file before the
/// record, so while one is under way they may differ: the read goes no
/// further than either. A big read is sent from a mapping of the file
/// (see `mapped`).
fn read_staged<'a>(
    live: &'a Live,
    ino: u64,
    len: u64,
    offset: u64,
    size: u32,
    src: &dyn DataSource,
) -> LiveResult<ReadBuf<'a>> {
    if offset >= len {
        return Ok(Vec::new().into());
    }
    let f = match live.staged_handle(ino) {
        Ok(f) => f,
        // Evicted meanwhile: read what the record says now (a record that
        // still wants the missing file is a damaged cache).
        Err(LiveError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            let rec = live.inode(ino)?;
            if rec.is_staged() {
                return Err(LiveError::Io(e));
            }
            return read_inode(live, ino, &rec, offset, size, src);
        }
        Err(e) => return Err(e),
    };
    let n = (size as u64).min(len - offset) as usize;
    if n >= MAP_MIN {
        let shrink = live
            .open_files
            .shrink(ino)
            .read()
            .unwrap_or_else(|e| e.into_inner());
        // The record may say more than the file holds (a damaged cache):
        // map no further than the file's end.
        let end = f.metadata()?.len();
        if offset >= end {
            return Ok(Vec::new().into());
        }
        let n = n.min((end - offset) as usize);
        match Mapped::map(&f, offset, n) {
            Ok(map) => {
                return Ok(ReadBuf::Mapped {
                    map,
                    _shrink: shrink,
                })
            }
            // No mapping (address space, a file system without mmap):
            // copy as for a small read.
            Err(_) => drop(shrink),
        }
    }
    Ok(read_up_to(&f, offset, n)?.into())
}

/// Up to `n` bytes of `f` from `offset`, fewer only at its end. The
/// buffer is not zeroed first: reads of a big file are 1 MiB each, and
/// filling that with zeros only for `pread` to overwrite them was 4 % of
/// the CPU of a sequential read through the mount.
fn read_up_to(f: &File, offset: u64, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(n);
    while buf.len() < n {
        let at = i64::try_from(offset + buf.len() as u64)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let want = n - buf.len();
        let spare = &mut buf.spare_capacity_mut()[..want];
        // SAFETY: pread writes at most `spare.len()` bytes into `spare`,
        // memory `buf` owns, and returns how many it wrote.
        let r = unsafe { libc::pread(f.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), at) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            break;
        }
        // SAFETY: the `r` bytes after the current length were just
        // written by pread, and stay within the capacity of `n`.
        unsafe { buf.set_len(buf.len() + r as usize) };
    }
    Ok(buf)
}

/// Read `[offset, offset+size)` of content made of `chunks`.
pub fn read_chunks(
    chunks: &[ChunkRef],
    file_size: u64,
    offset: u64,
    size: u32,
    src: &dyn DataSource,
) -> LiveResult<Vec<u8>> {
    if offset >= file_size {
        return Ok(Vec::new());
    }
    let size = (size as u64).min(file_size - offset);
    let span = chunk_span(chunks, offset, size);
    // Read ahead, before this thread fetches the first chunk: the rest of
    // this read's chunks (fetched on the read-ahead threads meanwhile; a
    // chunk one of them is fetching is waited for, never fetched twice)
    // and those of the next `AHEAD` bytes.
    if let Some(&(last, _)) = span.last() {
        let mut ahead = 0;
        let next = chunks[last + 1..].iter().take_while(|c| {
            let go = ahead < AHEAD;
            ahead += c.len as u64;
            go
        });
        let ids: Vec<Id> = span[1..]
            .iter()
            .map(|&(i, _)| chunks[i].id)
            .chain(next.map(|c| c.id))
            .collect();
        if !ids.is_empty() {
            src.prefetch(&ids);
        }
    }
    let mut out = Vec::with_capacity(size as usize);
    for (i, start) in &span {
        let data = src.chunk(&chunks[*i].id)?;
        if data.len() != chunks[*i].len as usize {
            return Err(LiveError::Repo(crate::Error::corrupt(
                format!("data blob {}", chunks[*i].id.short()),
                "its length differs from the tree's",
            )));
        }
        let from = offset.saturating_sub(*start) as usize;
        let to = ((offset + size - start) as usize).min(data.len());
        out.extend_from_slice(&data[from..to]);
    }
    Ok(out)
}

/// How far a read of sealed content reads ahead: the chunks of the next
/// 8 MiB. Reading a 2 GiB file from a local store through an empty cache,
/// 2 chunks ahead (about 2 MiB) gave 552-589 MB/s, 4 chunks 600-653, 8
/// chunks 637-652.
const AHEAD: u64 = 8 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        let c = |len| ChunkRef {
            id: Id::default(),
            len,
        };
        let chunks = [c(10), c(10), c(10)];
        assert_eq!(chunk_span(&chunks, 0, 5), vec![(0, 0)]);
        assert_eq!(chunk_span(&chunks, 5, 10), vec![(0, 0), (1, 10)]);
        assert_eq!(chunk_span(&chunks, 10, 10), vec![(1, 10)]);
        assert_eq!(chunk_span(&chunks, 25, 100), vec![(2, 20)]);
    }

    /// Chunks by id, as the blob cache hands them out.
    struct Chunks(HashMap<Id, Arc<Vec<u8>>>);

    impl DataSource for Chunks {
        fn chunk(&self, id: &Id) -> crate::Result<Arc<Vec<u8>>> {
            self.0
                .get(id)
                .cloned()
                .ok_or_else(|| crate::Error::Invalid("no such chunk".into()))
        }
    }

    #[test]
    fn reads_of_sealed_content_within_and_across_chunks() {
        let data: Vec<u8> = (0..30u32).map(|i| i as u8).collect();
        let mut src = Chunks(HashMap::new());
        let chunks: Vec<ChunkRef> = data
            .chunks(10)
            .enumerate()
            .map(|(i, d)| {
                let id = Id([i as u8 + 1; 32]);
                src.0.insert(id, Arc::new(d.to_vec()));
                ChunkRef { id, len: 10 }
            })
            .collect();
        for (off, size) in [(0, 10), (12, 5), (20, 100), (5, 10), (0, 30), (9, 12)] {
            let r = read_chunks(&chunks, 30, off, size, &src).unwrap();
            let end = (off as usize + size as usize).min(30);
            assert_eq!(&r[..], &data[off as usize..end], "offset {off} size {size}");
        }
        assert!(read_chunks(&chunks, 30, 30, 10, &src).unwrap().is_empty());
        // A chunk of another length than the tree says is refused.
        src.0.insert(chunks[1].id, Arc::new(vec![0; 9]));
        assert!(read_chunks(&chunks, 30, 12, 5, &src).is_err());
    }

    /// Staged files only: any read of sealed content is a failure here.
    struct NoStore;

    impl DataSource for NoStore {
        fn chunk(&self, _id: &Id) -> crate::Result<Arc<Vec<u8>>> {
            Err(crate::Error::Invalid("no store in this test".into()))
        }
    }

    /// A file `name` holding `data`, created, written and closed, as the
    /// kernel knows it after forgetting it and looking it up again (not
    /// right after its creation).
    fn file(live: &Live, name: &[u8], data: &[u8]) -> u64 {
        let n = crate::live::NewNode::test_file();
        let (ino, _) = live.create_node(crate::live::ROOT, name, n, true).unwrap();
        live.open_files.looked_up(ino);
        live.write(ino, 0, data, Times::Now, &NoStore).unwrap();
        live.release_file(ino).unwrap();
        live.open_files.forgotten(ino, 1);
        live.open_files.looked_up(ino);
        ino
    }

    /// What `give_content` hands over, if anything.
    fn given(live: &Live, ino: u64, max: u64) -> Option<Vec<u8>> {
        let mut got = None;
        let ok = live.give_content(ino, max, |d| {
            got = Some(d.to_vec());
            Ok(())
        });
        assert_eq!(ok, got.is_some());
        got
    }

    #[test]
    fn content_is_given_once_per_kernel_lookup_and_only_to_a_sole_reader() {
        let dir = tempfile::tempdir().unwrap();
        let live = Live::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let ino = file(&live, b"f", &data);

        live.open_file(ino);
        assert_eq!(given(&live, ino, 1 << 20), Some(data.clone()));
        // The kernel has it now, until it forgets the inode.
        assert_eq!(given(&live, ino, 1 << 20), None);
        live.release_file(ino).unwrap();
        live.open_files.forgotten(ino, 1);
        live.open_files.looked_up(ino);
        live.open_file(ino);
        assert_eq!(given(&live, ino, 1 << 20), Some(data.clone()));
        live.release_file(ino).unwrap();

        // A second handle (a writer's, or a reader's whose read may be in
        // flight): nothing is given.
        live.open_files.forgotten(ino, 1);
        live.open_files.looked_up(ino);
        live.open_file(ino);
        live.open_file(ino);
        assert_eq!(given(&live, ino, 1 << 20), None);
        live.release_file(ino).unwrap();
        assert_eq!(given(&live, ino, 1 << 20), Some(data.clone()));
        live.release_file(ino).unwrap();

        // Larger than asked, empty, unknown to the kernel, or just created
        // (the kernel wrote it all itself): nothing is given.
        live.open_files.forgotten(ino, 1);
        live.open_files.looked_up(ino);
        live.open_file(ino);
        assert_eq!(given(&live, ino, 4999), None);
        assert_eq!(given(&live, ino, 5000), Some(data));
        live.release_file(ino).unwrap();
        let empty = file(&live, b"e", b"");
        live.open_file(empty);
        assert_eq!(given(&live, empty, 1 << 20), None);
        let unknown = file(&live, b"u", b"x");
        live.open_files.forgotten(unknown, 1);
        live.open_file(unknown);
        assert_eq!(given(&live, unknown, 1 << 20), None);
        let n = crate::live::NewNode::test_file();
        let (new, _) = live.create_node(crate::live::ROOT, b"n", n, true).unwrap();
        live.open_files.looked_up(new);
        live.write(new, 0, b"abc", Times::Now, &NoStore).unwrap();
        // The creating handle closed: this open is the only one.
        live.release_file(new).unwrap();
        live.open_file(new);
        assert_eq!(given(&live, new, 1 << 20), None);
    }

    #[test]
    fn opens_and_truncations_wait_for_content_being_given() {
        let dir = tempfile::tempdir().unwrap();
        let live = Arc::new(Live::open(dir.path()).unwrap());
        let ino = file(&live, b"f", &[1u8; 3000]);
        live.open_file(ino);
        let (tx, rx) = std::sync::mpsc::channel();
        let gave = live.give_content(ino, 1 << 20, |d| {
            // While the kernel copies: a truncation and a second open
            // start, and must not finish before this returns.
            for what in ["truncate", "open"] {
                let (live, tx) = (live.clone(), tx.clone());
                std::thread::spawn(move || {
                    if what == "truncate" {
                        live.truncate(ino, 10, &NoStore).unwrap();
                    } else {
                        live.open_file(ino);
                    }
                    tx.send(what).unwrap();
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            assert!(rx.try_recv().is_err(), "a change passed the gate");
            assert_eq!(d.len(), 3000);
            Ok(())
        });
        assert!(gave);
        let mut done: Vec<_> = (0..2).map(|_| rx.recv().unwrap()).collect();
        done.sort();
        assert_eq!(done, ["open", "truncate"]);
        assert_eq!(live.inode(ino).unwrap().size, 10);
    }

    #[test]
    fn created_files_take_files_made_ahead_and_a_stale_name_is_emptied() {
        use crate::live::spare::DEPTH;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let live = Live::open(dir.path()).unwrap();
        // The first create starts the thread that makes files ahead.
        let first = file(&live, b"first", b"one");
        crate::live::spare::wait_until("no ready files", || live.spares.ready(0).0 as u64 >= DEPTH);
        let made = live.spares.ready(first + 1).1.expect("made ahead");
        let second = file(&live, b"second", b"two");
        assert_eq!(second, first + 1);
        let staged = std::fs::metadata(live.staged_path(second)).unwrap();
        assert_eq!(staged.ino(), made, "the file made ahead was used");
        // A leftover staged file under a later number (a crash rolled the
        // counter back): the thread leaves it, the create empties it.
        let stale = second + DEPTH + 1;
        std::fs::write(live.staged_path(stale), b"stale content").unwrap();
        let mut last = second;
        while last < stale {
            last = file(&live, format!("f{last}").as_bytes(), b"");
        }
        assert_eq!(last, stale);
        for (ino, data) in [(first, &b"one"[..]), (second, b"two"), (stale, b"")] {
            assert_eq!(std::fs::read(live.staged_path(ino)).unwrap(), data);
            assert_eq!(&*live.read(ino, 0, 100, &NoStore).unwrap(), data);
        }
    }

    #[test]
    fn a_truncation_waits_for_replies_sent_from_a_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let live = Arc::new(Live::open(dir.path()).unwrap());
        let data: Vec<u8> = (0..3 * MAP_MIN as u32).map(|i| (i % 253) as u8).collect();
        let ino = file(&live, b"big", &data);
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let off = 4097;
            let r = live.read(ino, off, 2 * MAP_MIN as u32, &NoStore).unwrap();
            assert!(matches!(r, ReadBuf::Mapped { .. }), "a big read is mapped");
            let t = {
                let (live, tx) = (live.clone(), tx.clone());
                std::thread::spawn(move || {
                    live.truncate(ino, 10, &NoStore).unwrap();
                    tx.send(()).unwrap();
                })
            };
            std::thread::sleep(std::time::Duration::from_millis(200));
            assert!(
                rx.try_recv().is_err(),
                "the file was cut under a mapped reply"
            );
            assert_eq!(&*r, &data[off as usize..off as usize + 2 * MAP_MIN]);
            drop(r);
            rx.recv().unwrap();
            t.join().unwrap();
        }
        assert_eq!(
            live.read(ino, 0, MAP_MIN as u32, &NoStore).unwrap().len(),
            10
        );
        assert!(matches!(
            live.read(ino, 0, 100, &NoStore).unwrap(),
            ReadBuf::Owned(_)
        ));
        // A big read that the record allows but the file does not hold (a
        // damaged cache) ends at the file's end.
        let other = file(&live, b"cut", &data);
        std::fs::OpenOptions::new()
            .write(true)
            .open(live.staged_path(other))
            .unwrap()
            .set_len(1000)
            .unwrap();
        let r = live.read(other, 0, MAP_MIN as u32, &NoStore).unwrap();
        assert_eq!(&*r, &data[..1000]);
        assert!(live
            .read(other, 4096, MAP_MIN as u32, &NoStore)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_clean_stop_removes_only_the_files_made_ahead_that_nothing_took() {
        use crate::live::spare::DEPTH;
        let dir = tempfile::tempdir().unwrap();
        let live = Live::open(dir.path()).unwrap();
        let first = file(&live, b"first", b"one");
        crate::live::spare::wait_until("no ready files", || live.spares.ready(0).0 as u64 >= DEPTH);
        // A directory takes the next number; the file made for it stays
        // unused, as do those made for the numbers after it.
        let n = crate::live::NewNode {
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            rdev: 0,
            symlink: None,
        };
        let (sub, _) = live
            .create_node(crate::live::ROOT, b"sub", n, false)
            .unwrap();
        let after = file(&live, b"after", b"");
        assert!(live.staged_path(sub).exists() && live.staged_path(after + 1).exists());
        live.mark_clean_stop().unwrap();
        assert!(!live.staged_path(sub).exists(), "made for the directory");
        assert!(!live.staged_path(after + 1).exists(), "made ahead");
        assert_eq!(std::fs::read(live.staged_path(first)).unwrap(), b"one");
        assert_eq!(std::fs::read(live.staged_path(after)).unwrap(), b"");
    }

    /// `ino` as after a seal that is uploaded: its content the chunk
    /// `Id([7; 32])` (served by the returned source), its staged file a
    /// clean copy if `keep_staged`, else gone.
    fn sealed(live: &Live, name: &[u8], data: &[u8], keep_staged: bool) -> (u64, Chunks) {
        let ino = file(live, name, data);
        let id = Id([7; 32]);
        live.tx(|tx| {
            let mut r = tx.get(ino)?;
            r.body = Body::File {
                staged: keep_staged,
                chunks: Some(vec![ChunkRef {
                    id,
                    len: data.len() as u32,
                }]),
                sealed_gen: 1,
            };
            tx.put(ino, &r)?;
            tx.clear_dirty_file(ino)?;
            if keep_staged {
                tx.mark_clean_staged(ino)?;
            }
            Ok(())
        })
        .unwrap();
        if !keep_staged {
            std::fs::remove_file(live.staged_path(ino)).unwrap();
        }
        live.commit(true).unwrap();
        (ino, Chunks(HashMap::from([(id, Arc::new(data.to_vec()))])))
    }

    #[test]
    fn eviction_waits_for_a_change_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let live = Arc::new(Live::open(dir.path()).unwrap());
        let (ino, _) = sealed(&live, b"f", b"old content", true);
        // What a write holds from its look at the record to its update.
        let under_way = live.open_files.keep(ino).read().unwrap();
        let t = {
            let live = live.clone();
            std::thread::spawn(move || live.evict(ino, 1, &|_| true).unwrap())
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!t.is_finished(), "the eviction did not wait for the write");
        assert!(live.staged_path(ino).exists());
        drop(under_way);
        assert!(t.join().unwrap());
        assert!(!live.staged_path(ino).exists());
    }

    /// Evictions racing truncations and writes of the same clean file, many
    /// times: every change that succeeds is there to read afterwards.
    #[test]
    fn changes_racing_evictions_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let live = Arc::new(Live::open(dir.path()).unwrap());
        let data = vec![5u8; 4096];
        let mut written = data.clone();
        written[10..13].copy_from_slice(b"NEW");
        for i in 0..6000 {
            let (ino, src) = sealed(&live, format!("f{i}").as_bytes(), &data, true);
            let go = Arc::new(std::sync::Barrier::new(2));
            let t = {
                let (live, go) = (live.clone(), go.clone());
                std::thread::spawn(move || {
                    go.wait();
                    live.evict(ino, 1, &|_| true).unwrap()
                })
            };
            go.wait();
            let want = if i % 2 == 0 {
                live.truncate(ino, 100, &src).unwrap();
                &data[..100]
            } else {
                live.open_file(ino);
                live.write(ino, 10, b"NEW", Times::Now, &src).unwrap();
                &written[..]
            };
            t.join().unwrap();
            let got = live.read(ino, 0, 4096, &src).unwrap().to_vec();
            assert_eq!(got, want, "iteration {i}: the change was lost");
            if i % 2 == 1 {
                live.release_file(ino).unwrap();
            }
        }
    }

    #[test]
    fn copy_up_locks_are_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let live = Live::open(dir.path()).unwrap();
        let (ino, src) = sealed(&live, b"f", b"old content", false);
        live.open_file(ino);
        live.write(ino, 0, b"NEW", Times::Now, &src).unwrap();
        live.write(ino, 3, b"!", Times::Now, &src).unwrap();
        assert_eq!(&live.read(ino, 0, 64, &src).unwrap()[..], b"NEW!content");
        assert!(live.open_files.copy_up.lock().unwrap().is_empty());
    }

    #[test]
    fn an_evicted_file_removed_meanwhile_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let live = Live::open(dir.path()).unwrap();
        let (ino, _) = sealed(&live, b"f", b"old content", true);
        live.tx(|tx| tx.remove_inode(ino)).unwrap();
        assert!(!live.evict(ino, 1, &|_| true).unwrap());
    }

    /// A copy with a chunk the index lacks (its pack went missing) is the
    /// last copy: never evicted, and restaged at start.
    #[test]
    fn a_copy_with_an_unindexed_chunk_is_kept_and_restaged() {
        let dir = tempfile::tempdir().unwrap();
        let live = Live::open(dir.path()).unwrap();
        let (ino, _) = sealed(&live, b"f", b"old content", true);
        let (other, _) = sealed(&live, b"g", b"other", true);
        let unindexed = |id: &Id| *id != Id([7; 32]);
        assert_eq!(
            live.evictable(1, 0, &unindexed).unwrap(),
            Vec::<(u64, u64)>::new()
        );
        assert!(!live.evict(ino, 1, &unindexed).unwrap());
        assert!(live.staged_path(ino).exists());
        assert_eq!(live.evictable(1, 0, &|_| true).unwrap().len(), 2);

        assert_eq!(
            live.restage_unindexed(|_| true).unwrap(),
            Vec::<String>::new()
        );
        live.tx(|tx| tx.remove_inode(other)).unwrap();
        assert_eq!(live.restage_unindexed(unindexed).unwrap(), vec!["/f"]);
        let rec = live.inode(ino).unwrap();
        assert!(rec.is_dirty_file());
        assert_eq!(live.tx(|tx| tx.dirty_files()).unwrap(), vec![ino]);
        assert_eq!(live.tx(|tx| tx.clean_staged()).unwrap(), Vec::<u64>::new());
        assert_eq!(&*live.read(ino, 0, 64, &NoStore).unwrap(), b"old content");
    }

    #[test]
    fn a_create_that_cannot_make_its_staged_file_leaves_no_name() {
        let dir = tempfile::tempdir().unwrap();
        let live = Live::open(dir.path()).unwrap();
        // The next number's staged file cannot be made (as on a full disk).
        std::fs::create_dir(live.staged_path(crate::live::FIRST_INO)).unwrap();
        let n = crate::live::NewNode::test_file;
        assert!(live
            .create_node(crate::live::ROOT, b"f", n(), true)
            .is_err());
        assert!(matches!(
            live.lookup(crate::live::ROOT, b"f"),
            Err(LiveError::NotFound)
        ));
        assert_eq!(live.tx(|tx| tx.dirty_files()).unwrap(), Vec::<u64>::new());
        // The name is free for the next try.
        assert!(live.create_node(crate::live::ROOT, b"f", n(), true).is_ok());
    }

    /// A write that fails partway (EFBIG here, from a file size limit;
    /// EIO or ENOSPC alike) changed the staged file: the record says so,
    /// with the staged file's length. In a child process, since the limit
    /// holds for every thread of the process.
    #[test]
    fn a_write_that_fails_partway_is_recorded() {
        const CHILD: &str = "SECRATE_TEST_PARTIAL_WRITE_CHILD";
        if std::env::var_os(CHILD).is_none() {
            let me = std::env::current_exe().unwrap();
            let o = std::process::Command::new(me)
                .args([
                    "--exact",
                    "live::data::tests::a_write_that_fails_partway_is_recorded",
                    "--test-threads=1",
                ])
                .env(CHILD, "1")
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success(),
                "{out}{}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(out.contains("1 passed"), "{out}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let live = Live::open(dir.path()).unwrap();
        let old: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let (ino, src) = sealed(&live, b"f", &old, true);
        let limit = |n: u64| {
            let l = libc::rlimit {
                rlim_cur: n,
                rlim_max: libc::RLIM_INFINITY,
            };
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &l) }, 0);
        };
        unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
        limit(8192);
        // 4192 bytes land, then EFBIG.
        let r = live.write(ino, 4000, &[9u8; 5000], Times::Now, &src);
        limit(libc::RLIM_INFINITY);
        assert!(r.is_err());
        let rec = live.inode(ino).unwrap();
        assert!(rec.is_dirty_file(), "still counted a clean copy");
        assert_eq!(rec.size, 8192);
        assert_eq!(live.tx(|tx| tx.clean_staged()).unwrap(), Vec::<u64>::new());
        assert_eq!(live.tx(|tx| tx.dirty_files()).unwrap(), vec![ino]);
        let mut want = old[..4000].to_vec();
        want.resize(8192, 9);
        assert_eq!(live.read(ino, 0, 10000, &src).unwrap().to_vec(), want);
    }

    /// fallocate on a sealed (clean) file: a reservation that keeps the
    /// size leaves it clean (nothing a snapshot holds changed); a punched
    /// hole, or a reservation that grows it, makes it a change to seal;
    /// a range past what a file may hold is EINVAL, not an overflow.
    #[test]
    fn fallocate_marks_a_file_changed_only_when_its_bytes_change() {
        let dir = tempfile::tempdir().unwrap();
        let live = Live::open(dir.path()).unwrap();
        let old = vec![5u8; 10_000];
        let (ino, src) = sealed(&live, b"f", &old, true);
        let keep = Falloc::Allocate { keep_size: true };
        live.fallocate(ino, 0, 1 << 20, keep, Times::Now, &src)
            .unwrap();
        let grow = Falloc::Allocate { keep_size: false };
        live.fallocate(ino, 0, 4096, grow, Times::Now, &src)
            .unwrap();
        assert!(!live.inode(ino).unwrap().is_dirty_file());
        assert_eq!(live.tx(|tx| tx.dirty_files()).unwrap(), Vec::<u64>::new());
        assert!(matches!(
            live.fallocate(ino, u64::MAX - 1, 2, grow, Times::Now, &src),
            Err(LiveError::Invalid)
        ));
        let punch = Falloc::from_mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE);
        live.fallocate(ino, 100, 200, punch.unwrap(), Times::Now, &src)
            .unwrap();
        let rec = live.inode(ino).unwrap();
        assert!(rec.is_dirty_file());
        assert_eq!(rec.size, 10_000);
        let mut want = old.clone();
        want[100..300].fill(0);
        assert_eq!(live.read(ino, 0, 20_000, &src).unwrap().to_vec(), want);
        live.fallocate(ino, 9_000, 3_000, grow, Times::Now, &src)
            .unwrap();
        want.resize(12_000, 0);
        assert_eq!(live.inode(ino).unwrap().size, 12_000);
        assert_eq!(live.read(ino, 0, 20_000, &src).unwrap().to_vec(), want);
        assert_eq!(Falloc::from_mode(libc::FALLOC_FL_PUNCH_HOLE), None);
        assert_eq!(Falloc::from_mode(libc::FALLOC_FL_COLLAPSE_RANGE), None);
    }

    /// Copies of a sparse file (the copy for a seal, a copy-up) keep its
    /// holes: they take the disk space of its data, not of its size.
    #[test]
    fn copies_of_a_sparse_file_keep_its_holes() {
        use std::os::unix::fs::MetadataExt;
        const SIZE: u64 = 256 << 20;
        let dir = tempfile::tempdir().unwrap();
        let live = Live::open(dir.path()).unwrap();
        let ino = file(&live, b"sparse", b"head");
        live.truncate(ino, SIZE, &NoStore).unwrap();
        live.open_file(ino);
        live.write(ino, SIZE / 2, b"middle", Times::Now, &NoStore)
            .unwrap();
        let used = |p: &std::path::Path| std::fs::metadata(p).unwrap().blocks() * 512;
        assert!(used(&live.staged_path(ino)) < 1 << 20, "no holes here");
        // A seal froze it; a write first copies it for the seal.
        live.freeze(ino);
        live.write(ino, 0, b"HEAD", Times::Now, &NoStore).unwrap();
        live.read_frozen(ino, |p| {
            assert_ne!(p, live.staged_path(ino), "a copy was made");
            assert_eq!(std::fs::metadata(p).unwrap().len(), SIZE);
            assert!(
                used(p) < 1 << 20,
                "the copy for the seal is dense: {}",
                used(p)
            );
            let f = File::open(p).unwrap();
            let mut b = [0u8; 6];
            f.read_exact_at(&mut b[..4], 0).unwrap();
            assert_eq!(&b[..4], b"head");
            f.read_exact_at(&mut b, SIZE / 2).unwrap();
            assert_eq!(&b, b"middle");
        });

        // A copy-up of the same content from chunks of 1 MiB.
        let mut src = Chunks(HashMap::new());
        let mut chunks = Vec::new();
        let staged = std::fs::read(live.staged_path(ino)).unwrap();
        for (i, d) in staged.chunks(1 << 20).enumerate() {
            let id = Id(blake3::hash(d).into());
            src.0.insert(id, Arc::new(d.to_vec()));
            chunks.push(ChunkRef {
                id,
                len: d.len() as u32,
            });
            assert!(i < 1000);
        }
        drop(staged);
        live.release_file(ino).unwrap();
        live.tx(|tx| {
            let mut r = tx.get(ino)?;
            r.body = Body::File {
                staged: false,
                chunks: Some(chunks),
                sealed_gen: 1,
            };
            tx.put(ino, &r)?;
            tx.clear_dirty_file(ino)
        })
        .unwrap();
        std::fs::remove_file(live.staged_path(ino)).unwrap();
        live.ensure_staged(ino, &src, false).unwrap();
        let p = live.staged_path(ino);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), SIZE);
        assert!(used(&p) < 4 << 20, "the copy-up is dense: {}", used(&p));
        let r = live.read(ino, SIZE / 2 - 2, 10, &src).unwrap().to_vec();
        assert_eq!(&r[2..8], b"middle");
    }

    /// A copy-up no write followed (the write failed after it) is a copy
    /// of the chunks that recovery checks: after a crash of the machine it
    /// may be short, and the chunks are the content.
    #[test]
    fn recovery_checks_a_copy_up_no_write_followed() {
        let dir = tempfile::tempdir().unwrap();
        let live = Live::open(dir.path()).unwrap();
        let old: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let (ino, src) = sealed(&live, b"f", &old, false);
        live.ensure_staged(ino, &src, false).unwrap();
        assert_eq!(live.tx(|tx| tx.clean_staged()).unwrap(), vec![ino]);
        live.commit(true).unwrap();
        // The machine went down before the copy reached the disk.
        std::fs::OpenOptions::new()
            .write(true)
            .open(live.staged_path(ino))
            .unwrap()
            .set_len(0)
            .unwrap();
        drop(live);
        let live = Live::open(dir.path()).unwrap();
        assert_eq!(live.recover().unwrap().dropped_clean, 1);
        assert_eq!(live.read(ino, 0, 5000, &src).unwrap().to_vec(), old);
    }
}

//! SEAL: one consistent snapshot of the live tree into the outbox.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::chunk::Chunker;
use crate::crypto::{BlobKind, Id};
use crate::error::{Error, Result};
use crate::flush::outbox::{self, Item, ItemKind};
use crate::flush::{live_err, Flusher, SnapEntry};
use crate::live::import::{put_tree_stats, TreeStats};
use crate::live::{cache_err, Body, Inode, View, HISTORY_NAME, ROOT};
use crate::repo::index::encode_delta;
use crate::repo::lock::{hostname, now_ns};
use crate::repo::pack::{pack_name, PackInfo};
use crate::repo::snapshot::{snapshot_name, Origin, RootMeta, Snapshot};
use crate::repo::tree::{ChunkRef, Content, Entry, Kind, Tree};
use crate::repo::writer::{BlobWriter, PackSink};

/// Whether the live tree holds anything its last snapshot does not: its
/// root has no sealed tree, and is not the empty root a new cache starts
/// with, untouched. That root has no tree either, and sealing it made an
/// empty snapshot at the unmount of a mount where nothing was done.
///
/// Untouched: never imported nor sealed, no entries, and its three times
/// still the one they were created with (a change of its entries sets
/// mtime and ctime, of its attributes ctime, each to now; its atime moves
/// only when set, which sets ctime). An entry made and removed again
/// leaves the times apart: that mount seals an empty snapshot.
pub(crate) fn has_changes(live: &crate::live::Live) -> crate::live::LiveResult<bool> {
    let root = live.inode(ROOT)?;
    if root.dir_tree().is_some() {
        return Ok(false);
    }
    let same_times = root.atime == root.mtime && root.mtime == root.ctime;
    let untouched = same_times
        && live.tx(|tx| {
            Ok(tx.state("base_snapshot")?.is_none()
                && tx.state_u64("seal_gen")? == 0
                && !tx.has_children(ROOT)?)
        })?;
    Ok(!untouched)
}

#[derive(Clone, Debug)]
pub struct SealOutcome {
    pub id: Id,
    pub gen: u64,
    pub snapshot: Snapshot,
}

/// Writes finished packs into the outbox, durably.
struct OutboxSink {
    dir: PathBuf,
    written: Mutex<Vec<PathBuf>>,
}

impl PackSink for OutboxSink {
    fn store_pack(&self, info: &PackInfo, bytes: Vec<u8>) -> Result<()> {
        let path = outbox::file_for(&self.dir, &pack_name(&info.id));
        outbox::write_durable(&path, &bytes).map_err(|e| Error::io(&path, e))?;
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path);
        Ok(())
    }
}

struct Build<'a> {
    view: &'a View,
    writer: &'a BlobWriter,
    chunker: Chunker,
    live: &'a crate::live::Live,
    reader: &'a crate::blobs::BlobReader,
    dirs: Vec<(u64, Id)>,
    files: HashMap<u64, Vec<ChunkRef>>,
    stats: HashMap<Id, TreeStats>,
}

impl Flusher {
    /// Seal a snapshot of the live tree if anything changed since the last
    /// one. Returns what was sealed.
    pub fn seal(&self) -> Result<Option<SealOutcome>> {
        // The tree is built recursively, a frame per directory level.
        let sealed = crate::deep::run(|| self.seal_here())??;
        if sealed.is_some() {
            // Its locks are released: `.history` gained one.
            self.snapshots_changed();
        }
        Ok(sealed)
    }

    fn seal_here(&self) -> Result<Option<SealOutcome>> {
        let _one = self.seal_mutex.lock().unwrap_or_else(|e| e.into_inner());
        let live = &self.live;
        let sealing = live.dir().join("sealing");
        std::fs::create_dir_all(&sealing).map_err(|e| Error::io(&sealing, e))?;

        // Freeze: a view of the metadata; the staged files that changed are
        // frozen (copied only if a writer touches them before we read them).
        let (view, view_epoch) = {
            let _w = live.barrier.write().unwrap_or_else(|e| e.into_inner());
            live.commit(false).map_err(live_err)?;
            if !has_changes(live).map_err(live_err)? {
                return Ok(None);
            }
            let epoch = live.next_epoch().map_err(live_err)?;
            live.commit(false).map_err(live_err)?;
            let view = live.read_view().map_err(live_err)?;
            for ino in view.dirty_files().map_err(live_err)? {
                live.freeze(ino);
            }
            (view, epoch)
        };

        let result = self.build_and_commit(&view, view_epoch);
        live.unfreeze_all();
        let _ = std::fs::remove_dir_all(&sealing);
        let outcome = result?;
        self.snapshots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(SnapEntry {
                id: outcome.id,
                snapshot: outcome.snapshot.clone(),
                uploaded: false,
            });
        self.notify_progress();
        self.kick();
        Ok(Some(outcome))
    }

    fn build_and_commit(&self, view: &View, view_epoch: u64) -> Result<SealOutcome> {
        let live = &self.live;
        let sink = Arc::new(OutboxSink {
            dir: live.dir().to_path_buf(),
            written: Mutex::new(Vec::new()),
        });
        let writer = BlobWriter::new(self.repo.clone(), sink.clone(), 1);
        let mut b = Build {
            view,
            writer: &writer,
            chunker: self.repo.chunker(),
            live,
            reader: &self.reader,
            dirs: Vec::new(),
            files: HashMap::new(),
            stats: HashMap::new(),
        };
        let built = b
            .dir(ROOT)
            .and_then(|root| writer.finish().map(|(packs, _)| (root, packs)));
        let (root_id, packs) = match built {
            Ok(x) => x,
            Err(e) => {
                // Nothing lists these packs: remove them now.
                drop(writer);
                for p in sink
                    .written
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .drain(..)
                {
                    let _ = std::fs::remove_file(p);
                }
                return Err(e);
            }
        };
        let (root_stats, _) = b.stats_of(&root_id)?;
        let root = view.inode(ROOT).map_err(live_err)?;
        let (gen, parent) = live
            .tx(|tx| Ok((tx.state_u64("seal_gen")? + 1, tx.state("last_snapshot")?)))
            .map_err(live_err)?;
        let snapshot = Snapshot {
            time_ns: now_ns(),
            host: hostname(),
            user: std::env::var("USER").unwrap_or_default(),
            source: self.source.clone(),
            origin: Origin::Mount,
            root: root_id,
            root_meta: RootMeta {
                mode: root.mode,
                uid: root.uid,
                gid: root.gid,
                mtime: root.mtime,
                xattrs: root.xattrs.clone(),
            },
            parent: parent.and_then(|p| p.try_into().ok()).map(Id),
            files: root_stats.files,
            dirs: root_stats.dirs,
            bytes: root_stats.bytes,
            added_bytes: packs.iter().map(|p| p.size).sum(),
            tags: Vec::new(),
        };
        let (index_id, index_bytes) = self.repo.seal_index(&packs);
        let (snap_id, snap_bytes) = self.repo.seal_snapshot(&snapshot);
        let index_name = crate::repo::index::index_name(&index_id);
        let snap_name = snapshot_name(&snap_id);
        if !packs.is_empty() {
            let p = outbox::file_for(live.dir(), &index_name);
            outbox::write_durable(&p, &index_bytes).map_err(|e| Error::io(&p, e))?;
        }
        let p = outbox::file_for(live.dir(), &snap_name);
        outbox::write_durable(&p, &snap_bytes).map_err(|e| Error::io(&p, e))?;

        live.tx(|tx| {
            // The outbox first, then what relies on it: the transaction has
            // no rollback, and a failure part way leaves what was written in
            // it for the next commit. A file marked clean must never point
            // at packs no outbox item will upload; packs with nothing that
            // points at them yet only cost space (found and indexed by the
            // next writer).
            {
                let mut t = tx
                    .txn()
                    .open_table(outbox::OUTBOX_PACKS)
                    .map_err(cache_err)?;
                for p in &packs {
                    t.insert(
                        &p.id.0[..],
                        encode_delta(std::slice::from_ref(p)).as_slice(),
                    )
                    .map_err(cache_err)?;
                }
            }
            for p in &packs {
                outbox::push(
                    tx,
                    &Item {
                        kind: ItemKind::Pack,
                        gen,
                        name: pack_name(&p.id),
                        size: p.size,
                    },
                )?;
            }
            if !packs.is_empty() {
                outbox::push(
                    tx,
                    &Item {
                        kind: ItemKind::Index,
                        gen,
                        name: index_name.clone(),
                        size: index_bytes.len() as u64,
                    },
                )?;
            }
            outbox::push(
                tx,
                &Item {
                    kind: ItemKind::Snapshot,
                    gen,
                    name: snap_name.clone(),
                    size: snap_bytes.len() as u64,
                },
            )?;
            {
                let mut t = tx
                    .txn()
                    .open_table(outbox::PENDING_SNAPSHOTS)
                    .map_err(cache_err)?;
                t.insert(&snap_id.0[..], snapshot.encode().as_slice())
                    .map_err(cache_err)?;
            }
            tx.set_state_u64("seal_gen", gen)?;
            tx.set_state("last_snapshot", &snap_id.0)?;
            for (ino, id) in &b.dirs {
                if let Ok(mut r) = tx.get(*ino) {
                    if r.gen <= view_epoch && r.kind == Kind::Dir {
                        r.body = Body::Dir { tree: Some(*id) };
                        tx.put(*ino, &r)?;
                    }
                }
            }
            for (ino, chunks) in &b.files {
                if let Ok(mut r) = tx.get(*ino) {
                    if r.gen <= view_epoch && r.is_dirty_file() {
                        r.body = Body::File {
                            staged: true,
                            chunks: Some(chunks.clone()),
                            sealed_gen: gen,
                        };
                        tx.put(*ino, &r)?;
                        tx.clear_dirty_file(*ino)?;
                        tx.mark_clean_staged(*ino)?;
                    }
                }
            }
            for (id, s) in &b.stats {
                put_tree_stats(tx, id, *s)?;
            }
            Ok(())
        })
        .map_err(live_err)?;
        live.commit(true).map_err(live_err)?;
        self.repo.add_to_index(&packs);
        for p in &packs {
            self.reader
                .add_outbox(p.id, outbox::file_for(live.dir(), &pack_name(&p.id)));
        }
        Ok(SealOutcome {
            id: snap_id,
            gen,
            snapshot,
        })
    }
}

fn entry_of(name: Vec<u8>, rec: &Inode, content: Content) -> Entry {
    let size = match &content {
        Content::Chunks(c) => c.iter().map(|c| c.len as u64).sum(),
        Content::Symlink(t) => t.len() as u64,
        _ => 0,
    };
    Entry {
        name,
        kind: rec.kind,
        mode: rec.mode,
        uid: rec.uid,
        gid: rec.gid,
        mtime: rec.mtime,
        ctime: Some(rec.ctime),
        size,
        dev: rec.origin_dev,
        inode: rec.origin_ino,
        links: rec.nlink,
        rdev: rec.rdev,
        xattrs: rec.xattrs.clone(),
        content,
    }
}

impl Build<'_> {
    /// The tree id of directory `ino` as the view shows it.
    fn dir(&mut self, ino: u64) -> Result<Id> {
        let rec = self.view.inode(ino).map_err(live_err)?;
        if let Some(id) = rec.dir_tree() {
            return Ok(id);
        }
        let mut tree = Tree::default();
        let mut stats = TreeStats::default();
        for (name, child) in self.view.children(ino).map_err(live_err)? {
            if ino == ROOT && name == HISTORY_NAME {
                continue;
            }
            let c = self.view.inode(child).map_err(live_err)?;
            let content = match &c.body {
                Body::Dir { .. } => {
                    let id = self.dir(child)?;
                    let (s, _) = self.stats_of(&id)?;
                    stats.add(s);
                    stats.dirs += 1;
                    Content::Subtree(id)
                }
                Body::File { .. } => {
                    let chunks = self.file(child, &c)?;
                    stats.files += 1;
                    stats.bytes += chunks.iter().map(|c| c.len as u64).sum::<u64>();
                    Content::Chunks(chunks)
                }
                Body::Symlink(t) => Content::Symlink(t.clone()),
                Body::Special => Content::None,
            };
            tree.entries.push(entry_of(name, &c, content));
        }
        let id = self.writer.add(BlobKind::Tree, &tree.encode())?;
        self.stats.insert(id, stats);
        self.dirs.push((ino, id));
        Ok(id)
    }

    fn file(&mut self, ino: u64, rec: &Inode) -> Result<Vec<ChunkRef>> {
        if !rec.is_dirty_file() {
            return Ok(rec.chunks().map(|c| c.to_vec()).unwrap_or_default());
        }
        if let Some(c) = self.files.get(&ino) {
            return Ok(c.clone());
        }
        let (writer, chunker) = (self.writer, &self.chunker);
        let chunks = self
            .live
            .read_frozen(ino, |path| -> Result<Vec<ChunkRef>> {
                let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
                writer
                    .store_stream(chunker, f, &|_| {})
                    .map_err(|e| Error::io(path, e))?
            })?;
        self.files.insert(ino, chunks.clone());
        Ok(chunks)
    }

    /// Statistics of a tree: computed this seal, recorded earlier, or (for
    /// trees from elsewhere) counted by reading them.
    fn stats_of(&mut self, id: &Id) -> Result<(TreeStats, bool)> {
        if let Some(s) = self.stats.get(id) {
            return Ok((*s, true));
        }
        if let Some(s) = self.view.tree_stats(id).map_err(live_err)? {
            return Ok((s, false));
        }
        let tree = self.reader.read_tree(id)?;
        let mut s = TreeStats::default();
        for e in &tree.entries {
            match &e.content {
                Content::Subtree(sub) => {
                    let (x, _) = self.stats_of(sub)?;
                    s.add(x);
                    s.dirs += 1;
                }
                _ if e.kind == Kind::File => {
                    s.files += 1;
                    s.bytes += e.size;
                }
                _ => {}
            }
        }
        self.stats.insert(*id, s);
        Ok((s, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flush::testing::{machine, mkfile};
    use crate::live::import::import_snapshot;

    /// Trees name a hard link by (device, inode). An imported file keeps
    /// the identity the snapshot gave it, the old cache's inode number,
    /// while a fresh cache numbers its own files from the start again: the
    /// identities of files it creates must not meet those (two unrelated
    /// files would become one hard link at the next import or restore).
    #[test]
    fn hard_link_identities_stay_apart_across_caches() {
        let repo = Arc::new(crate::repo::tests::test_init("memory://seal-hardlink"));
        let m1 = machine(&repo);
        mkfile(&m1, b"x", b"x data");
        let y = mkfile(&m1, b"y", b"YYYY this is y");
        m1.live.link(y, ROOT, b"y2").unwrap();
        m1.live.unlink(ROOT, b"x").unwrap();
        let s1 = m1.flusher.seal().unwrap().unwrap();
        m1.flusher.upload_pending().unwrap();

        // A fresh cache: y gets the first number again, z the next one,
        // which is y's number in the snapshot.
        let m2 = machine(&repo);
        import_snapshot(&m2.live, &m2.reader, &s1.id, &s1.snapshot).unwrap();
        let z = mkfile(&m2, b"z", b"ZZZZ this is z, different");
        m2.live.link(z, ROOT, b"z2").unwrap();
        let s2 = m2.flusher.seal().unwrap().unwrap();
        m2.flusher.upload_pending().unwrap();

        let m3 = machine(&repo);
        import_snapshot(&m3.live, &m3.reader, &s2.id, &s2.snapshot).unwrap();
        let (yi, yr) = m3.live.lookup(ROOT, b"y").unwrap();
        let (zi, zr) = m3.live.lookup(ROOT, b"z").unwrap();
        assert_ne!(yi, zi, "z was merged into y");
        assert_eq!((yr.nlink, zr.nlink), (2, 2));
        assert_eq!(m3.live.lookup(ROOT, b"z2").unwrap().0, zi);
        assert_eq!(
            &m3.live.read(zi, 0, 100, &*m3.reader).unwrap()[..],
            b"ZZZZ this is z, different"
        );
    }

    /// A new cache where nothing was done has nothing to seal and says
    /// so in its status (it sealed an empty snapshot at every unmount and
    /// showed "unsealed changes: yes"); a change of the root's attributes,
    /// or an entry made and removed, is sealed; an emptied tree that
    /// followed a snapshot is sealed (empty), as it must be.
    #[test]
    fn an_untouched_new_cache_seals_nothing() {
        use crate::live::{KillSetid, SetAttr};
        let repo = Arc::new(crate::repo::tests::test_init("memory://seal-untouched"));
        let m = machine(&repo);
        assert!(!m.flusher.status().dirty);
        assert!(m.flusher.seal().unwrap().is_none());
        assert!(m.flusher.snapshots().is_empty());

        let chmod = SetAttr {
            mode: Some(0o700),
            ..Default::default()
        };
        m.live.setattr(ROOT, &chmod, &|_| KillSetid::Keep).unwrap();
        assert!(m.flusher.status().dirty);
        let s = m.flusher.seal().unwrap().unwrap();
        assert_eq!(s.snapshot.files, 0);
        assert!(!m.flusher.status().dirty);

        let m = machine(&repo);
        mkfile(&m, b"x", b"x");
        m.live.unlink(ROOT, b"x").unwrap();
        assert!(m.flusher.status().dirty);
        assert!(m.flusher.seal().unwrap().is_some());

        let m = machine(&repo);
        mkfile(&m, b"x", b"x");
        let full = m.flusher.seal().unwrap().unwrap();
        m.flusher.upload_pending().unwrap();
        let m = machine(&repo);
        import_snapshot(&m.live, &m.reader, &full.id, &full.snapshot).unwrap();
        assert!(!m.flusher.status().dirty);
        m.live.unlink(ROOT, b"x").unwrap();
        assert!(m.flusher.status().dirty);
        assert_eq!(m.flusher.seal().unwrap().unwrap().snapshot.files, 0);
    }

    /// The seal writes each record's ctime into its entry, and a fresh
    /// cache's import gives it back (before, entries had no ctime and
    /// import took the mtime for it).
    #[test]
    fn the_ctime_goes_through_a_seal_and_an_import() {
        use crate::live::{KillSetid, SetAttr};
        use crate::repo::tree::Timestamp;
        let repo = Arc::new(crate::repo::tests::test_init("memory://seal-ctime"));
        let m1 = machine(&repo);
        let f = mkfile(&m1, b"f", b"some data");
        let (mtime, ctime) = (
            Timestamp { secs: 10, nanos: 1 },
            Timestamp {
                secs: 2_000_000_000,
                nanos: 7,
            },
        );
        let set = SetAttr {
            mtime: Some(mtime),
            ctime: Some(ctime),
            ..Default::default()
        };
        m1.live.setattr(f, &set, &|_| KillSetid::Keep).unwrap();
        let s1 = m1.flusher.seal().unwrap().unwrap();
        m1.flusher.upload_pending().unwrap();
        let root = repo.read_tree(&s1.snapshot.root).unwrap();
        let e = root.find(b"f").unwrap();
        assert_eq!((e.mtime, e.ctime), (mtime, Some(ctime)));

        let m2 = machine(&repo);
        import_snapshot(&m2.live, &m2.reader, &s1.id, &s1.snapshot).unwrap();
        let (_, r) = m2.live.lookup(ROOT, b"f").unwrap();
        assert_eq!((r.mtime, r.ctime), (mtime, ctime));
    }

    /// A read-only mount's list follows the store: snapshots another
    /// process added show, those forgotten go. (Found by review: a
    /// read-only mount read the list once, at mount.)
    #[test]
    fn following_the_store_adds_and_drops_snapshots() {
        let repo = Arc::new(crate::repo::tests::test_init("memory://follow"));
        let writer = machine(&repo);
        let snap = |data: &[u8]| {
            mkfile(&writer, data, data);
            let s = writer.flusher.seal().unwrap().unwrap();
            writer.flusher.upload_pending().unwrap();
            s.id
        };
        let s1 = snap(b"one");
        let reader = machine(&repo);
        let ids = || -> Vec<Id> { reader.flusher.snapshots().iter().map(|s| s.id).collect() };
        assert_eq!(ids(), [s1]);
        let s2 = snap(b"two");
        assert_eq!(ids(), [s1], "nothing changes the list but following");
        assert!(reader.flusher.follow_store().unwrap().is_empty());
        assert_eq!(ids(), [s1, s2]);
        repo.store()
            .delete(&crate::repo::snapshot::snapshot_name(&s1))
            .unwrap();
        assert!(reader.flusher.follow_store().unwrap().is_empty());
        assert_eq!(ids(), [s2]);
        assert!(reader.flusher.snapshots()[0].uploaded);
    }
}

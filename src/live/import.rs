//! Make a snapshot the live tree, whole (a fresh cache, a clean cache
//! behind the repository, or a serving read-only mount's switch that
//! `diff` cannot make by what changed).
//!
//! Every directory of the snapshot becomes a clean inode that keeps its tree
//! id, so the next seal re-encodes only what changes afterwards. Entries
//! sharing a hard-link identity become one inode. Tree statistics are
//! recorded for every tree so seals can total a snapshot without walking it.

use std::collections::HashMap;

use redb::TableDefinition;

use crate::blobs::BlobReader;
use crate::crypto::Id;
use crate::live::{cache_err, Body, Inode, Live, LiveError, LiveResult, Tx, HISTORY_NAME, ROOT};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Content, Entry, Kind, Links};

/// Tree id → (files, dirs, bytes) below it, for snapshot totals.
pub(crate) const TREE_STATS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tree_stats");

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

impl TreeStats {
    pub fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.files.to_le_bytes());
        b[8..16].copy_from_slice(&self.dirs.to_le_bytes());
        b[16..].copy_from_slice(&self.bytes.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<TreeStats> {
        if b.len() != 24 {
            return None;
        }
        let u = |r: std::ops::Range<usize>| u64::from_le_bytes(b[r].try_into().expect("8 bytes"));
        Some(TreeStats {
            files: u(0..8),
            dirs: u(8..16),
            bytes: u(16..24),
        })
    }

    /// Saturating: trees sharing subtrees may claim more than fits.
    pub fn add(&mut self, o: TreeStats) {
        self.files = self.files.saturating_add(o.files);
        self.dirs = self.dirs.saturating_add(o.dirs);
        self.bytes = self.bytes.saturating_add(o.bytes);
    }
}

pub fn put_tree_stats(tx: &Tx, id: &Id, s: TreeStats) -> LiveResult<()> {
    let mut t = tx.txn().open_table(TREE_STATS).map_err(cache_err)?;
    t.insert(&id.0[..], &s.encode()[..]).map_err(cache_err)?;
    Ok(())
}

pub struct Import {
    pub files: u64,
    pub dirs: u64,
    /// Names the root held before: the kernel may have cached any of them.
    pub old_root_names: Vec<Vec<u8>>,
    /// Files open at the import, kept as unlinked inodes (see
    /// `import_snapshot`).
    pub kept_open: usize,
    pub(crate) kept: Vec<u64>,
    /// Names (directory, name) that came, went or name another inode now:
    /// the kernel may have cached any of them. A whole import: every name
    /// the root held.
    pub changed_names: Vec<(u64, Vec<u8>)>,
    /// Directories that kept their number but not their attributes or
    /// entries (the root always).
    pub changed_dirs: Vec<u64>,
    /// Tree blobs read: the import's work.
    pub trees_read: u64,
    /// Every inode is new (`import_snapshot`), not only changed ones
    /// (`diff::switch_snapshot`).
    pub whole: bool,
}

/// Makes inodes for trees of a snapshot.
pub(crate) struct Walk<'a> {
    reader: &'a BlobReader,
    /// Hard-link identity → the inode made for it and its content.
    links: Links<u64>,
    nlink: HashMap<u64, u32>,
    pub(crate) stats: HashMap<Id, TreeStats>,
    pub(crate) skipped_history: bool,
    pub(crate) trees_read: u64,
}

impl<'a> Walk<'a> {
    pub(crate) fn new(reader: &'a BlobReader) -> Walk<'a> {
        Walk {
            reader,
            links: Links::default(),
            nlink: HashMap::new(),
            stats: HashMap::new(),
            skipped_history: false,
            trees_read: 0,
        }
    }

    /// Whether an entry with more than one link was made.
    pub(crate) fn has_links(&self) -> bool {
        !self.nlink.is_empty()
    }
}

/// Replace the live tree with `snap`. The caller makes sure nothing in
/// the live tree is unsealed.
///
/// All or nothing: a failure halfway leaves the live tree as it was. New
/// inodes get numbers from the live tree's counter, which never goes back,
/// so no number the kernel saw before names another file after. A file
/// open at the import (a read-only mount moving to the newest snapshot
/// while it serves) keeps its record, with no links, as a file removed
/// while open does: its handles go on reading the content they opened,
/// and it goes when the last is closed and the kernel forgets it.
pub fn import_snapshot(
    live: &Live,
    reader: &BlobReader,
    snap_id: &Id,
    snap: &Snapshot,
) -> LiveResult<Import> {
    // The tree is walked recursively, a frame per directory level.
    crate::deep::run(|| import_here(live, reader, snap_id, snap))?
}

pub(crate) fn import_here(
    live: &Live,
    reader: &BlobReader,
    snap_id: &Id,
    snap: &Snapshot,
) -> LiveResult<Import> {
    reader.fetch_tree_packs()?;
    let mut w = Walk::new(reader);
    let staged = live.staged_dir();
    let import = live.tx_all_or_nothing(|tx| {
        let old_root_names: Vec<Vec<u8>> = tx.children(ROOT)?.into_iter().map(|(n, _)| n).collect();
        // Under the transaction's lock: a file opened after this look finds
        // its record gone (`SecrateFs::open` looks again).
        let mut kept = Vec::new();
        for ino in live.open_files.open_inodes() {
            match tx.get(ino) {
                Ok(r) if r.kind != Kind::Dir && ino != ROOT => kept.push((ino, r)),
                _ => {}
            }
        }
        clear(tx)?;
        let mut root = tx.get(ROOT).unwrap_or_else(|_| blank_dir());
        take_root_meta(&mut root, snap);
        let (stats, subdirs) = w.dir(tx, ROOT, &snap.root)?;
        root.nlink = 2 + subdirs;
        root.body = Body::Dir {
            tree: Some(snap.root),
        };
        tx.put(ROOT, &root)?;
        for (ino, n) in &w.nlink {
            let mut r = tx.get(*ino)?;
            r.nlink = *n;
            tx.put(*ino, &r)?;
        }
        for (id, s) in &w.stats {
            put_tree_stats(tx, id, *s)?;
        }
        if w.skipped_history {
            warn_history(snap_id, snap);
        }
        for (ino, mut r) in kept.iter().cloned() {
            r.nlink = 0;
            tx.put(ino, &r)?;
            tx.add_orphan(ino)?;
        }
        tx.set_state("base_snapshot", &snap_id.0)?;
        tx.set_state("last_snapshot", &snap_id.0)?;
        Ok((
            Import {
                files: stats.files,
                dirs: stats.dirs,
                changed_names: old_root_names.iter().map(|n| (ROOT, n.clone())).collect(),
                old_root_names,
                kept_open: kept.len(),
                kept: kept.iter().map(|(ino, _)| *ino).collect(),
                changed_dirs: vec![ROOT],
                trees_read: w.trees_read,
                whole: true,
            },
            kept,
        ))
    });
    let (import, kept) = import?;
    after_kept(live, &import.kept);
    // A kept file's staged copy is its content while it is open.
    let keep: std::collections::HashSet<String> = kept
        .iter()
        .filter(|(_, r)| r.is_staged())
        .map(|(ino, _)| ino.to_string())
        .collect();
    if let Ok(rd) = std::fs::read_dir(&staged) {
        for e in rd.flatten() {
            if !keep.contains(&*e.file_name().to_string_lossy()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(import)
}

/// After an import made `kept` unlinked (open files whose names went).
pub(crate) fn after_kept(live: &Live, kept: &[u64]) {
    for &ino in kept {
        live.open_files.unlinked(ino);
        // Closed meanwhile (its release found it still linked): it goes now.
        // A failure leaves it until the next start; the import stands.
        if let Err(e) = live.drop_if_unused(ino) {
            crate::log!("warning: removing inode {ino}, closed during an import: {e}");
        }
    }
}

pub(crate) fn warn_history(snap_id: &Id, snap: &Snapshot) {
    crate::log!(
        "warning: snapshot {} has a `.history` at its root, which the mount reserves: \
         it is not in the live tree, and the next snapshot made here will not have it \
         (it stays in .history/{}/ until that snapshot is forgotten; copy it out to keep it)",
        snap_id.short(),
        snap.time_rfc3339()
    );
}

/// The live root takes the attributes of snapshot `snap`'s root.
pub(super) fn take_root_meta(root: &mut Inode, snap: &Snapshot) {
    let m = &snap.root_meta;
    (root.mode, root.uid, root.gid) = (m.mode, m.uid, m.gid);
    (root.mtime, root.atime, root.ctime) = (m.mtime, m.mtime, m.mtime);
    root.gen = 0;
    root.xattrs = m.xattrs.clone();
}

fn blank_dir() -> Inode {
    Inode {
        kind: Kind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        size: 0,
        atime: Default::default(),
        mtime: Default::default(),
        ctime: Default::default(),
        nlink: 2,
        rdev: 0,
        origin_dev: 0,
        origin_ino: ROOT,
        parent: ROOT,
        gen: 0,
        xattrs: Vec::new(),
        body: Body::Dir { tree: None },
    }
}

/// Remove every inode but the root, every entry, link, dirty mark and
/// orphan mark.
fn clear(tx: &mut Tx) -> LiveResult<()> {
    tx.clear_inodes()?;
    tx.dirents
        .table_mut()?
        .retain(|_, _| false)
        .map_err(cache_err)?;
    tx.parents
        .table_mut()?
        .retain(|_, _| false)
        .map_err(cache_err)?;
    tx.dirty
        .table_mut()?
        .retain(|_, _| false)
        .map_err(cache_err)?;
    // Their records went with the rest (the import keeps open files again).
    tx.orphans
        .table_mut()?
        .retain(|_, _| false)
        .map_err(cache_err)?;
    Ok(())
}

impl Walk<'_> {
    /// Import the entries of tree `id` under directory `dir`; returns the
    /// tree's statistics and its number of subdirectories.
    fn dir(&mut self, tx: &mut Tx, dir: u64, id: &Id) -> LiveResult<(TreeStats, u32)> {
        let tree = self.reader.read_tree(id)?;
        self.trees_read += 1;
        let mut stats = TreeStats::default();
        let mut subdirs = 0;
        for e in &tree.entries {
            if dir == ROOT && e.name == HISTORY_NAME {
                // The name is reserved at the root of the mount.
                self.skipped_history = true;
                continue;
            }
            let ino = self.entry(tx, dir, e, &mut stats, &mut subdirs)?;
            tx.insert_dirent(dir, &e.name, ino)?;
        }
        self.stats.insert(*id, stats);
        Ok((stats, subdirs))
    }

    /// Make the inode of entry `e` of directory `dir` (and all below it);
    /// its name is the caller's to add.
    pub(crate) fn entry(
        &mut self,
        tx: &mut Tx,
        dir: u64,
        e: &Entry,
        stats: &mut TreeStats,
        subdirs: &mut u32,
    ) -> LiveResult<u64> {
        if e.kind != Kind::Dir && e.links > 1 {
            if let Some(&ino) = self.links.get(e) {
                *self.nlink.entry(ino).or_insert(1) += 1;
                tx.add_parent(ino, dir)?;
                stats.files += (e.kind == Kind::File) as u64;
                return Ok(ino);
            }
        }
        let ino = tx.alloc_ino()?;
        let mut rec = Inode {
            kind: e.kind,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            size: e.size,
            atime: e.mtime,
            mtime: e.mtime,
            ctime: e.ctime.unwrap_or(e.mtime),
            nlink: 1,
            rdev: e.rdev,
            origin_dev: e.dev,
            origin_ino: e.inode,
            parent: dir,
            gen: 0,
            xattrs: e.xattrs.clone(),
            body: Body::Special,
        };
        match &e.content {
            Content::Subtree(sub) => {
                let (s, n) = self.dir(tx, ino, sub)?;
                stats.add(s);
                stats.dirs += 1;
                *subdirs += 1;
                rec.nlink = 2 + n;
                rec.body = Body::Dir { tree: Some(*sub) };
            }
            Content::Chunks(c) => {
                stats.files += 1;
                stats.bytes = stats.bytes.saturating_add(e.size);
                rec.body = Body::File {
                    staged: false,
                    chunks: Some(c.clone()),
                    sealed_gen: 0,
                };
            }
            Content::Symlink(t) => rec.body = Body::Symlink(t.clone()),
            Content::None if e.kind == Kind::File => {
                stats.files += 1;
                rec.body = Body::File {
                    staged: false,
                    chunks: Some(Vec::new()),
                    sealed_gen: 0,
                };
            }
            Content::None if e.kind == Kind::Dir => {
                return Err(LiveError::Cache("directory without a tree".into()))
            }
            Content::None => {}
        }
        if e.kind != Kind::Dir {
            tx.add_parent(ino, dir)?;
            if e.links > 1 {
                // The first name of this content (a later one returned above).
                self.links.add(e, ino);
                self.nlink.insert(ino, 1);
            }
        }
        tx.put(ino, &rec)?;
        Ok(ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_round_trip() {
        let s = TreeStats {
            files: 1,
            dirs: 2,
            bytes: 3,
        };
        assert_eq!(TreeStats::decode(&s.encode()), Some(s));
        assert_eq!(TreeStats::decode(&[0; 3]), None);
    }
}

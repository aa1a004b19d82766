//! Moving the live tree to another snapshot by what changed (a serving
//! read-only mount following the newest snapshot, `fs::switch`).
//!
//! The live tree's and the new snapshot's trees are walked together from
//! the root, and a subtree whose tree id is the same in both is skipped
//! whole: its inodes, their numbers and whatever the kernel caches under
//! them stay. Only what changed is touched. An entry that is a directory
//! on both sides keeps its number and takes its new attributes and
//! entries; any other entry that changed in any way (content, attributes,
//! kind) is a new inode with a number from the counter, which never goes
//! back; what went is removed, except a file open at the switch, which is
//! kept unlinked and reads what it opened until closed (as in
//! `import_snapshot`). So a number never names other content than it did,
//! and the kernel must be told only of the names that changed and of the
//! directories kept whose attributes changed (`Import::changed_names`,
//! `Import::changed_dirs`).
//!
//! What it relies on: on a clean live tree, a directory whose record holds
//! a tree id holds exactly that tree (the live tree's invariant; on a
//! read-only mount nothing but imports changes it). Two cases fall back
//! to a whole import (`import_snapshot`), which is always right: a
//! directory on the way with no tree id, and a hard link among what
//! changed, came or went (its other names may lie in subtrees skipped
//! whole, whose records would keep a wrong link count, or should share
//! its inode).
//!
//! All or nothing, as the whole import: everything runs in one
//! transaction of its own (`Live::tx_all_or_nothing`) that aborts on any
//! failure, a tree that cannot be read included.

use std::collections::{HashMap, HashSet};

use crate::blobs::BlobReader;
use crate::crypto::Id;
use crate::live::import::{self, Import, TreeStats, Walk, TREE_STATS};
use crate::live::{cache_err, Body, Live, LiveError, LiveResult, Tx, HISTORY_NAME, ROOT};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Content, Entry, Kind, Tree};

/// Make `snap` the live tree, changing only what differs from the live
/// tree (see the module's comment). The caller makes sure nothing in the
/// live tree is unsealed. On failure the live tree stays as it was.
pub fn switch_snapshot(
    live: &Live,
    reader: &BlobReader,
    snap_id: &Id,
    snap: &Snapshot,
) -> LiveResult<Import> {
    // Both walks are recursive, a frame per directory level.
    crate::deep::run(|| switch_here(live, reader, snap_id, snap))?
}

fn switch_here(
    live: &Live,
    reader: &BlobReader,
    snap_id: &Id,
    snap: &Snapshot,
) -> LiveResult<Import> {
    reader.fetch_tree_packs()?;
    let mut whole = None;
    let done = live.tx_all_or_nothing(|tx| {
        // Under the transaction's lock: a file opened after this look finds
        // its record gone if it was removed (`SecrateFs::open` looks again).
        let open = live.open_files.open_inodes().into_iter().collect();
        let mut d = Diff::new(reader, open);
        let r = d.root(tx, snap_id, snap);
        if r.is_err() {
            whole = d.whole.take();
        }
        r.map(|i| (i, d.removed_files))
    });
    let (import, removed_files) = match done {
        Ok(x) => x,
        Err(e) => {
            let Some(why) = whole else { return Err(e) };
            // Nothing of the diff stays: its transaction aborted.
            crate::log!(
                "the live tree moves to snapshot {} by a whole import: {why}",
                snap_id.short()
            );
            return import::import_here(live, reader, snap_id, snap);
        }
    };
    import::after_kept(live, &import.kept);
    for ino in removed_files {
        // Its staged copy, if any, goes with the next durable commit.
        live.discard_staged(ino);
    }
    Ok(import)
}

/// One switch's walk of the old and new trees together.
struct Diff<'r> {
    reader: &'r BlobReader,
    /// Makes the inodes of entries that came (and reads their trees).
    walk: Walk<'r>,
    /// Files open at the switch.
    open: HashSet<u64>,
    /// Open files removed from the tree, kept unlinked.
    kept: Vec<u64>,
    /// Files removed: their staged copies go.
    removed_files: Vec<u64>,
    changed_names: Vec<(u64, Vec<u8>)>,
    changed_dirs: Vec<u64>,
    /// Statistics of trees this switch found without stats recorded.
    stats: HashMap<Id, TreeStats>,
    /// Trees read by the walk together (`walk` counts its own).
    trees_read: u64,
    /// Why the switch must be a whole import, once found.
    whole: Option<String>,
}

impl<'r> Diff<'r> {
    fn new(reader: &'r BlobReader, open: HashSet<u64>) -> Diff<'r> {
        Diff {
            reader,
            walk: Walk::new(reader),
            open,
            kept: Vec::new(),
            removed_files: Vec::new(),
            changed_names: Vec::new(),
            changed_dirs: Vec::new(),
            stats: HashMap::new(),
            trees_read: 0,
            whole: None,
        }
    }

    /// The error that makes the switch a whole import, for `why`.
    fn whole(&mut self, why: String) -> LiveError {
        let e = LiveError::Cache(format!("the switch needs a whole import: {why}"));
        self.whole = Some(why);
        e
    }

    fn read(&mut self, id: &Id) -> LiveResult<std::sync::Arc<Tree>> {
        self.trees_read += 1;
        Ok(self.reader.read_tree(id)?)
    }

    fn root(&mut self, tx: &mut Tx, snap_id: &Id, snap: &Snapshot) -> LiveResult<Import> {
        let old_root_names = tx.children(ROOT)?.into_iter().map(|(n, _)| n).collect();
        let mut root = tx.get(ROOT)?;
        let Some(old) = root.dir_tree() else {
            return Err(self.whole("the live tree's root has no tree id".into()));
        };
        let stats = if old == snap.root {
            self.stats_of(tx, &snap.root)?
        } else {
            let (stats, subdirs) = self.dir(tx, ROOT, &old, &snap.root)?;
            root.nlink = 2 + subdirs;
            stats
        };
        import::take_root_meta(&mut root, snap);
        root.body = Body::Dir {
            tree: Some(snap.root),
        };
        tx.put(ROOT, &root)?;
        self.changed_dirs.push(ROOT);
        for (id, s) in self.stats.iter().chain(self.walk.stats.iter()) {
            import::put_tree_stats(tx, id, *s)?;
        }
        if self.walk.skipped_history {
            import::warn_history(snap_id, snap);
        }
        tx.set_state("base_snapshot", &snap_id.0)?;
        tx.set_state("last_snapshot", &snap_id.0)?;
        Ok(Import {
            files: stats.files,
            dirs: stats.dirs,
            old_root_names,
            kept_open: self.kept.len(),
            kept: std::mem::take(&mut self.kept),
            changed_names: std::mem::take(&mut self.changed_names),
            changed_dirs: std::mem::take(&mut self.changed_dirs),
            trees_read: self.trees_read + self.walk.trees_read,
            whole: false,
        })
    }

    /// Move directory `ino` from tree `old` to tree `new` (they differ);
    /// returns the new tree's statistics and number of subdirectories.
    fn dir(&mut self, tx: &mut Tx, ino: u64, old: &Id, new: &Id) -> LiveResult<(TreeStats, u32)> {
        let (o, n) = (self.read(old)?, self.read(new)?);
        // `.history` at the root is reserved by the mount: never in the
        // live tree, on either side.
        let shown = |e: &&Entry| ino != ROOT || e.name != HISTORY_NAME;
        if ino == ROOT && !n.entries.iter().all(|e| shown(&e)) {
            self.walk.skipped_history = true;
        }
        let mut olds = o.entries.iter().filter(shown).peekable();
        let mut news = n.entries.iter().filter(shown).peekable();
        let mut stats = TreeStats::default();
        let mut subdirs = 0;
        loop {
            // Both lists are sorted by name (`Tree::decode` checks).
            let order = match (olds.peek(), news.peek()) {
                (None, None) => break,
                (Some(a), Some(b)) => a.name.cmp(&b.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
            };
            let (a, b) = match order {
                std::cmp::Ordering::Less => (olds.next(), None),
                std::cmp::Ordering::Greater => (None, news.next()),
                std::cmp::Ordering::Equal => (olds.next(), news.next()),
            };
            self.entry(tx, ino, a, b, &mut stats, &mut subdirs)?;
        }
        self.stats.insert(*new, stats);
        Ok((stats, subdirs))
    }

    /// One name of directory `dir`: as it was (`old`) and as it is (`new`).
    fn entry(
        &mut self,
        tx: &mut Tx,
        dir: u64,
        old: Option<&Entry>,
        new: Option<&Entry>,
        stats: &mut TreeStats,
        subdirs: &mut u32,
    ) -> LiveResult<()> {
        match (old, new) {
            (Some(o), Some(n)) if o == n => self.unchanged(tx, n, stats, subdirs),
            (Some(o), Some(n)) if o.kind == Kind::Dir && n.kind == Kind::Dir => {
                self.kept_dir(tx, dir, o, n, stats, subdirs)
            }
            _ => {
                let name = match (old, new) {
                    (Some(e), _) | (None, Some(e)) => e.name.clone(),
                    (None, None) => return Ok(()),
                };
                if let Some(o) = old {
                    let child = self.child(tx, dir, &o.name)?;
                    tx.remove_dirent(dir, &o.name)?;
                    self.remove(tx, dir, child)?;
                }
                if let Some(n) = new {
                    self.add(tx, dir, n, stats, subdirs)?;
                }
                self.changed_names.push((dir, name));
                Ok(())
            }
        }
    }

    /// An entry the same on both sides: its inode (and all below it) stays.
    fn unchanged(
        &mut self,
        tx: &Tx,
        e: &Entry,
        stats: &mut TreeStats,
        subdirs: &mut u32,
    ) -> LiveResult<()> {
        match &e.content {
            Content::Subtree(sub) => {
                stats.add(self.stats_of(tx, sub)?);
                stats.dirs += 1;
                *subdirs += 1;
            }
            _ if e.kind == Kind::File => {
                stats.files += 1;
                stats.bytes = stats.bytes.saturating_add(e.size);
            }
            _ => {}
        }
        Ok(())
    }

    /// A directory on both sides that changed: it keeps its inode (and
    /// number), takes the new attributes, and its entries are moved if its
    /// tree changed.
    fn kept_dir(
        &mut self,
        tx: &mut Tx,
        dir: u64,
        o: &Entry,
        n: &Entry,
        stats: &mut TreeStats,
        subdirs: &mut u32,
    ) -> LiveResult<()> {
        let (Content::Subtree(old), Content::Subtree(new)) = (&o.content, &n.content) else {
            return Err(LiveError::Cache("directory without a tree".into()));
        };
        let child = self.child(tx, dir, &o.name)?;
        let mut rec = tx.get(child)?;
        if rec.kind != Kind::Dir || rec.dir_tree() != Some(*old) {
            return Err(self.whole(format!(
                "directory inode {child} does not hold tree {}",
                old.short()
            )));
        }
        let s = if old == new {
            self.stats_of(tx, new)?
        } else {
            let (s, sub) = self.dir(tx, child, old, new)?;
            rec.nlink = 2 + sub;
            s
        };
        stats.add(s);
        stats.dirs += 1;
        *subdirs += 1;
        rec.mode = n.mode;
        rec.uid = n.uid;
        rec.gid = n.gid;
        rec.mtime = n.mtime;
        rec.atime = n.mtime;
        rec.ctime = n.ctime.unwrap_or(n.mtime);
        rec.rdev = n.rdev;
        rec.origin_dev = n.dev;
        rec.origin_ino = n.inode;
        rec.gen = 0;
        rec.xattrs = n.xattrs.clone();
        rec.body = Body::Dir { tree: Some(*new) };
        tx.put(child, &rec)?;
        self.changed_dirs.push(child);
        Ok(())
    }

    /// The inode `dir` holds under `name`, which its tree says it has.
    fn child(&mut self, tx: &Tx, dir: u64, name: &[u8]) -> LiveResult<u64> {
        match tx.lookup(dir, name)? {
            Some(ino) => Ok(ino),
            None => Err(self.whole(format!(
                "directory inode {dir} lacks an entry of its tree ({})",
                String::from_utf8_lossy(name)
            ))),
        }
    }

    /// Remove `ino`, which lost its name in `dir`, and everything below it.
    fn remove(&mut self, tx: &mut Tx, dir: u64, ino: u64) -> LiveResult<()> {
        let mut rec = tx.get(ino)?;
        if rec.kind == Kind::Dir {
            for (name, child) in tx.children(ino)? {
                tx.remove_dirent(ino, &name)?;
                self.remove(tx, ino, child)?;
            }
            return tx.remove_inode(ino);
        }
        if rec.nlink > 1 {
            return Err(self.whole(format!("hard-linked inode {ino} lost a name")));
        }
        tx.remove_parent(ino, dir)?;
        if self.open.contains(&ino) {
            rec.nlink = 0;
            tx.put(ino, &rec)?;
            tx.add_orphan(ino)?;
            self.kept.push(ino);
        } else {
            tx.remove_inode(ino)?;
            if rec.kind == Kind::File {
                self.removed_files.push(ino);
            }
        }
        Ok(())
    }

    /// Make the inode of an entry that came (and of all below it).
    fn add(
        &mut self,
        tx: &mut Tx,
        dir: u64,
        e: &Entry,
        stats: &mut TreeStats,
        subdirs: &mut u32,
    ) -> LiveResult<()> {
        if e.kind != Kind::Dir && e.links > 1 {
            return Err(self.whole(format!(
                "a hard link came ({})",
                String::from_utf8_lossy(&e.name)
            )));
        }
        let ino = self.walk.entry(tx, dir, e, stats, subdirs)?;
        if self.walk.has_links() {
            return Err(self.whole(format!(
                "a hard link came below {}",
                String::from_utf8_lossy(&e.name)
            )));
        }
        tx.insert_dirent(dir, &e.name, ino)
    }

    /// Statistics of tree `id`: as recorded when it was imported or sealed
    /// here, or counted now (as the seal counts them: every file name its
    /// size).
    fn stats_of(&mut self, tx: &Tx, id: &Id) -> LiveResult<TreeStats> {
        if let Some(s) = self.stats.get(id).or_else(|| self.walk.stats.get(id)) {
            return Ok(*s);
        }
        let t = tx.txn().open_table(TREE_STATS).map_err(cache_err)?;
        let recorded = redb::ReadableTable::get(&t, &id.0[..])
            .map_err(cache_err)?
            .and_then(|v| TreeStats::decode(v.value()));
        drop(t);
        if let Some(s) = recorded {
            return Ok(s);
        }
        let tree = self.read(id)?;
        let mut s = TreeStats::default();
        for e in &tree.entries {
            let mut no_subdirs = 0;
            self.unchanged(tx, e, &mut s, &mut no_subdirs)?;
        }
        self.stats.insert(*id, s);
        Ok(s)
    }
}

//! `.history/`: every snapshot as a read-only tree.
//!
//! One directory per snapshot named by its UTC time (a `-N` suffix when two
//! share a second; a name stays with its snapshot, see `SnapshotNames`),
//! and `latest`, a symlink to the newest. Snapshots sealed but not yet
//! uploaded are listed too. Inode numbers are synthesized when a node is
//! first handed out, from 2^62 up, and never reused; a node lives while the
//! kernel holds lookups on it or an open listing shows it, and then goes
//! (see `history/nodes.rs`), so walking many snapshots does not grow the
//! daemon without bound. A number the kernel forgot is ENOENT.
//! When the snapshot list changes the kernel is told what it may have
//! cached that is no longer so (`snapshots_changed`): a forgotten
//! snapshot's name is ENOENT at once, not when its entry times out.
//! Trees are read on demand through the blob reader: opening a file in an
//! old snapshot reads the trees on its path and the chunks it reads.

mod nodes;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex, RwLock};

use fuser::{INodeNo, Notifier};

use self::nodes::{Hold, Nodes};

use crate::blobs::BlobReader;
use crate::crypto::Id;
use crate::flush::{Flusher, SnapEntry};
use crate::live::data::read_chunks;
use crate::live::{LiveError, LiveResult};
use crate::repo::snapshot::RootMeta;
use crate::repo::tree::{Content, Entry, Kind, Timestamp};

pub const HISTORY_INO: u64 = 2;
pub const FIRST: u64 = 1 << 62;
pub const LATEST: &[u8] = b"latest";

#[derive(Clone, Debug)]
pub enum Node {
    /// `.history/latest`, pointing at the newest snapshot's name.
    Latest,
    /// A snapshot's root directory.
    Root { tree: Id, meta: RootMeta },
    /// Anything inside a snapshot.
    Entry(Arc<Entry>),
}

/// (inode, kind, name) of an entry of a history directory.
pub type DirEntry = (u64, Kind, Vec<u8>);

/// What `getattr` needs of a history node.
pub struct HistAttr {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: Timestamp,
    /// The entry's ctime; its mtime where none is known (a version 1 tree,
    /// the snapshot root, the synthetic nodes).
    pub ctime: Timestamp,
    pub nlink: u32,
    pub rdev: u64,
}

pub struct History {
    flusher: Arc<Flusher>,
    reader: Arc<BlobReader>,
    /// The nodes the kernel or an open listing may name (see `nodes.rs`).
    nodes: RwLock<Nodes>,
    names: Mutex<SnapshotNames>,
    /// Held (shared) by a request whose reply hands the kernel children of
    /// `.history`, until the reply is sent: `snapshots_changed` waits for
    /// those in flight before it invalidates, so that none made from the
    /// old list lands after (the kernel would cache it for a minute).
    answering: super::gate::ReplyGate,
}

/// Pins an open directory's listing holds on the nodes it shows; they go
/// with it.
pub struct Pins {
    history: Arc<History>,
    inos: Vec<u64>,
}

impl Drop for Pins {
    fn drop(&mut self) {
        let mut nodes = self.history.write_nodes();
        for &ino in &self.inos {
            nodes.release(ino, Hold::Pin, 1);
        }
    }
}

/// Directory names of snapshots, given once and kept for the life of the
/// mount: the UTC time of the snapshot, with `-N` when another snapshot of
/// the same second had the name. A name never passes to another snapshot
/// (when retention forgets the first of two snapshots of one second, the
/// second keeps `T-1`): the kernel keeps a name's inode and a file's pages
/// by name, and a name that changed its snapshot would show the forgotten
/// snapshot's cached bytes under the name of a kept one. A forgotten
/// snapshot's name is let go (`release`) once the kernel was told and
/// holds no node by it, so that a mount that sees snapshot after snapshot
/// come and go keeps only the names of those listed: a later snapshot of
/// that very second may then get it, as a new node with a new number.
#[derive(Default)]
pub struct SnapshotNames {
    by_id: HashMap<Id, Vec<u8>>,
    taken: HashSet<Vec<u8>>,
    /// The newest snapshot when the list was last looked at (`update`).
    newest: Option<Id>,
    /// Names of forgotten snapshots not yet released.
    forgotten: Vec<Vec<u8>>,
}

impl SnapshotNames {
    /// Names for `snaps` (oldest first), in their order.
    pub fn name<'a>(&mut self, snaps: &'a [SnapEntry]) -> Vec<(Vec<u8>, &'a SnapEntry)> {
        snaps
            .iter()
            .map(|s| {
                if let Some(n) = self.by_id.get(&s.id) {
                    return (n.clone(), s);
                }
                let base = s.snapshot.time_rfc3339();
                let mut name = base.clone().into_bytes();
                let mut k = 0u64;
                while self.taken.contains(&name) {
                    k += 1;
                    name = format!("{base}-{k}").into_bytes();
                }
                self.taken.insert(name.clone());
                self.by_id.insert(s.id, name.clone());
                (name, s)
            })
            .collect()
    }

    /// The list is now `snaps`: the names of the snapshots that left it
    /// (kept as taken until `release`), and whether the newest is another
    /// than at the last update.
    pub fn update(&mut self, snaps: &[SnapEntry]) -> (Vec<Vec<u8>>, bool) {
        let listed: HashSet<Id> = snaps.iter().map(|s| s.id).collect();
        let mut gone = Vec::new();
        self.by_id.retain(|id, name| {
            let keep = listed.contains(id);
            if !keep {
                gone.push(name.clone());
            }
            keep
        });
        self.forgotten.extend(gone.iter().cloned());
        let newest = snaps.last().map(|s| s.id);
        let moved = newest != self.newest;
        self.newest = newest;
        (gone, moved)
    }

    /// Whether `name` was given to a snapshot not seen forgotten.
    fn listed(&self, name: &[u8]) -> bool {
        self.taken.contains(name) && !self.forgotten.iter().any(|f| f == name)
    }

    /// Let go of the forgotten snapshots' names `free` says may be given
    /// again; the others wait for a later update.
    pub fn release(&mut self, free: impl Fn(&[u8]) -> bool) {
        let taken = &mut self.taken;
        self.forgotten.retain(|name| {
            if free(name) {
                taken.remove(name);
                false
            } else {
                true
            }
        });
    }
}

impl History {
    pub fn new(flusher: Arc<Flusher>, reader: Arc<BlobReader>) -> History {
        History {
            flusher,
            reader,
            nodes: RwLock::new(Nodes::default()),
            names: Mutex::new(SnapshotNames::default()),
            answering: Default::default(),
        }
    }

    /// `new`, with the nodes alive kept by the mount's prune
    /// (`Flusher::keep_for_prune`): a file open in a snapshot that
    /// retention forgot, or a directory a process stands in, reads on
    /// until the kernel lets go of it.
    pub fn attach(flusher: Arc<Flusher>, reader: Arc<BlobReader>) -> Arc<History> {
        let history = Arc::new(History::new(flusher.clone(), reader));
        // Weak: the flusher keeps the hook, and the view keeps the flusher.
        let view = Arc::downgrade(&history);
        flusher.keep_for_prune(move || view.upgrade().map(|h| h.references()).unwrap_or_default());
        history
    }

    /// What the nodes alive stand on in the store: the trees of snapshot
    /// roots and directories (with all they reach) and the chunks of
    /// files. The kernel may still read them although their snapshot is
    /// gone from the list.
    pub fn references(&self) -> (Vec<Id>, HashSet<Id>) {
        let (mut trees, mut blobs) = (Vec::new(), HashSet::new());
        for node in self.read_nodes().all() {
            match node {
                Node::Root { tree, .. } => trees.push(*tree),
                Node::Entry(e) => match &e.content {
                    Content::Subtree(id) => trees.push(*id),
                    Content::Chunks(c) => {
                        blobs.extend(c.iter().map(|c| c.id).filter(|id| !id.is_lost()))
                    }
                    _ => {}
                },
                Node::Latest => {}
            }
        }
        (trees, blobs)
    }

    pub fn is_history(ino: u64) -> bool {
        ino == HISTORY_INO || ino >= FIRST
    }

    fn read_nodes(&self) -> std::sync::RwLockReadGuard<'_, Nodes> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_nodes(&self) -> std::sync::RwLockWriteGuard<'_, Nodes> {
        self.nodes.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The node `ino` names; NotFound once it was dropped.
    fn node(&self, ino: u64) -> LiveResult<Node> {
        self.read_nodes()
            .get(ino)
            .cloned()
            .ok_or(LiveError::NotFound)
    }

    /// The directory `ino` was first found in (the first name of a hard
    /// link); None for `.history`, what it holds (the snapshots), and
    /// nodes that are gone.
    pub fn parent(&self, ino: u64) -> Option<u64> {
        let parent = self.read_nodes().parent(ino)?;
        (parent != HISTORY_INO).then_some(parent)
    }

    /// History nodes alive (for `secrate status`).
    pub fn live_nodes(&self) -> usize {
        self.read_nodes().len()
    }

    /// The kernel forgets `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.write_nodes().release(ino, Hold::Lookup, n);
    }

    /// The kernel is sent `ino` once more (a READDIRPLUS entry of a listing
    /// that pins it). False if it is gone: it must not be sent.
    pub fn looked_up(&self, ino: u64) -> bool {
        self.write_nodes().hold(ino, Hold::Lookup)
    }

    /// The first `n` chunks of a file in a snapshot (none for anything
    /// else).
    pub fn first_chunks(&self, ino: u64, n: usize) -> Vec<Id> {
        match self.node(ino) {
            Ok(Node::Entry(e)) if e.kind == Kind::File => {
                e.chunks().iter().take(n).map(|c| c.id).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The snapshot list changed (the flusher calls this on the thread
    /// that changed it, with none of its locks held). Tell the kernel what
    /// it may hold that is no longer so: the entries of forgotten
    /// snapshots (else their names resolve until the entry times out, a
    /// minute), the attributes of `latest` if the newest changed, and of
    /// `.history`. No lock is held while telling: the kernel may wait for
    /// requests in flight on `.history`, and they take these locks.
    pub fn snapshots_changed(&self, notifier: &Notifier) {
        let snaps = self.flusher.snapshots();
        let (gone, moved) = self
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update(&snaps);
        // Replies made from the old list are sent before the kernel is
        // told (it orders them: it invalidates under the directory's lock,
        // which a lookup or listing holds until its reply is in). Later
        // ones see the new list.
        self.answering.drain();
        for name in &gone {
            // Not cached (never looked up, or evicted): nothing to do.
            let _ = notifier.inval_entry(INodeNo(HISTORY_INO), OsStr::from_bytes(name));
        }
        let latest = self.read_nodes().known(HISTORY_INO, LATEST);
        if let (true, Some(ino)) = (moved, latest) {
            let _ = notifier.inval_inode(INodeNo(ino), 0, 0);
        }
        let _ = notifier.inval_inode(INodeNo(HISTORY_INO), 0, 0);
        // A name the kernel was told of and holds no node by may be given
        // again (its node, if it comes back, is a new one).
        let nodes = self.read_nodes();
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(|name| nodes.known(HISTORY_INO, name).is_none());
    }

    /// Held while answering a request that hands the kernel children of
    /// `.history` (see `answering`), until its reply is sent.
    pub fn answering(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.answering.answering()
    }

    /// Whether `name` in `.history` still names a snapshot (or `latest`)
    /// as far as the kernel was told: a listing made before a snapshot
    /// was forgotten must not hand its name to the kernel after.
    pub fn listed(&self, name: &[u8]) -> bool {
        name == LATEST
            || self
                .names
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .listed(name)
    }

    fn snapshot_names<'a>(&self, snaps: &'a [SnapEntry]) -> Vec<(Vec<u8>, &'a SnapEntry)> {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .name(snaps)
    }

    fn latest_name(&self) -> Option<Vec<u8>> {
        let snaps = self.flusher.snapshots();
        self.snapshot_names(&snaps).pop().map(|(n, _)| n)
    }

    /// Children of a history directory: (name, node).
    fn list(&self, ino: u64) -> LiveResult<Vec<(Vec<u8>, Node)>> {
        if ino == HISTORY_INO {
            let snaps = self.flusher.snapshots();
            let mut out: Vec<(Vec<u8>, Node)> = self
                .snapshot_names(&snaps)
                .into_iter()
                .map(|(n, s)| {
                    (
                        n,
                        Node::Root {
                            tree: s.snapshot.root,
                            meta: s.snapshot.root_meta.clone(),
                        },
                    )
                })
                .collect();
            if !out.is_empty() {
                out.push((LATEST.to_vec(), Node::Latest));
            }
            return Ok(out);
        }
        let tree = match self.node(ino)? {
            Node::Root { tree, .. } => tree,
            Node::Entry(e) => e.subtree().ok_or(LiveError::NotDir)?,
            Node::Latest => return Err(LiveError::NotDir),
        };
        let t = self.reader.read_tree(&tree)?;
        Ok(t.entries
            .iter()
            .map(|e| (e.name.clone(), Node::Entry(Arc::new(e.clone()))))
            .collect())
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> LiveResult<u64> {
        if parent == HISTORY_INO {
            let (n, node) = self
                .list(HISTORY_INO)?
                .into_iter()
                .find(|(n, _)| n == name)
                .ok_or(LiveError::NotFound)?;
            return self.hand_out(parent, &n, node);
        }
        let tree = match self.node(parent)? {
            Node::Root { tree, .. } => tree,
            Node::Entry(e) => e.subtree().ok_or(LiveError::NotDir)?,
            Node::Latest => return Err(LiveError::NotDir),
        };
        let t = self.reader.read_tree(&tree)?;
        let e = t.find(name).ok_or(LiveError::NotFound)?;
        self.hand_out(parent, name, Node::Entry(Arc::new(e.clone())))
    }

    /// Hand the kernel the node `name` in `parent`: one lookup it will
    /// forget.
    fn hand_out(&self, parent: u64, name: &[u8], node: Node) -> LiveResult<u64> {
        self.write_nodes()
            .hand_out(parent, name, node, Hold::Lookup)
            .ok_or(LiveError::NotFound)
    }

    /// Entries of a history directory with their inode numbers, pinned
    /// until the `Pins` go (an open directory's listing).
    pub fn readdir(self: &Arc<Self>, ino: u64) -> LiveResult<(Vec<DirEntry>, Pins)> {
        let list = self.list(ino)?;
        let mut pins = Pins {
            history: self.clone(),
            inos: Vec::with_capacity(list.len()),
        };
        let mut out = Vec::with_capacity(list.len());
        let mut nodes = self.write_nodes();
        for (name, node) in list {
            let kind = node_kind(&node);
            // Only if `ino` went meanwhile; `pins` unpins the rest.
            let Some(child) = nodes.hand_out(ino, &name, node, Hold::Pin) else {
                drop(nodes);
                return Err(LiveError::NotFound);
            };
            pins.inos.push(child);
            out.push((child, kind, name));
        }
        drop(nodes);
        Ok((out, pins))
    }

    pub fn attr(&self, ino: u64, owner: (u32, u32)) -> LiveResult<HistAttr> {
        if ino == HISTORY_INO {
            let newest = self
                .flusher
                .snapshots()
                .last()
                .map(|s| s.snapshot.time_ns)
                .unwrap_or(0);
            let newest_t = Timestamp {
                secs: newest.div_euclid(1_000_000_000),
                nanos: newest.rem_euclid(1_000_000_000) as u32,
            };
            return Ok(HistAttr {
                kind: Kind::Dir,
                mode: 0o555,
                uid: owner.0,
                gid: owner.1,
                size: 0,
                mtime: newest_t,
                ctime: newest_t,
                nlink: 2,
                rdev: 0,
            });
        }
        Ok(match self.node(ino)? {
            Node::Latest => HistAttr {
                kind: Kind::Symlink,
                mode: 0o777,
                uid: owner.0,
                gid: owner.1,
                size: self.latest_name().map(|n| n.len() as u64).unwrap_or(0),
                mtime: Timestamp::default(),
                ctime: Timestamp::default(),
                nlink: 1,
                rdev: 0,
            },
            Node::Root { meta, .. } => HistAttr {
                kind: Kind::Dir,
                mode: meta.mode,
                uid: meta.uid,
                gid: meta.gid,
                size: 0,
                mtime: meta.mtime,
                ctime: meta.mtime,
                nlink: 2,
                rdev: 0,
            },
            Node::Entry(e) => HistAttr {
                kind: e.kind,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                size: e.size,
                mtime: e.mtime,
                ctime: e.ctime.unwrap_or(e.mtime),
                nlink: if e.kind == Kind::Dir {
                    2
                } else {
                    e.links.max(1)
                },
                rdev: e.rdev,
            },
        })
    }

    pub fn readlink(&self, ino: u64) -> LiveResult<Vec<u8>> {
        match self.node(ino)? {
            Node::Latest => self.latest_name().ok_or(LiveError::NotFound),
            Node::Entry(e) => match &e.content {
                crate::repo::tree::Content::Symlink(t) => Ok(t.clone()),
                _ => Err(LiveError::Invalid),
            },
            Node::Root { .. } => Err(LiveError::Invalid),
        }
    }

    pub fn read(&self, ino: u64, offset: u64, size: u32) -> LiveResult<Vec<u8>> {
        match self.node(ino)? {
            Node::Entry(e) if e.kind == Kind::File => {
                read_chunks(e.chunks(), e.size, offset, size, &*self.reader)
            }
            Node::Entry(e) if e.kind == Kind::Dir => Err(LiveError::IsDir),
            Node::Root { .. } => Err(LiveError::IsDir),
            _ => Err(LiveError::Invalid),
        }
    }

    pub fn xattrs(&self, ino: u64) -> LiveResult<Vec<(Vec<u8>, Vec<u8>)>> {
        match self.node(ino) {
            Ok(Node::Entry(e)) => Ok(e.xattrs.clone()),
            Ok(Node::Root { meta, .. }) => Ok(meta.xattrs.clone()),
            Ok(_) => Ok(Vec::new()),
            Err(_) if ino == HISTORY_INO => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

fn node_kind(n: &Node) -> Kind {
    match n {
        Node::Latest => Kind::Symlink,
        Node::Root { .. } => Kind::Dir,
        Node::Entry(e) => e.kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::snapshot::{Origin, Snapshot};

    fn snap(n: u8, time_ns: i64) -> SnapEntry {
        SnapEntry {
            id: Id([n; 32]),
            snapshot: Snapshot::test(time_ns, Origin::Mount, Id([n; 32])),
            uploaded: true,
        }
    }

    /// Found by review: names were given by place among the snapshots of
    /// one second, so when retention forgot the first, the second's name
    /// became the first's, and the kernel went on showing the forgotten
    /// snapshot's cached pages under it.
    #[test]
    fn a_snapshot_keeps_its_name_when_another_of_its_second_goes() {
        let second = 1_700_000_000_000_000_000;
        let (a, b, c) = (snap(1, second), snap(2, second + 5), snap(3, second + 9));
        let mut names = SnapshotNames::default();
        let names_of = |names: &mut SnapshotNames, snaps: &[SnapEntry]| -> Vec<String> {
            names
                .name(snaps)
                .into_iter()
                .map(|(n, _)| String::from_utf8(n).unwrap())
                .collect()
        };
        let t = a.snapshot.time_rfc3339();
        assert_eq!(
            names_of(&mut names, &[a.clone(), b.clone()]),
            [t.clone(), format!("{t}-1")]
        );
        // The first is forgotten: the second keeps its name, and a third
        // of that second gets a name never given before.
        assert_eq!(
            names_of(&mut names, &[b.clone(), c.clone()]),
            [format!("{t}-1"), format!("{t}-2")]
        );
    }

    /// Found in stop 28: every name ever given stayed for the life of the
    /// mount, so one that sees snapshot after snapshot sealed and
    /// forgotten grew for ever. A forgotten snapshot's name goes once the
    /// kernel holds nothing by it, and only then may it be given again.
    #[test]
    fn names_of_forgotten_snapshots_go_once_the_kernel_lets_go() {
        let second = 1_700_000_000_000_000_000;
        let mut names = SnapshotNames::default();
        let mut listed = Vec::new();
        for k in 0..1000i64 {
            let s = snap((k % 200) as u8, second + k * 1_000_000_000);
            listed.push(s.clone());
            names.name(&listed);
            // Retention keeps the newest two.
            if listed.len() > 2 {
                listed.remove(0);
            }
            let (gone, moved) = names.update(&listed);
            assert!(moved);
            assert_eq!(gone.len(), usize::from(k >= 2));
            names.release(|_| true);
        }
        assert_eq!((names.by_id.len(), names.taken.len()), (2, 2));
        assert!(names.forgotten.is_empty());

        // One the kernel still holds keeps its name taken.
        let (a, b) = (snap(1, second), snap(2, second + 5));
        let mut names = SnapshotNames::default();
        let t = a.snapshot.time_rfc3339().into_bytes();
        names.name(std::slice::from_ref(&a));
        assert_eq!(
            names.update(std::slice::from_ref(&b)),
            (vec![t.clone()], true)
        );
        assert!(!names.listed(&t), "a forgotten name is not listed");
        names.release(|_| false);
        assert_ne!(
            names.name(std::slice::from_ref(&b))[0].0,
            t,
            "given while held"
        );
        names.release(|_| true);
        let c = snap(3, second + 7);
        assert_eq!(names.name(&[b, c])[1].0, t, "free again once let go");
    }
}

//! `.history/`: every snapshot as a read-only tree.
//!
//! One directory per snapshot named by its UTC time (a `-N` suffix when two
//! share a second; a name stays with its snapshot, see `SnapshotNames`),
//! and `latest`, a symlink to the newest. Snapshots sealed but not yet
//! uploaded are listed too. Inode numbers are synthesized on
//! first lookup, from 2^62 up, and stay the same for the life of the mount.
//! Trees are read on demand through the blob reader: opening a file in an
//! old snapshot reads the trees on its path and the chunks it reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::blobs::BlobReader;
use crate::crypto::Id;
use crate::flush::{Flusher, SnapEntry};
use crate::live::data::read_chunks;
use crate::live::{LiveError, LiveResult};
use crate::repo::snapshot::RootMeta;
use crate::repo::tree::{Entry, Kind, Timestamp};

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

/// What `getattr` needs of a history node.
pub struct HistAttr {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: Timestamp,
    pub nlink: u32,
    pub rdev: u64,
}

pub struct History {
    flusher: Arc<Flusher>,
    reader: Arc<BlobReader>,
    /// Each node with the inode of the snapshot root it lies under and of
    /// the directory it was first found in.
    nodes: RwLock<Vec<(Node, u64, u64)>>,
    by_name: Mutex<HashMap<(u64, Vec<u8>), u64>>,
    /// Hard links: (snapshot root, dev, inode) of a multiply linked
    /// non-directory → its one inode number, so that every name of it
    /// shows the same inode, as in the tree that was recorded.
    by_link: Mutex<HashMap<(u64, u64, u64), u64>>,
    names: Mutex<SnapshotNames>,
}

/// Directory names of snapshots, given once and kept for the life of the
/// mount: the UTC time of the snapshot, with `-N` when another snapshot of
/// the same second had the name. A name never passes to another snapshot
/// (when retention forgets the first of two snapshots of one second, the
/// second keeps `T-1`): the kernel keeps a name's inode and a file's pages
/// by name, and a name that changed its snapshot would show the forgotten
/// snapshot's cached bytes under the name of a kept one.
#[derive(Default)]
pub struct SnapshotNames {
    by_id: HashMap<Id, Vec<u8>>,
    taken: std::collections::HashSet<Vec<u8>>,
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
}

impl History {
    pub fn new(flusher: Arc<Flusher>, reader: Arc<BlobReader>) -> History {
        History {
            flusher,
            reader,
            nodes: RwLock::new(Vec::new()),
            by_name: Mutex::new(HashMap::new()),
            by_link: Mutex::new(HashMap::new()),
            names: Mutex::new(SnapshotNames::default()),
        }
    }

    pub fn is_history(ino: u64) -> bool {
        ino == HISTORY_INO || ino >= FIRST
    }

    fn node(&self, ino: u64) -> LiveResult<Node> {
        let i = ino.checked_sub(FIRST).ok_or(LiveError::NotFound)? as usize;
        self.nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(i)
            .map(|(n, _, _)| n.clone())
            .ok_or(LiveError::NotFound)
    }

    /// The directory `ino` was first found in (the first name of a hard
    /// link); None for `.history` and what it holds, the snapshots.
    pub fn parent(&self, ino: u64) -> Option<u64> {
        let i = ino.checked_sub(FIRST)? as usize;
        let parent = self
            .nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(i)?
            .2;
        (parent != HISTORY_INO).then_some(parent)
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

    fn intern(&self, parent: u64, name: &[u8], node: Node) -> u64 {
        let mut by = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&ino) = by.get(&(parent, name.to_vec())) {
            // Refresh in place (a pending snapshot's node is the same tree).
            nodes[(ino - FIRST) as usize].0 = node;
            return ino;
        }
        let root = if parent == HISTORY_INO {
            None
        } else {
            parent
                .checked_sub(FIRST)
                .and_then(|i| nodes.get(i as usize))
                .map(|(_, r, _)| *r)
        };
        let link_key = match (&node, root) {
            (Node::Entry(e), Some(root)) if e.kind != Kind::Dir && e.links > 1 && e.inode != 0 => {
                Some((root, e.dev, e.inode))
            }
            _ => None,
        };
        let mut links = self.by_link.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&ino) = link_key.as_ref().and_then(|k| links.get(k)) {
            by.insert((parent, name.to_vec()), ino);
            return ino;
        }
        let ino = FIRST + nodes.len() as u64;
        nodes.push((node, root.unwrap_or(ino), parent));
        by.insert((parent, name.to_vec()), ino);
        if let Some(k) = link_key {
            links.insert(k, ino);
        }
        ino
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
                            meta: s.snapshot.root_meta,
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
            return Ok(self.intern(parent, &n, node));
        }
        let tree = match self.node(parent)? {
            Node::Root { tree, .. } => tree,
            Node::Entry(e) => e.subtree().ok_or(LiveError::NotDir)?,
            Node::Latest => return Err(LiveError::NotDir),
        };
        let t = self.reader.read_tree(&tree)?;
        let e = t.find(name).ok_or(LiveError::NotFound)?;
        Ok(self.intern(parent, name, Node::Entry(Arc::new(e.clone()))))
    }

    /// Entries of a history directory with their inode numbers.
    pub fn readdir(&self, ino: u64) -> LiveResult<Vec<(u64, Kind, Vec<u8>)>> {
        Ok(self
            .list(ino)?
            .into_iter()
            .map(|(name, node)| {
                let kind = node_kind(&node);
                let child = self.intern(ino, &name, node);
                (child, kind, name)
            })
            .collect())
    }

    pub fn attr(&self, ino: u64, owner: (u32, u32)) -> LiveResult<HistAttr> {
        if ino == HISTORY_INO {
            let newest = self
                .flusher
                .snapshots()
                .last()
                .map(|s| s.snapshot.time_ns)
                .unwrap_or(0);
            return Ok(HistAttr {
                kind: Kind::Dir,
                mode: 0o555,
                uid: owner.0,
                gid: owner.1,
                size: 0,
                mtime: Timestamp {
                    secs: newest.div_euclid(1_000_000_000),
                    nanos: newest.rem_euclid(1_000_000_000) as u32,
                },
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
}

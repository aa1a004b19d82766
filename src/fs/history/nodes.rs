//! The inode table of `.history`: which nodes of old snapshots the kernel
//! may name by number, and for how long.
//!
//! The kernel counts the times a reply handed it an inode (LOOKUP, and each
//! READDIRPLUS entry but `.` and `..`) and gives them back with FORGET when
//! it evicts the inode. A node here lives while the kernel holds such
//! lookups on it or an open directory listing pins it (a plain READDIR
//! shows its number, and a LOOKUP of that name should find the same one);
//! when both reach zero it goes, with every name it was handed out under.
//! Snapshot roots and `latest` too: a mount that looks into one snapshot
//! after another, while retention or another process forgets them, keeps
//! only what the kernel holds.
//!
//! Invariants, all kept under the one lock the owner (`History`) takes:
//! - A number is given once, from a counter, and never reused: the kernel
//!   may still hold a number whose FORGET is in flight, and it must never
//!   come to name another node.
//! - A node known by a name is found by that name (`by_name`) and holds a
//!   hold per reply that handed it out; finding and counting happen under
//!   the same lock as FORGET's drop, so a lookup cannot revive a node that
//!   is being dropped.
//! - Hard links of one snapshot (same recorded device and inode, more than
//!   one link) share one node, found through `by_link`, while any of their
//!   names is known.
//! - A name in `.history` finds its node only for the snapshot it was
//!   handed out for (the same root tree): a name is given to another
//!   snapshot only after the first was forgotten and the kernel let go of
//!   it, and even then it gets a new number.

use std::collections::HashMap;

use super::{Node, FIRST, HISTORY_INO};
use crate::repo::tree::Kind;

/// What keeps a node alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// A reply handed the node to the kernel, which will FORGET it.
    Lookup,
    /// An open directory's listing shows its number.
    Pin,
}

/// (snapshot root inode, recorded device, recorded inode) of a hard link.
type LinkKey = (u64, u64, u64);

struct Slot {
    node: Node,
    /// The snapshot root it lies under (itself for a root).
    root: u64,
    /// The directory it was first handed out from.
    parent: u64,
    lookups: u64,
    pins: u64,
    /// Every (directory, name) it was handed out under: its `by_name` keys.
    names: Vec<(u64, Vec<u8>)>,
    link: Option<LinkKey>,
}

pub struct Nodes {
    slots: HashMap<u64, Slot>,
    by_name: HashMap<(u64, Vec<u8>), u64>,
    by_link: HashMap<LinkKey, u64>,
    next: u64,
}

impl Default for Nodes {
    fn default() -> Nodes {
        Nodes {
            slots: HashMap::new(),
            by_name: HashMap::new(),
            by_link: HashMap::new(),
            next: FIRST,
        }
    }
}

impl Nodes {
    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.slots.get(&ino).map(|s| &s.node)
    }

    /// The directory `ino` was first handed out from.
    pub fn parent(&self, ino: u64) -> Option<u64> {
        self.slots.get(&ino).map(|s| s.parent)
    }

    /// The node `name` in `parent` is known as, if any (holds nothing).
    pub fn known(&self, parent: u64, name: &[u8]) -> Option<u64> {
        self.by_name.get(&(parent, name.to_vec())).copied()
    }

    /// Every node alive.
    pub fn all(&self) -> impl Iterator<Item = &Node> {
        self.slots.values().map(|s| &s.node)
    }

    /// Nodes alive.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Hand out `node`, found as `name` in directory `parent`, with one
    /// `hold`: the node that name is known as (its content refreshed: a
    /// sealed snapshot's root becomes the uploaded one, the same tree),
    /// else the node of its hard link group in this snapshot, else a new
    /// one. None if `parent` is neither `.history` nor a live node.
    pub fn hand_out(&mut self, parent: u64, name: &[u8], node: Node, hold: Hold) -> Option<u64> {
        let key = (parent, name.to_vec());
        if let Some(&ino) = self.by_name.get(&key) {
            if let Some(slot) = self.slots.get_mut(&ino) {
                if same_snapshot(&slot.node, &node) {
                    slot.node = node;
                    add(slot, hold);
                    return Some(ino);
                }
                // A forgotten snapshot's root, its name given to another:
                // the old node keeps its number for what holds it.
                self.by_name.remove(&key);
            }
        }
        let root = if parent == HISTORY_INO {
            None
        } else {
            Some(self.slots.get(&parent)?.root)
        };
        let link = match (&node, root) {
            (Node::Entry(e), Some(root)) if e.kind != Kind::Dir && e.links > 1 && e.inode != 0 => {
                Some((root, e.dev, e.inode))
            }
            _ => None,
        };
        if let Some(&ino) = link.as_ref().and_then(|k| self.by_link.get(k)) {
            if let Some(slot) = self.slots.get_mut(&ino) {
                slot.names.push(key.clone());
                add(slot, hold);
                self.by_name.insert(key, ino);
                return Some(ino);
            }
        }
        let ino = self.next;
        self.next += 1;
        let mut slot = Slot {
            node,
            root: root.unwrap_or(ino),
            parent,
            lookups: 0,
            pins: 0,
            names: vec![key.clone()],
            link,
        };
        add(&mut slot, hold);
        self.slots.insert(ino, slot);
        self.by_name.insert(key, ino);
        if let Some(k) = link {
            self.by_link.insert(k, ino);
        }
        Some(ino)
    }

    /// One more `hold` on `ino`; false if it is gone.
    pub fn hold(&mut self, ino: u64, hold: Hold) -> bool {
        match self.slots.get_mut(&ino) {
            Some(slot) => {
                add(slot, hold);
                true
            }
            None => false,
        }
    }

    /// Take `n` holds of kind `hold` off `ino` (never below zero: a count
    /// the kernel sends wrong must not free what a listing pins); the node
    /// goes when none are left.
    pub fn release(&mut self, ino: u64, hold: Hold, n: u64) {
        let Some(slot) = self.slots.get_mut(&ino) else {
            return;
        };
        match hold {
            Hold::Lookup => slot.lookups = slot.lookups.saturating_sub(n),
            Hold::Pin => slot.pins = slot.pins.saturating_sub(n),
        }
        if slot.lookups > 0 || slot.pins > 0 {
            return;
        }
        if let Some(slot) = self.slots.remove(&ino) {
            for key in slot.names {
                if self.by_name.get(&key) == Some(&ino) {
                    self.by_name.remove(&key);
                }
            }
            if let Some(k) = slot.link {
                if self.by_link.get(&k) == Some(&ino) {
                    self.by_link.remove(&k);
                }
            }
        }
    }
}

/// Whether `new`, found under the name `old` is known by, is the same
/// node: a snapshot root stays one only for the same tree.
fn same_snapshot(old: &Node, new: &Node) -> bool {
    match (old, new) {
        (Node::Root { tree: a, .. }, Node::Root { tree: b, .. }) => a == b,
        (Node::Root { .. }, _) | (_, Node::Root { .. }) => false,
        _ => true,
    }
}

fn add(slot: &mut Slot, hold: Hold) {
    match hold {
        Hold::Lookup => slot.lookups += 1,
        Hold::Pin => slot.pins += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Id;
    use crate::repo::snapshot::RootMeta;
    use crate::repo::tree::tests::file;
    use std::sync::Arc;

    fn root() -> Node {
        Node::Root {
            tree: Id([1; 32]),
            meta: RootMeta::default(),
        }
    }

    fn entry(name: &str) -> Node {
        Node::Entry(Arc::new(file(name, vec![])))
    }

    fn dir(name: &str) -> Node {
        let mut e = file(name, vec![]);
        e.kind = Kind::Dir;
        Node::Entry(Arc::new(e))
    }

    /// A hard link: recorded inode 77 with two links.
    fn link(name: &str) -> Node {
        let mut e = file(name, vec![]);
        e.inode = 77;
        e.links = 2;
        Node::Entry(Arc::new(e))
    }

    fn snapshot_root(t: &mut Nodes) -> u64 {
        t.hand_out(HISTORY_INO, b"2024", root(), Hold::Lookup)
            .unwrap()
    }

    #[test]
    fn a_node_lives_while_the_kernel_counts_it() {
        let mut t = Nodes::default();
        let r = snapshot_root(&mut t);
        let a = t.hand_out(r, b"a", entry("a"), Hold::Lookup).unwrap();
        assert_eq!(t.hand_out(r, b"a", entry("a"), Hold::Lookup), Some(a));
        assert_eq!(t.hand_out(r, b"a", entry("a"), Hold::Lookup), Some(a));
        t.release(a, Hold::Lookup, 2);
        assert!(t.get(a).is_some(), "one lookup is left");
        assert_eq!(t.known(r, b"a"), Some(a));
        t.release(a, Hold::Lookup, 1);
        assert!(t.get(a).is_none());
        assert_eq!(t.known(r, b"a"), None);
        assert_eq!(t.parent(a), None);
        assert!(!t.hold(a, Hold::Lookup), "a dropped node takes no holds");
        // Only the root is left, and it goes too when forgotten.
        assert_eq!(t.len(), 1);
        t.release(r, Hold::Lookup, 1);
        assert!(t.get(r).is_none());
        assert_eq!(t.len(), 0);
    }

    fn root_of(tree: u8) -> Node {
        Node::Root {
            tree: Id([tree; 32]),
            meta: RootMeta::default(),
        }
    }

    /// Found in stop 28: snapshot roots and `latest` stayed for the life of
    /// the mount, forgotten snapshots' too, so a mount that looked into
    /// snapshot after snapshot while retention forgot them grew for ever.
    #[test]
    fn snapshot_roots_go_when_the_kernel_forgets_them() {
        let mut t = Nodes::default();
        for k in 0..1000u32 {
            let name = format!("2026-12-06T20:{k:04}Z");
            let r = t
                .hand_out(HISTORY_INO, name.as_bytes(), root(), Hold::Lookup)
                .unwrap();
            let a = t.hand_out(r, b"a", entry("a"), Hold::Lookup).unwrap();
            let l = t
                .hand_out(HISTORY_INO, b"latest", Node::Latest, Hold::Pin)
                .unwrap();
            t.release(a, Hold::Lookup, 1);
            t.release(r, Hold::Lookup, 1);
            t.release(l, Hold::Pin, 1);
        }
        assert_eq!(t.len(), 0);
        assert!(t.by_name.is_empty() && t.by_link.is_empty());
    }

    /// A name given to another snapshot (the first was forgotten) never
    /// finds the first one's node, which a process may still hold.
    #[test]
    fn a_name_given_to_another_snapshot_is_a_new_node() {
        let mut t = Nodes::default();
        let old = t
            .hand_out(HISTORY_INO, b"T", root_of(1), Hold::Lookup)
            .unwrap();
        // The same snapshot (sealed, then uploaded): the same node.
        assert_eq!(
            t.hand_out(HISTORY_INO, b"T", root_of(1), Hold::Lookup),
            Some(old)
        );
        let new = t
            .hand_out(HISTORY_INO, b"T", root_of(2), Hold::Lookup)
            .unwrap();
        assert_ne!(new, old);
        assert!(matches!(t.get(old), Some(Node::Root { tree, .. }) if *tree == Id([1; 32])));
        assert_eq!(t.known(HISTORY_INO, b"T"), Some(new));
        // The old one goes when the kernel lets go of it, the name stays
        // with the new one.
        t.release(old, Hold::Lookup, 2);
        assert!(t.get(old).is_none());
        assert_eq!(t.known(HISTORY_INO, b"T"), Some(new));
    }

    #[test]
    fn a_pinned_node_stays_until_unpinned_and_forgotten() {
        let mut t = Nodes::default();
        let r = snapshot_root(&mut t);
        let a = t.hand_out(r, b"a", entry("a"), Hold::Pin).unwrap();
        // READDIRPLUS sends it: the kernel counts it.
        assert!(t.hold(a, Hold::Lookup));
        t.release(a, Hold::Pin, 1);
        assert!(t.get(a).is_some(), "the kernel still holds it");
        // A forget with a count larger than what it holds frees no pin.
        let b = t.hand_out(r, b"b", entry("b"), Hold::Pin).unwrap();
        t.release(b, Hold::Lookup, 5);
        assert!(t.get(b).is_some());
        t.release(a, Hold::Lookup, 1);
        t.release(b, Hold::Pin, 1);
        assert!(t.get(a).is_none() && t.get(b).is_none());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn numbers_are_never_reused() {
        let mut t = Nodes::default();
        let r = snapshot_root(&mut t);
        let mut seen = std::collections::HashSet::from([r]);
        for _ in 0..100 {
            let a = t.hand_out(r, b"a", entry("a"), Hold::Lookup).unwrap();
            assert!(seen.insert(a), "{a} given twice");
            t.release(a, Hold::Lookup, 1);
        }
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn hard_links_share_a_number_while_one_is_known() {
        let mut t = Nodes::default();
        let r = snapshot_root(&mut t);
        let d1 = t.hand_out(r, b"d1", dir("d1"), Hold::Lookup).unwrap();
        let d2 = t.hand_out(r, b"d2", dir("d2"), Hold::Lookup).unwrap();
        let x = t.hand_out(d1, b"x", link("x"), Hold::Lookup).unwrap();
        let y = t.hand_out(d2, b"y", link("y"), Hold::Lookup).unwrap();
        assert_eq!(x, y, "both names show one inode");
        // The first name is forgotten; the other keeps the number.
        t.release(x, Hold::Lookup, 1);
        assert!(t.get(x).is_some());
        assert_eq!(t.known(d1, b"x"), Some(x));
        assert_eq!(t.hand_out(d1, b"x", link("x"), Hold::Lookup), Some(x));
        t.release(x, Hold::Lookup, 2);
        assert!(t.get(x).is_none());
        assert_eq!((t.known(d1, b"x"), t.known(d2, b"y")), (None, None));
        // Known again: a new number, shared again by both names.
        let x2 = t.hand_out(d2, b"y", link("y"), Hold::Lookup).unwrap();
        assert_ne!(x2, x);
        assert_eq!(t.hand_out(d1, b"x", link("x"), Hold::Pin), Some(x2));
    }

    #[test]
    fn hard_links_of_two_snapshots_are_two_nodes() {
        let mut t = Nodes::default();
        let r1 = snapshot_root(&mut t);
        let r2 = t
            .hand_out(HISTORY_INO, b"2025", root(), Hold::Lookup)
            .unwrap();
        let a = t.hand_out(r1, b"x", link("x"), Hold::Lookup).unwrap();
        let b = t.hand_out(r2, b"x", link("x"), Hold::Lookup).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn no_node_under_a_dropped_directory() {
        let mut t = Nodes::default();
        let r = snapshot_root(&mut t);
        let d = t.hand_out(r, b"d", dir("d"), Hold::Lookup).unwrap();
        t.release(d, Hold::Lookup, 1);
        assert_eq!(t.hand_out(d, b"a", entry("a"), Hold::Lookup), None);
        assert_eq!(t.hand_out(12345, b"a", entry("a"), Hold::Lookup), None);
    }
}

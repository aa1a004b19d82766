//! Tree blobs: one per directory, its entries sorted by name.
//!
//! An entry carries what restore and the mount need to recreate the file
//! exactly (kind, mode, owner, mtime, size, xattrs, hard-link identity), its
//! ctime (what `backup` compares to see a file rewritten with its mtime put
//! back; nothing can set it, so restore does not) and its content: the file's chunk list, the subtree's id, or the symlink's
//! target. A directory whose entries did not change encodes to the same bytes
//! and so keeps its id: a snapshot of a huge tree with one change costs the
//! blobs on the path from that change to the root.
//!
//! Decoding validates what a hostile store could abuse: names are non-empty,
//! contain neither `/` nor NUL, are not `.` or `..`, and are strictly sorted
//! (so unique); a file's size equals the sum of its chunk lengths; times
//! have nanoseconds below 10^9.
//!
//! Version 2 added the ctime, right after the mtime. Version 1 trees (no
//! ctime) still decode, their entries with `ctime: None`; only version 2 is
//! written. An entry with no ctime (one carried over from a version 1 tree)
//! is written with the ctime [`NO_CTIME`], which no real time can equal
//! (nanoseconds 2^32 - 1), so decode gives `None` back and the encoding stays
//! canonical.

use crate::crypto::Id;
use crate::repo::codec::{bad, Dec, DecodeError, DecodeResult, Enc};

const VERSION: u8 = 2;

/// The encoding of an unknown ctime in a version 2 entry: (secs 0,
/// nanos `u32::MAX`). Any other nanoseconds at or above 10^9 are rejected.
pub const NO_CTIME: (i64, u32) = (0, u32::MAX);

/// The smallest entry (a fifo, socket or device with a one-byte name and no
/// xattrs) per tree version: 2 (name length) + 1 + 1 (kind) + 3 × 4 (mode,
/// uid, gid) + 12 (mtime) + 8 (size) + 8 + 8 + 4 + 8 (dev, inode, links,
/// rdev) + 2 (xattr count) = 66, plus 12 for the ctime from version 2.
const MIN_ENTRY_V1: usize = 66;
const MIN_ENTRY_V2: usize = MIN_ENTRY_V1 + 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    File = 1,
    Dir = 2,
    Symlink = 3,
    Fifo = 4,
    CharDevice = 5,
    BlockDevice = 6,
    Socket = 7,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::File,
            2 => Kind::Dir,
            3 => Kind::Symlink,
            4 => Kind::Fifo,
            5 => Kind::CharDevice,
            6 => Kind::BlockDevice,
            7 => Kind::Socket,
            _ => return None,
        })
    }

    /// The `S_IFMT` bits of this kind.
    pub fn mode_bits(self) -> u32 {
        match self {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::CharDevice => libc::S_IFCHR,
            Kind::BlockDevice => libc::S_IFBLK,
            Kind::Socket => libc::S_IFSOCK,
        }
    }

    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & libc::S_IFMT {
            m if m == libc::S_IFREG => Kind::File,
            m if m == libc::S_IFDIR => Kind::Dir,
            m if m == libc::S_IFLNK => Kind::Symlink,
            m if m == libc::S_IFIFO => Kind::Fifo,
            m if m == libc::S_IFCHR => Kind::CharDevice,
            m if m == libc::S_IFBLK => Kind::BlockDevice,
            m if m == libc::S_IFSOCK => Kind::Socket,
            _ => return None,
        })
    }

    /// One letter as `ls -l` shows it.
    pub fn letter(self) -> char {
        match self {
            Kind::File => '-',
            Kind::Dir => 'd',
            Kind::Symlink => 'l',
            Kind::Fifo => 'p',
            Kind::CharDevice => 'c',
            Kind::BlockDevice => 'b',
            Kind::Socket => 's',
        }
    }
}

/// One chunk of a file: its blob and plaintext length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub id: Id,
    pub len: u32,
}

/// The hard-linked files met in a walk of a tree (restore, import): per
/// identity (dev, inode), the first name (`T`) given for each content.
/// Names of one file share its content too; entries that only share an
/// identity (an older version could give two caches' files the same one)
/// stay apart, each content its own file, whichever came first.
pub struct Links<T>(std::collections::HashMap<(u64, u64), Vec<(Content, T)>>);

impl<T> Default for Links<T> {
    fn default() -> Self {
        Links(Default::default())
    }
}

impl<T> Links<T> {
    /// The first name of `e`'s file, if one was added.
    pub fn get(&self, e: &Entry) -> Option<&T> {
        self.0
            .get(&(e.dev, e.inode))?
            .iter()
            .find(|(c, _)| *c == e.content)
            .map(|(_, t)| t)
    }

    /// `first` is the first name of `e`'s file.
    pub fn add(&mut self, e: &Entry, first: T) {
        self.0
            .entry((e.dev, e.inode))
            .or_default()
            .push((e.content.clone(), first));
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    None,
    Chunks(Vec<ChunkRef>),
    Subtree(Id),
    Symlink(Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: Kind,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timestamp,
    /// The status change time of the source, `None` when unknown (an entry
    /// of a version 1 tree). `backup` takes a file as unchanged only when
    /// its ctime is known and equal; restore cannot set it.
    pub ctime: Option<Timestamp>,
    pub size: u64,
    /// Device and inode of the source, for hard links and change detection.
    pub dev: u64,
    pub inode: u64,
    pub links: u32,
    pub rdev: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub content: Content,
}

impl Entry {
    /// About what the entry holds on the heap, allocator overhead included
    /// (for cache budgets).
    pub fn heap_bytes(&self) -> usize {
        const ALLOC: usize = 16;
        let owned = |cap: usize| if cap == 0 { 0 } else { cap + ALLOC };
        let xattrs: usize = self
            .xattrs
            .iter()
            .map(|(k, v)| owned(k.capacity()) + owned(v.capacity()))
            .sum();
        let content = match &self.content {
            Content::Chunks(c) => owned(c.capacity() * std::mem::size_of::<ChunkRef>()),
            Content::Symlink(t) => owned(t.capacity()),
            Content::None | Content::Subtree(_) => 0,
        };
        owned(self.name.capacity())
            + owned(self.xattrs.capacity() * std::mem::size_of::<(Vec<u8>, Vec<u8>)>())
            + xattrs
            + content
    }

    pub fn chunks(&self) -> &[ChunkRef] {
        match &self.content {
            Content::Chunks(c) => c,
            _ => &[],
        }
    }

    pub fn subtree(&self) -> Option<Id> {
        match self.content {
            Content::Subtree(id) => Some(id),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Tree {
    pub entries: Vec<Entry>,
}

pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name != b"."
        && name != b".."
        && name.len() <= u16::MAX as usize
        && !name.iter().any(|&c| c == b'/' || c == 0)
}

impl Tree {
    /// About what the decoded tree holds on the heap (for cache budgets).
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.entries.iter().map(Entry::heap_bytes).sum::<usize>()
    }

    /// Sort entries by name (the encoding requires it).
    pub fn sort(&mut self) {
        self.entries.sort_by(|a, b| a.name.cmp(&b.name));
    }

    pub fn find(&self, name: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Encode; entries must be sorted with unique, valid names.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::with_capacity(64 + self.entries.len() * 128);
        e.u8(VERSION).u32(self.entries.len() as u32);
        for x in &self.entries {
            e.bytes16(&x.name)
                .u8(x.kind as u8)
                .u32(x.mode)
                .u32(x.uid)
                .u32(x.gid)
                .i64(x.mtime.secs)
                .u32(x.mtime.nanos);
            let (cs, cn) = x.ctime.map_or(NO_CTIME, |c| (c.secs, c.nanos));
            e.i64(cs)
                .u32(cn)
                .u64(x.size)
                .u64(x.dev)
                .u64(x.inode)
                .u32(x.links)
                .u64(x.rdev)
                .u16(x.xattrs.len() as u16);
            for (k, v) in &x.xattrs {
                e.bytes16(k).bytes32(v);
            }
            match &x.content {
                Content::None => {}
                Content::Chunks(c) => {
                    e.u32(c.len() as u32);
                    for r in c {
                        e.raw(&r.id.0).u32(r.len);
                    }
                }
                Content::Subtree(id) => {
                    e.raw(&id.0);
                }
                Content::Symlink(t) => {
                    e.bytes32(t);
                }
            }
        }
        e.finish()
    }

    pub fn decode(b: &[u8]) -> DecodeResult<Tree> {
        let mut d = Dec::new(b);
        let v = d.u8()?;
        let min_entry = match v {
            1 => MIN_ENTRY_V1,
            VERSION => MIN_ENTRY_V2,
            _ => return bad(format!("tree version {v} is not supported")),
        };
        let n = d.count(min_entry)?;
        let mut entries: Vec<Entry> = Vec::with_capacity(n);
        for _ in 0..n {
            let name = d.bytes16()?.to_vec();
            if !valid_name(&name) {
                return bad(format!(
                    "invalid entry name {:?}",
                    String::from_utf8_lossy(&name)
                ));
            }
            if let Some(prev) = entries.last() {
                if prev.name >= name {
                    return bad("entries are not sorted by name");
                }
            }
            let kind =
                Kind::from_u8(d.u8()?).ok_or_else(|| DecodeError("unknown entry kind".into()))?;
            let mode = d.u32()?;
            if mode & !0o7777 != 0 {
                return bad("mode has bits beyond 0o7777");
            }
            let (uid, gid) = (d.u32()?, d.u32()?);
            let mtime = Timestamp {
                secs: d.i64()?,
                nanos: d.u32()?,
            };
            if mtime.nanos >= 1_000_000_000 {
                return bad("mtime nanoseconds out of range");
            }
            let ctime = if v == 1 {
                None
            } else {
                match (d.i64()?, d.u32()?) {
                    NO_CTIME => None,
                    (_, nanos) if nanos >= 1_000_000_000 => {
                        return bad("ctime nanoseconds out of range");
                    }
                    (secs, nanos) => Some(Timestamp { secs, nanos }),
                }
            };
            let size = d.u64()?;
            let (dev, inode, links, rdev) = (d.u64()?, d.u64()?, d.u32()?, d.u64()?);
            let nx = d.u16()? as usize;
            let mut xattrs = Vec::with_capacity(nx.min(d.remaining() / 6));
            for _ in 0..nx {
                let k = d.bytes16()?.to_vec();
                let v = d.bytes32()?.to_vec();
                xattrs.push((k, v));
            }
            let content = match kind {
                Kind::File => {
                    let c = d.count(36)?;
                    let mut chunks = Vec::with_capacity(c);
                    let mut total = 0u64;
                    for _ in 0..c {
                        let r = ChunkRef {
                            id: Id(d.array()?),
                            len: d.u32()?,
                        };
                        total += r.len as u64;
                        chunks.push(r);
                    }
                    if total != size {
                        return bad("file size differs from the sum of its chunks");
                    }
                    Content::Chunks(chunks)
                }
                Kind::Dir => Content::Subtree(Id(d.array()?)),
                Kind::Symlink => Content::Symlink(d.bytes32()?.to_vec()),
                _ => Content::None,
            };
            entries.push(Entry {
                name,
                kind,
                mode,
                uid,
                gid,
                mtime,
                ctime,
                size,
                dev,
                inode,
                links,
                rdev,
                xattrs,
                content,
            });
        }
        d.finish()?;
        Ok(Tree { entries })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn file(name: &str, chunks: Vec<ChunkRef>) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            kind: Kind::File,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime: Timestamp { secs: 1, nanos: 2 },
            ctime: Some(Timestamp { secs: 5, nanos: 6 }),
            size: chunks.iter().map(|c| c.len as u64).sum(),
            dev: 3,
            inode: 4,
            links: 1,
            rdev: 0,
            xattrs: vec![(b"user.k".to_vec(), b"v".to_vec())],
            content: Content::Chunks(chunks),
        }
    }

    fn sample() -> Tree {
        let mut link = file("b", vec![]);
        link.kind = Kind::Symlink;
        link.xattrs.clear();
        link.content = Content::Symlink(b"a".to_vec());
        Tree {
            entries: vec![
                file(
                    "a",
                    vec![ChunkRef {
                        id: Id([5; 32]),
                        len: 7,
                    }],
                ),
                link,
            ],
        }
    }

    #[test]
    fn test_vector() {
        let b = sample().encode();
        let expect = [
            "02",
            "02000000", // version 2, entry count
            "0100",
            "61",
            "01",
            "a4010000",
            "e8030000",
            "e8030000", // name "a", file, 0644, uid, gid
            "0100000000000000",
            "02000000", // mtime
            "0500000000000000",
            "06000000",         // ctime
            "0700000000000000", // size 7
            "0300000000000000",
            "0400000000000000",
            "01000000",
            "0000000000000000", // dev, inode, links, rdev
            "0100",
            "0600",
            "757365722e6b",
            "01000000",
            "76", // one xattr user.k=v
            "01000000",
            "0505050505050505050505050505050505050505050505050505050505050505",
            "07000000",
            "0100",
            "62",
            "03",
            "a4010000",
            "e8030000",
            "e8030000", // "b", symlink
            "0100000000000000",
            "02000000",
            "0500000000000000",
            "06000000",
            "0000000000000000",
            "0300000000000000",
            "0400000000000000",
            "01000000",
            "0000000000000000",
            "0000",
            "01000000",
            "61", // no xattrs, target "a"
        ]
        .concat();
        assert_eq!(hex::encode(&b), expect);
        assert_eq!(Tree::decode(&b).unwrap(), sample());
    }

    /// A version 1 tree (written before entries had a ctime) decodes, its
    /// entries' ctime unknown; written again it is version 2.
    #[test]
    fn version_1_trees_still_decode_with_ctime_unknown() {
        let v1 = [
            "01",
            "02000000", // version, entry count
            "0100",
            "61",
            "01",
            "a4010000",
            "e8030000",
            "e8030000", // name "a", file, 0644, uid, gid
            "0100000000000000",
            "02000000",
            "0700000000000000", // mtime, size 7
            "0300000000000000",
            "0400000000000000",
            "01000000",
            "0000000000000000", // dev, inode, links, rdev
            "0100",
            "0600",
            "757365722e6b",
            "01000000",
            "76", // one xattr user.k=v
            "01000000",
            "0505050505050505050505050505050505050505050505050505050505050505",
            "07000000",
            "0100",
            "62",
            "03",
            "a4010000",
            "e8030000",
            "e8030000", // "b", symlink
            "0100000000000000",
            "02000000",
            "0000000000000000",
            "0300000000000000",
            "0400000000000000",
            "01000000",
            "0000000000000000",
            "0000",
            "01000000",
            "61", // no xattrs, target "a"
        ]
        .concat();
        let t = Tree::decode(&hex::decode(v1).unwrap()).unwrap();
        let mut expect = sample();
        for e in &mut expect.entries {
            e.ctime = None;
        }
        assert_eq!(t, expect);
        let again = t.encode();
        assert_eq!(again[0], VERSION);
        assert_eq!(Tree::decode(&again).unwrap(), expect);
        // The smallest version 1 entry is 66 bytes (not 78).
        let mut p = file("p", vec![]);
        (p.kind, p.ctime, p.content) = (Kind::Fifo, None, Content::None);
        p.xattrs.clear();
        let mut b = Tree {
            entries: vec![p.clone()],
        }
        .encode();
        b[0] = 1;
        b.drain(5 + 2 + 1 + 1 + 12 + 12..5 + 2 + 1 + 1 + 12 + 24);
        assert_eq!(b.len(), 1 + 4 + 66);
        assert_eq!(Tree::decode(&b).unwrap(), Tree { entries: vec![p] });
    }

    #[test]
    fn ctime_round_trips_and_is_validated() {
        let mut t = sample();
        t.entries[0].ctime = Some(Timestamp {
            secs: -3,
            nanos: 999_999_999,
        });
        t.entries[1].ctime = None;
        assert_eq!(Tree::decode(&t.encode()).unwrap(), t);
        // ctime sits right after the mtime: 5 + 2 + 1 (name) + 1 + 12 + 12.
        let at = 5 + 2 + 1 + 1 + 12 + 12;
        for (secs, nanos) in [(0i64, 1_000_000_000u32), (1, u32::MAX)] {
            let mut b = sample().encode();
            b[at..at + 8].copy_from_slice(&secs.to_le_bytes());
            b[at + 8..at + 12].copy_from_slice(&nanos.to_le_bytes());
            assert!(
                Tree::decode(&b).is_err(),
                "ctime ({secs}, {nanos}) accepted"
            );
        }
        let mut b = sample().encode();
        b[0] = 3;
        assert!(Tree::decode(&b).is_err());
    }

    #[test]
    fn hostile_names_and_order_are_rejected() {
        for bad_name in ["..", ".", "a/b", "", "a\0"] {
            let mut t = sample();
            t.entries[0].name = bad_name.as_bytes().to_vec();
            assert!(Tree::decode(&t.encode()).is_err(), "{bad_name:?} accepted");
        }
        let mut t = sample();
        t.entries.swap(0, 1);
        assert!(Tree::decode(&t.encode()).is_err());
        let mut t = sample();
        t.entries[0].size = 8;
        assert!(Tree::decode(&t.encode()).is_err());
    }

    #[test]
    fn smallest_entries_decode() {
        let mut e = file("p", vec![]);
        e.kind = Kind::Fifo;
        e.xattrs.clear();
        e.content = Content::None;
        let t = Tree { entries: vec![e] };
        assert_eq!(t.encode().len(), 1 + 4 + MIN_ENTRY_V2);
        assert_eq!(MIN_ENTRY_V2, 78);
        assert_eq!(Tree::decode(&t.encode()).unwrap(), t);
    }

    #[test]
    fn find_by_name() {
        let t = sample();
        assert_eq!(t.find(b"b").unwrap().kind, Kind::Symlink);
        assert!(t.find(b"c").is_none());
    }

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Tree::decode(&b);
        }

        #[test]
        fn round_trip(
            names in proptest::collection::btree_set("[a-z]{1,8}", 0..20),
            secs in any::<i64>(),
            ctime in proptest::option::of((any::<i64>(), 0u32..1_000_000_000)),
        ) {
            let mut t = Tree::default();
            for n in names {
                let mut e = file(&n, vec![]);
                e.mtime.secs = secs;
                e.ctime = ctime.map(|(secs, nanos)| Timestamp { secs, nanos });
                t.entries.push(e);
            }
            prop_assert_eq!(Tree::decode(&t.encode()).unwrap(), t);
        }
    }
}

//! What changed between two snapshots (`secrate diff`), from their trees
//! alone: a subtree whose tree id is the same on both sides is the same
//! content, attributes and all, and is skipped without being read; a file
//! whose chunk list is the same holds the same bytes, so no data is read.
//! A diff of two snapshots of a huge tree with one change reads the trees
//! on the path to that change only.

use crate::crypto::Id;
use crate::error::Result;
use crate::ops::backup::PARTIAL_TAG;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Content, Entry, Kind};
use crate::repo::Repository;

/// How an entry differs between the old and the new snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Only in the new snapshot.
    Added,
    /// Only in the old snapshot.
    Removed,
    /// The same kind, other content (bytes, symlink target, device).
    Modified,
    /// The same content, other attributes: mode, owner, mtime, xattrs.
    Metadata,
    /// Another kind of entry under the same name.
    Type,
}

impl Change {
    /// The letter `secrate diff` prints (restic's).
    pub fn letter(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::Metadata => 'U',
            Change::Type => 'T',
        }
    }
}

/// Told each change: its kind, its path, and the entry (the new side's,
/// or the old side's for `Removed`).
pub type Emit<'a> = dyn FnMut(Change, &[u8], &Entry) -> Result<()> + 'a;

/// Counts of what `diff` found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiffStats {
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
    pub metadata: u64,
    pub type_changed: u64,
    /// Bytes of the files on the old side of every change and on the new.
    pub old_bytes: u64,
    pub new_bytes: u64,
    /// Trees read (two per directory that changed, one per directory
    /// added or removed).
    pub trees_read: u64,
}

/// Compare directory tree `old` with `new`, calling `emit` with each
/// changed path (below `prefix`, as bytes) in name order, a directory
/// before what is below it. Every entry below a directory added or
/// removed is named too. `entry` is the new side's entry, or the old
/// side's for `Removed`.
pub fn diff_trees(
    repo: &Repository,
    old: &Id,
    new: &Id,
    prefix: &[u8],
    emit: &mut Emit,
) -> Result<DiffStats> {
    run(repo, Task::Dirs(*old, *new, prefix.to_vec()), emit)
}

/// Compare two single entries at `path` (a path given to `secrate diff`
/// that names a file, or is missing on one side), and what is below them.
pub fn diff_entries(
    repo: &Repository,
    old: Option<&Entry>,
    new: Option<&Entry>,
    path: &[u8],
    emit: &mut Emit,
) -> Result<DiffStats> {
    run(
        repo,
        Task::Pair(old.cloned(), new.cloned(), path.to_vec()),
        emit,
    )
}

/// One sentence for each side of a diff that is tagged `partial` (a
/// backup that could not read some entries): what it could not read is
/// missing from it, or saved without its extended attributes, so it shows
/// as added, removed or `U` though the source may not have changed there.
/// Empty when both sides are whole.
pub fn partial_notes(old: (&Id, &Snapshot), new: (&Id, &Snapshot)) -> Vec<String> {
    let partial = |s: &Snapshot| s.tags.iter().any(|t| t == PARTIAL_TAG);
    let mut notes = Vec::new();
    if partial(old.1) {
        notes.push(format!(
            "the old snapshot {} is tagged `{PARTIAL_TAG}`: what its backup could not read is missing from it and shows here as added (`+`, or `U` for extended attributes) though it may not be new",
            old.0.short()
        ));
    }
    if partial(new.1) {
        notes.push(format!(
            "the new snapshot {} is tagged `{PARTIAL_TAG}`: what its backup could not read is missing from it and shows here as removed (`-`, or `U` for extended attributes) though it may still be there",
            new.0.short()
        ));
    }
    notes
}

/// What is left to compare. The walk keeps its own stack, not the
/// thread's: a store can hand out trees nested as deep as it likes.
enum Task {
    /// Two directory trees at a path.
    Dirs(Id, Id, Vec<u8>),
    /// One name, as it was and as it is.
    Pair(Option<Entry>, Option<Entry>, Vec<u8>),
    /// An entry on one side only, and all below it.
    Whole(Change, Entry, Vec<u8>),
    /// Everything in a tree that is on one side only.
    Below(Change, Id, Vec<u8>),
}

fn run(repo: &Repository, first: Task, emit: &mut Emit) -> Result<DiffStats> {
    let mut d = Diff {
        repo,
        stats: DiffStats::default(),
        emit,
        todo: vec![first],
    };
    while let Some(t) = d.todo.pop() {
        d.task(t)?;
    }
    Ok(d.stats)
}

struct Diff<'a, 'e> {
    repo: &'a Repository,
    stats: DiffStats,
    emit: &'e mut Emit<'e>,
    todo: Vec<Task>,
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = prefix.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Whether `a` and `b`, of the same kind, hold the same content.
fn same_content(a: &Entry, b: &Entry) -> bool {
    a.size == b.size && a.rdev == b.rdev && a.content == b.content
}

/// Whether the attributes a program sees are the same. The ctime, the
/// link count and the source's device and inode numbers are left out:
/// they change with every copy of a tree, not with what it holds.
fn same_attributes(a: &Entry, b: &Entry) -> bool {
    a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.mtime == b.mtime
        && a.xattrs == b.xattrs
}

impl Diff<'_, '_> {
    fn task(&mut self, t: Task) -> Result<()> {
        match t {
            Task::Dirs(old, new, path) => self.dirs(&old, &new, &path),
            Task::Pair(old, new, path) => self.pair(old, new, path),
            Task::Whole(c, e, path) => self.whole(c, e, path),
            Task::Below(c, id, path) => {
                let t = self.repo.read_tree(&id)?;
                self.stats.trees_read += 1;
                for e in t.entries.iter().rev() {
                    let p = join(&path, &e.name);
                    self.todo.push(Task::Whole(c, e.clone(), p));
                }
                Ok(())
            }
        }
    }

    fn dirs(&mut self, old: &Id, new: &Id, prefix: &[u8]) -> Result<()> {
        if old == new {
            return Ok(());
        }
        let (o, n) = (self.repo.read_tree(old)?, self.repo.read_tree(new)?);
        self.stats.trees_read += 2;
        let (mut olds, mut news) = (o.entries.iter().peekable(), n.entries.iter().peekable());
        let mut pairs = Vec::new();
        loop {
            // Both lists are sorted by name (`Tree::decode` checks).
            let (a, b) = match (olds.peek(), news.peek()) {
                (None, None) => break,
                (Some(a), Some(b)) if a.name == b.name => (olds.next(), news.next()),
                (Some(a), Some(b)) if a.name < b.name => (olds.next(), None),
                (Some(_), None) => (olds.next(), None),
                _ => (None, news.next()),
            };
            if a == b {
                continue;
            }
            let name = a.or(b).map(|e| e.name.as_slice()).unwrap_or_default();
            pairs.push(Task::Pair(a.cloned(), b.cloned(), join(prefix, name)));
        }
        self.todo.extend(pairs.into_iter().rev());
        Ok(())
    }

    fn pair(&mut self, old: Option<Entry>, new: Option<Entry>, path: Vec<u8>) -> Result<()> {
        let (o, n) = match (old, new) {
            (None, None) => return Ok(()),
            (Some(o), None) => return self.whole(Change::Removed, o, path),
            (None, Some(n)) => return self.whole(Change::Added, n, path),
            (Some(o), Some(n)) => (o, n),
        };
        if o.kind != n.kind {
            self.note(Change::Type, &path, &o, &n)?;
            // What was below the old directory went (named first); what
            // is below the new one came.
            if let Some(sub) = n.subtree() {
                self.todo
                    .push(Task::Below(Change::Added, sub, path.clone()));
            }
            if let Some(sub) = o.subtree() {
                self.todo.push(Task::Below(Change::Removed, sub, path));
            }
            return Ok(());
        }
        if o.kind == Kind::Dir {
            if !same_attributes(&o, &n) {
                self.note(Change::Metadata, &path, &o, &n)?;
            }
            if let (Some(a), Some(b)) = (o.subtree(), n.subtree()) {
                self.todo.push(Task::Dirs(a, b, path));
            }
            return Ok(());
        }
        if !same_content(&o, &n) {
            self.note(Change::Modified, &path, &o, &n)
        } else if !same_attributes(&o, &n) {
            self.note(Change::Metadata, &path, &o, &n)
        } else {
            Ok(())
        }
    }

    fn note(&mut self, c: Change, path: &[u8], o: &Entry, n: &Entry) -> Result<()> {
        match c {
            Change::Modified => self.stats.modified += 1,
            Change::Metadata => self.stats.metadata += 1,
            _ => self.stats.type_changed += 1,
        }
        if c != Change::Metadata {
            self.stats.old_bytes += file_bytes(o);
            self.stats.new_bytes += file_bytes(n);
        }
        (self.emit)(c, path, n)
    }

    /// An entry on one side only; what is below it comes next.
    fn whole(&mut self, c: Change, e: Entry, path: Vec<u8>) -> Result<()> {
        if c == Change::Added {
            self.stats.added += 1;
            self.stats.new_bytes += file_bytes(&e);
        } else {
            self.stats.removed += 1;
            self.stats.old_bytes += file_bytes(&e);
        }
        (self.emit)(c, &path, &e)?;
        if let Some(sub) = e.subtree() {
            self.todo.push(Task::Below(c, sub, path));
        }
        Ok(())
    }
}

fn file_bytes(e: &Entry) -> u64 {
    match e.content {
        Content::Chunks(_) | Content::None if e.kind == Kind::File => e.size,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::crypto::BlobKind;
    use crate::repo::tree::tests::file;
    use crate::repo::tree::{ChunkRef, Tree};
    use crate::repo::writer::{BlobWriter, StoreSink};

    fn dir_entry(name: &str, id: Id) -> Entry {
        let mut e = file(name, vec![]);
        e.kind = Kind::Dir;
        e.mode = 0o755;
        e.size = 0;
        e.content = Content::Subtree(id);
        e
    }

    /// Two snapshots' worth of trees: 50 directories of 20 files, one file
    /// changed in the second, one directory's mode changed, one file
    /// removed, a directory added. The diff names exactly those, reads the
    /// trees on their paths only, and a diff of a tree with itself reads
    /// nothing.
    #[test]
    fn a_diff_names_what_changed_and_reads_only_its_trees() {
        let repo = Arc::new(crate::repo::tests::test_init("memory://diff"));
        let w = BlobWriter::new(repo.clone(), Arc::new(StoreSink(repo.clone())), 1);
        let chunk = |data: &[u8]| ChunkRef {
            id: w.add(BlobKind::Data, data).unwrap(),
            len: data.len() as u32,
        };
        let tree = |mut entries: Vec<Entry>| {
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            w.add(BlobKind::Tree, &Tree { entries }.encode()).unwrap()
        };
        let files = |d: usize, changed: bool| -> Vec<Entry> {
            (0..20)
                .filter(|f| !(changed && d == 7 && *f == 3))
                .map(|f| {
                    let data = if changed && d == 4 && f == 2 {
                        b"new".to_vec()
                    } else {
                        format!("{d} {f}").into_bytes()
                    };
                    let mut e = file(&format!("f{f:02}"), vec![chunk(&data)]);
                    e.size = data.len() as u64;
                    e
                })
                .collect()
        };
        let root = |changed: bool| {
            let mut dirs: Vec<Entry> = (0..50)
                .map(|d| {
                    let mut e = dir_entry(&format!("d{d:02}"), tree(files(d, changed)));
                    if changed && d == 9 {
                        e.mode = 0o700;
                    }
                    e
                })
                .collect();
            if changed {
                let inner = tree(vec![file("x", vec![chunk(b"x")])]);
                dirs.push(dir_entry("new", inner));
            }
            tree(dirs)
        };
        let (old, new) = (root(false), root(true));
        let (packs, _) = w.finish().unwrap();
        repo.write_index(&packs).unwrap();

        let mut seen = Vec::new();
        let stats = diff_trees(&repo, &old, &new, b"", &mut |c, p, _| {
            seen.push(format!("{} {}", c.letter(), String::from_utf8_lossy(p)));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            ["M d04/f02", "- d07/f03", "U d09", "+ new", "+ new/x"]
        );
        // The roots, then d04 and d07 on both sides, then the new one.
        assert_eq!(stats.trees_read, 2 + 4 + 1);
        assert_eq!((stats.added, stats.removed, stats.modified), (2, 1, 1));
        assert_eq!(stats.metadata, 1);
        assert_eq!((stats.old_bytes, stats.new_bytes), (3 + 3, 3 + 1));

        let none = diff_trees(&repo, &new, &new, b"", &mut |_, _, _| {
            panic!("a tree differs from itself")
        })
        .unwrap();
        assert_eq!(none, DiffStats::default());
    }
}

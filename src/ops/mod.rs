//! Operations on a repository that the CLI (and later the mount) drive:
//! backup, restore, check, and reading paths of a snapshot. They report
//! through `Progress` and return summaries; they never print.

pub mod backup;
pub mod check;
pub mod diff;
pub mod forget;
pub mod prune;
pub mod repair;
pub mod restore;

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::crypto::BlobKind;
use crate::error::{Error, Result};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Entry, Kind};
use crate::repo::Repository;

/// What a path inside a snapshot names.
pub enum Resolved {
    /// The snapshot's root directory.
    Root,
    Entry(Entry),
}

/// Split a snapshot path (`a/b/c`, leading `/` optional) into components.
/// Paths are bytes, as names are: a name need not be UTF-8.
pub fn components(path: &[u8]) -> Result<Vec<&[u8]>> {
    let parts: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
        .collect();
    if parts.contains(&&b".."[..]) {
        return Err(Error::Invalid(format!(
            "path {:?} may not contain \"..\"",
            shown(path)
        )));
    }
    Ok(parts)
}

/// A path or name for a message (not UTF-8: replacement characters).
pub fn shown(path: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(path)
}

/// Find `path` in a snapshot.
pub fn resolve(repo: &Repository, snap: &Snapshot, path: &[u8]) -> Result<Resolved> {
    let parts = components(path)?;
    let mut tree_id = snap.root;
    let mut found = None;
    for (i, part) in parts.iter().enumerate() {
        let tree = repo.read_tree(&tree_id)?;
        let e = tree
            .find(part)
            .ok_or_else(|| Error::Invalid(format!("{:?} is not in the snapshot", shown(path))))?
            .clone();
        if i + 1 < parts.len() {
            tree_id = e.subtree().ok_or_else(|| {
                Error::Invalid(format!(
                    "{:?} is not in the snapshot ({} is not a directory)",
                    shown(path),
                    shown(part)
                ))
            })?;
        }
        found = Some(e);
    }
    Ok(match found {
        None => Resolved::Root,
        Some(e) => Resolved::Entry(e),
    })
}

/// Visit every entry under a directory tree, depth-first in name order,
/// with its path below the tree (`prefix/name`, as bytes).
pub fn walk(
    repo: &Repository,
    tree: &crate::crypto::Id,
    prefix: &[u8],
    visit: &mut dyn FnMut(&[u8], &Entry) -> Result<()>,
) -> Result<()> {
    // Its own stack of the directories on the way down, not the thread's:
    // a store can hand out trees nested as deep as it likes.
    let mut stack = vec![(repo.read_tree(tree)?, 0, prefix.to_vec())];
    while let Some((t, next, prefix)) = stack.last_mut() {
        let Some(e) = t.entries.get(*next) else {
            stack.pop();
            continue;
        };
        *next += 1;
        let mut path = prefix.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&e.name);
        visit(&path, e)?;
        if let Some(sub) = e.subtree() {
            stack.push((repo.read_tree(&sub)?, 0, path));
        }
    }
    Ok(())
}

/// Write a file's contents from a snapshot to `out`.
pub fn cat(repo: &Repository, snap: &Snapshot, path: &[u8], out: &mut dyn Write) -> Result<u64> {
    if !repo.keys().can_read_data() {
        return Err(Error::WriteOnly {
            what: "cat needs a key that can read".into(),
        });
    }
    let e = match resolve(repo, snap, path)? {
        Resolved::Entry(e) if e.kind == Kind::File => e,
        Resolved::Entry(e) if e.kind == Kind::Symlink => {
            return Err(Error::Invalid(format!(
                "{:?} is a symbolic link; cat reads regular files",
                shown(path)
            )))
        }
        _ => {
            return Err(Error::Invalid(format!(
                "{:?} is not a regular file",
                shown(path)
            )))
        }
    };
    let mut n = 0;
    for c in e.chunks() {
        let data = repo.read_blob(BlobKind::Data, &c.id)?;
        out.write_all(&data)
            .map_err(|e| Error::io("standard output", e))?;
        n += data.len() as u64;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::repo::tree::tests::file;
    use crate::repo::tree::{Content, Tree};
    use crate::repo::writer::{BlobWriter, StoreSink};

    /// Trees nested 30,000 deep (a store can hand out any): `walk` (`ls`)
    /// and `diff` name every level in order and do not overflow the
    /// stack. (Before, `walk` recursed once per level: a test thread's
    /// 2 MiB stack overflowed, which aborts the process.)
    #[test]
    fn trees_nested_very_deep_are_walked_without_recursion() {
        const DEPTH: usize = 30_000;
        let repo = Arc::new(crate::repo::tests::test_init("memory://deep-walk"));
        let w = BlobWriter::new(repo.clone(), Arc::new(StoreSink(repo.clone())), 1);
        let mut below = w
            .add(BlobKind::Tree, &Tree { entries: vec![] }.encode())
            .unwrap();
        let empty = below;
        for _ in 0..DEPTH {
            let mut d = file("d", vec![]);
            d.kind = Kind::Dir;
            d.content = Content::Subtree(below);
            below = w
                .add(BlobKind::Tree, &Tree { entries: vec![d] }.encode())
                .unwrap();
        }
        let (packs, _) = w.finish().unwrap();
        repo.write_index(&packs).unwrap();
        let mut n = 0;
        walk(&repo, &below, b"", &mut |p, _| {
            n += 1;
            assert_eq!(p.len(), 2 * n - 1, "out of order");
            Ok(())
        })
        .unwrap();
        assert_eq!(n, DEPTH);
        let mut removed = 0;
        diff::diff_trees(&repo, &below, &empty, b"", &mut |c, _, _| {
            assert_eq!(c, diff::Change::Removed);
            removed += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(removed, DEPTH);
    }
}

/// Where an entry is, for messages (and for reading xattrs by path where
/// there is no `/proc`): its name and the place of its directory, up to the
/// source. Each level of a walk holds only its own name, so a walk `d`
/// levels deep holds `O(d)` bytes of path; the full path is made only when
/// asked for. Before, each level held its full path: `O(d²)` bytes, 559 MiB
/// at 20,000 levels of one-letter names. Backup and restore walk by it.
#[derive(Clone, Copy)]
pub(crate) enum Place<'a> {
    Source(&'a Path),
    In {
        dir: &'a Place<'a>,
        name: &'a [u8],
        depth: usize,
    },
}

impl<'a> Place<'a> {
    pub(crate) fn child(&'a self, name: &'a [u8]) -> Place<'a> {
        Place::In {
            dir: self,
            name,
            depth: self.depth() + 1,
        }
    }

    /// Levels below the source.
    pub(crate) fn depth(&self) -> usize {
        match self {
            Place::Source(_) => 0,
            Place::In { depth, .. } => *depth,
        }
    }

    /// The full path (built by a loop: a deep place must not recurse).
    pub(crate) fn path(&self) -> PathBuf {
        let (source, names) = self.names();
        let len = source.as_os_str().len() + names.iter().map(|n| n.len() + 1).sum::<usize>();
        let mut path = PathBuf::with_capacity(len);
        path.push(source);
        path.extend(names.iter().rev());
        path
    }

    /// The path below the source (empty for the source itself).
    pub(crate) fn rel(&self) -> PathBuf {
        self.names().1.iter().rev().collect()
    }

    /// The source, and the names below it, innermost first.
    fn names(&self) -> (&'a Path, Vec<&'a OsStr>) {
        let mut names = Vec::with_capacity(self.depth());
        let mut at = *self;
        loop {
            match at {
                Place::Source(p) => return (p, names),
                Place::In { dir, name, .. } => {
                    names.push(OsStr::from_bytes(name));
                    at = *dir;
                }
            }
        }
    }
}

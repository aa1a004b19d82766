//! Operations on a repository that the CLI (and later the mount) drive:
//! backup, restore, check, and reading paths of a snapshot. They report
//! through `Progress` and return summaries; they never print.

pub mod backup;
pub mod check;
pub mod forget;
pub mod prune;
pub mod repair;
pub mod restore;

use std::io::Write;

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
pub fn components(path: &str) -> Result<Vec<&str>> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(Error::Invalid(format!(
            "path {path:?} may not contain \"..\""
        )));
    }
    Ok(parts)
}

/// Find `path` in a snapshot.
pub fn resolve(repo: &Repository, snap: &Snapshot, path: &str) -> Result<Resolved> {
    let parts = components(path)?;
    let mut tree_id = snap.root;
    let mut found = None;
    for (i, part) in parts.iter().enumerate() {
        let tree = repo.read_tree(&tree_id)?;
        let e = tree
            .find(part.as_bytes())
            .ok_or_else(|| Error::Invalid(format!("{path:?} is not in the snapshot")))?
            .clone();
        if i + 1 < parts.len() {
            tree_id = e.subtree().ok_or_else(|| {
                Error::Invalid(format!(
                    "{path:?} is not in the snapshot ({part} is not a directory)"
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
/// with its path relative to the snapshot root.
pub fn walk(
    repo: &Repository,
    tree: &crate::crypto::Id,
    prefix: &str,
    visit: &mut dyn FnMut(&str, &Entry) -> Result<()>,
) -> Result<()> {
    let t = repo.read_tree(tree)?;
    for e in &t.entries {
        let name = String::from_utf8_lossy(&e.name);
        let path = if prefix.is_empty() {
            name.into_owned()
        } else {
            format!("{prefix}/{name}")
        };
        visit(&path, e)?;
        if let Some(sub) = e.subtree() {
            walk(repo, &sub, &path, visit)?;
        }
    }
    Ok(())
}

/// Write a file's contents from a snapshot to `out`.
pub fn cat(repo: &Repository, snap: &Snapshot, path: &str, out: &mut dyn Write) -> Result<u64> {
    if !repo.keys().can_read_data() {
        return Err(Error::WriteOnly {
            what: "cat needs a key that can read".into(),
        });
    }
    let e = match resolve(repo, snap, path)? {
        Resolved::Entry(e) if e.kind == Kind::File => e,
        Resolved::Entry(e) if e.kind == Kind::Symlink => {
            return Err(Error::Invalid(format!(
                "{path:?} is a symbolic link; cat reads regular files"
            )))
        }
        _ => return Err(Error::Invalid(format!("{path:?} is not a regular file"))),
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

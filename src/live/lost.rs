//! Marking data `secrate repair` recorded as lost in the live tree.
//!
//! A damage record (src/repo/damage.rs) lists blobs found nowhere. Files of
//! the live tree whose sealed chunk lists reference one keep their name,
//! size and surviving chunks; each lost chunk becomes `Id::LOST` of the same
//! length, so reads of that range give EIO (never zeros) and every later
//! seal writes the marker, never the lost id. A file with a staged copy
//! equal to its chunks is made dirty instead: the next seal stores its
//! chunks again from the local copy (the same ids, which heals the old
//! snapshots too). A directory whose own tree blob was lost loses its
//! recorded tree id and is encoded again. Rewriting a damaged file (a
//! truncation to zero and new data) heals it.
//!
//! Runs at mount start, after recovery and import: damage records are
//! written under the writer lock, which a writable mount holds for its whole
//! life, so no record can appear while it runs.
//!
//! A pack can also go missing with no record (deleted from the store, a
//! bucket rule): the mount's index forgets it at start. Clean staged copies
//! whose chunks it held are restaged the same way (`restage_unindexed`),
//! and eviction never drops a copy with a chunk the index lacks
//! (`Live::evictable`): that copy may be the last one there is.

use std::collections::HashMap;

use crate::crypto::{BlobKind, Id};
use crate::live::{Body, Live, LiveResult, ROOT};

/// What `mark_lost` changed.
#[derive(Debug, Default)]
pub struct Marked {
    /// Paths of files with ranges now marked lost, and the bytes lost.
    pub damaged: Vec<(String, u64)>,
    /// Paths of files whose staged copy will store the lost chunks again.
    pub restaged: Vec<String>,
    /// Directories whose lost tree blob will be encoded again.
    pub dirs: usize,
}

impl Live {
    /// Mark every reference the live tree holds to a blob in `lost`.
    pub fn mark_lost(&self, lost: &HashMap<Id, BlobKind>) -> LiveResult<Marked> {
        let mut out = Marked::default();
        if lost.is_empty() {
            return Ok(out);
        }
        let hits = self.records_where(|body| match body {
            Body::Dir { tree: Some(id) } => lost.contains_key(id),
            Body::File {
                chunks: Some(c), ..
            } => c.iter().any(|c| lost.contains_key(&c.id)),
            _ => false,
        })?;
        for ino in hits {
            let path = self.path_of(ino)?;
            self.tx(|tx| {
                let mut rec = tx.get(ino)?;
                match &mut rec.body {
                    Body::Dir { .. } => out.dirs += 1,
                    Body::File { staged: true, .. } => {
                        restage(tx, ino, &mut rec)?;
                        out.restaged.push(path.clone());
                    }
                    Body::File {
                        chunks: Some(c), ..
                    } => {
                        let mut bytes = 0;
                        for r in c.iter_mut().filter(|r| lost.contains_key(&r.id)) {
                            r.id = Id::LOST;
                            bytes += r.len as u64;
                        }
                        out.damaged.push((path.clone(), bytes));
                    }
                    _ => return Ok(()),
                }
                tx.stamp(ino, &mut rec)
            })?;
        }
        self.commit(true)?;
        Ok(out)
    }

    /// Make dirty again every clean staged copy with a chunk that
    /// `indexed` does not know: its pack went missing from the store (the
    /// index forgot it at start, `Repository::forget_missing_packs`) with
    /// no damage record to say so. The next seal stores those chunks again
    /// from the copy, the only one left (eviction would otherwise drop it:
    /// found by review). Files with no staged copy are left as they are:
    /// nothing here can bring their chunks back (`secrate repair` can).
    /// Returns the paths restaged.
    pub fn restage_unindexed(&self, indexed: impl Fn(&Id) -> bool) -> LiveResult<Vec<String>> {
        // Every clean copy is in that set (copy-up and seal put it there;
        // eviction looks nowhere else): no scan of the whole tree.
        let clean = self.tx(|tx| tx.clean_staged())?;
        let mut out = Vec::new();
        for ino in clean {
            let hit = match self.inode(ino) {
                Ok(rec) => match rec.body {
                    Body::File {
                        staged: true,
                        chunks: Some(c),
                        ..
                    } => c.iter().any(|c| !indexed(&c.id)),
                    _ => false,
                },
                Err(crate::live::LiveError::NotFound) => false,
                Err(e) => return Err(e),
            };
            if !hit {
                continue;
            }
            let path = self.path_of(ino)?;
            self.tx(|tx| {
                let mut rec = tx.get(ino)?;
                restage(tx, ino, &mut rec)?;
                out.push(path.clone());
                tx.stamp(ino, &mut rec)
            })?;
        }
        if !out.is_empty() {
            self.commit(true)?;
        }
        Ok(out)
    }

    /// Inodes whose committed record's body matches `hit`: a read of
    /// everything committed, so callers change them in the shared write
    /// transaction afterwards.
    fn records_where(&self, hit: impl Fn(&Body) -> bool) -> LiveResult<Vec<u64>> {
        let mut v = Vec::new();
        self.each_record(|ino, rec| {
            if hit(&rec.body) {
                v.push(ino);
            }
        })?;
        Ok(v)
    }

    /// One path of `ino` from the root (for messages), `?` where unknown.
    fn path_of(&self, ino: u64) -> LiveResult<String> {
        self.tx(|tx| {
            let mut parts: Vec<String> = Vec::new();
            let mut cur = ino;
            for _ in 0..4096 {
                if cur == ROOT {
                    break;
                }
                let rec = tx.get(cur)?;
                let Some(&parent) = tx.parents_of(cur, &rec)?.first() else {
                    parts.push("?".into());
                    break;
                };
                let name = tx
                    .children(parent)?
                    .into_iter()
                    .find(|(_, c)| *c == cur)
                    .map(|(n, _)| String::from_utf8_lossy(&n).into_owned())
                    .unwrap_or_else(|| "?".into());
                parts.push(name);
                cur = parent;
            }
            parts.reverse();
            Ok(format!("/{}", parts.join("/")))
        })
    }
}

/// A file whose staged copy equals its chunks becomes dirty: the next
/// seal stores its content (and so its chunks) again from the copy.
fn restage(
    tx: &mut crate::live::Tx<'_, '_>,
    ino: u64,
    rec: &mut crate::live::Inode,
) -> LiveResult<()> {
    if let Body::File { chunks, .. } = &mut rec.body {
        *chunks = None;
    }
    tx.mark_dirty_file(ino)
}

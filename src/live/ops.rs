//! Namespace and attribute operations on the live tree, with POSIX
//! semantics: create, mkdir, symlink, link, unlink, rmdir, rename (with
//! RENAME_NOREPLACE and RENAME_EXCHANGE), setattr, extended attributes.
//!
//! Each runs in the shared transaction under the shared barrier, and stamps
//! what it changes so the next seal records it.

use crate::live::{now, Body, Inode, Live, LiveError, LiveResult, Tx, ROOT};
use crate::repo::tree::{Kind, Timestamp};

/// An inode number and its record, as operations return them.
pub type Attr = (u64, Inode);

/// Which attributes `setattr` changes (size is handled by the caller).
#[derive(Default, Debug, Clone)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
    pub ctime: Option<Timestamp>,
}

/// Which set-ID bits a change clears from a non-directory. Under
/// FUSE_HANDLE_KILLPRIV_V2 the kernel leaves this to the filesystem; what
/// the caller may keep is decided by `fs` (it knows the caller).
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillSetid {
    #[default]
    Keep,
    /// Set-user-ID, and set-group-ID when group-executable.
    Exec,
    /// Both, also a set-group-ID without group execute.
    All,
}

impl KillSetid {
    /// `r`'s mode with the bits this clears cleared.
    pub fn apply(self, r: &Inode) -> u32 {
        if r.kind == Kind::Dir {
            return r.mode;
        }
        match self {
            KillSetid::Keep => r.mode,
            KillSetid::Exec if r.mode & 0o2010 == 0o2010 => r.mode & !0o6000,
            KillSetid::Exec => r.mode & !0o4000,
            KillSetid::All => r.mode & !0o6000,
        }
    }
}

const NAME_MAX: usize = 255;

fn check_name(name: &[u8]) -> LiveResult<()> {
    if name.len() > NAME_MAX {
        return Err(LiveError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(LiveError::Invalid);
    }
    Ok(())
}

fn dir_of(tx: &Tx, ino: u64) -> LiveResult<Inode> {
    let d = tx.get(ino)?;
    if d.kind != Kind::Dir {
        return Err(LiveError::NotDir);
    }
    if d.nlink == 0 {
        // Removed; the kernel refuses entries in it before asking us.
        return Err(LiveError::NotFound);
    }
    Ok(d)
}

/// Parent's mtime and ctime move when its entries change.
fn touch_dir(tx: &mut Tx, ino: u64, nlink_delta: i32) -> LiveResult<()> {
    tx.modify(ino, |d| {
        let t = now();
        d.mtime = t;
        d.ctime = t;
        d.nlink = (d.nlink as i64 + nlink_delta as i64).max(2) as u32;
        Ok(())
    })
}

pub struct NewNode<'a> {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub symlink: Option<&'a [u8]>,
}

#[cfg(test)]
impl NewNode<'static> {
    /// A regular file, mode 0644, owned by root (for tests).
    pub fn test_file() -> Self {
        NewNode {
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            rdev: 0,
            symlink: None,
        }
    }
}

impl Live {
    pub fn lookup(&self, parent: u64, name: &[u8]) -> LiveResult<Attr> {
        self.tx(|tx| {
            dir_of(tx, parent)?;
            let ino = tx.lookup(parent, name)?.ok_or(LiveError::NotFound)?;
            Ok((ino, tx.get(ino)?))
        })
    }

    /// The inode `name` in `parent` names now, if any (no checks).
    pub fn child(&self, parent: u64, name: &[u8]) -> LiveResult<Option<u64>> {
        self.tx(|tx| tx.lookup(parent, name))
    }

    pub fn children(&self, dir: u64) -> LiveResult<Vec<(Vec<u8>, u64, Kind)>> {
        self.tx(|tx| {
            dir_of(tx, dir)?;
            tx.children_kinds(dir)
        })
    }

    /// Create a file, directory, symlink or special node; `open` (create,
    /// not mknod) counts a regular file open and keeps its new staged
    /// file's handle for the writes that follow, an open(2) of the staged
    /// file saved per file created.
    pub fn create_node(
        &self,
        parent: u64,
        name: &[u8],
        n: NewNode,
        open: bool,
    ) -> LiveResult<Attr> {
        check_name(name)?;
        let _b = self.barrier.read().unwrap_or_else(|e| e.into_inner());
        let staged = n.kind == Kind::File;
        let (ino, rec) = self.tx(|tx| {
            dir_of(tx, parent)?;
            if tx.lookup(parent, name)?.is_some() {
                return Err(LiveError::Exists);
            }
            let ino = tx.alloc_ino()?;
            let t = now();
            let body = match n.kind {
                Kind::Dir => Body::Dir { tree: None },
                Kind::File => Body::File {
                    staged: true,
                    chunks: None,
                    sealed_gen: 0,
                },
                Kind::Symlink => Body::Symlink(n.symlink.unwrap_or_default().to_vec()),
                _ => Body::Special,
            };
            let mut rec = Inode {
                kind: n.kind,
                mode: n.mode & 0o7777,
                uid: n.uid,
                gid: n.gid,
                size: n.symlink.map(|s| s.len() as u64).unwrap_or(0),
                atime: t,
                mtime: t,
                ctime: t,
                nlink: if n.kind == Kind::Dir { 2 } else { 1 },
                rdev: n.rdev,
                origin_dev: self.origin_dev,
                origin_ino: ino,
                parent,
                gen: tx.epoch,
                xattrs: Vec::new(),
                body,
            };
            tx.insert_dirent(parent, name, ino)?;
            if n.kind != Kind::Dir {
                tx.add_parent(ino, parent)?;
            }
            if staged {
                tx.mark_dirty_file(ino)?;
            }
            tx.stamp(ino, &mut rec)?;
            touch_dir(tx, parent, if n.kind == Kind::Dir { 1 } else { 0 })?;
            Ok((ino, rec))
        })?;
        if staged {
            let f = match self.spares.take(ino) {
                Some(f) => f,
                // A stale file of a reused number is emptied.
                None => match std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(self.staged_path(ino))
                {
                    Ok(f) => f,
                    Err(e) => {
                        // No file, no name: a name whose content cannot be
                        // kept would fail every read and every seal.
                        self.tx(|tx| {
                            tx.remove_dirent(parent, name)?;
                            tx.remove_parent(ino, parent)?;
                            tx.remove_inode(ino)
                        })?;
                        return Err(e.into());
                    }
                },
            };
            self.staged_name_given();
            if open {
                self.open_new_file(ino, f);
            }
        }
        Ok((ino, rec))
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> LiveResult<Attr> {
        check_name(newname)?;
        let _b = self.barrier.read().unwrap_or_else(|e| e.into_inner());
        self.tx(|tx| {
            dir_of(tx, newparent)?;
            if tx.lookup(newparent, newname)?.is_some() {
                return Err(LiveError::Exists);
            }
            let mut rec = tx.get(ino)?;
            if rec.kind == Kind::Dir {
                return Err(LiveError::IsDir);
            }
            tx.insert_dirent(newparent, newname, ino)?;
            tx.add_parent(ino, newparent)?;
            rec.nlink += 1;
            rec.ctime = now();
            tx.stamp(ino, &mut rec)?;
            touch_dir(tx, newparent, 0)?;
            Ok((ino, rec))
        })
    }

    /// Remove one name; the inode goes when its last link and last open
    /// handle are gone and the kernel has forgotten it.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> LiveResult<()> {
        let _b = self.barrier.read().unwrap_or_else(|e| e.into_inner());
        self.tx(|tx| {
            dir_of(tx, parent)?;
            let ino = tx.lookup(parent, name)?.ok_or(LiveError::NotFound)?;
            let rec = tx.get(ino)?;
            if rec.kind == Kind::Dir {
                return Err(LiveError::IsDir);
            }
            self.unlinked(remove_name(tx, parent, name, ino, rec)?);
            Ok(())
        })
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> LiveResult<()> {
        if name == b"." {
            return Err(LiveError::Invalid);
        }
        let _b = self.barrier.read().unwrap_or_else(|e| e.into_inner());
        self.tx(|tx| {
            dir_of(tx, parent)?;
            let ino = tx.lookup(parent, name)?.ok_or(LiveError::NotFound)?;
            let d = tx.get(ino)?;
            if d.kind != Kind::Dir {
                return Err(LiveError::NotDir);
            }
            if tx.has_children(ino)? {
                return Err(LiveError::NotEmpty);
            }
            tx.remove_dirent(parent, name)?;
            self.open_files.unlinked(remove_dir(tx, ino, d)?);
            touch_dir(tx, parent, -1)
        })
    }

    /// `unlinked` is the inode that lost its last link, if any: it stays
    /// while the kernel (which sent the request, so knows it) or an open
    /// handle refers to it.
    fn unlinked(&self, unlinked: Option<u64>) {
        if let Some(ino) = unlinked {
            self.open_files.unlinked(ino);
        }
    }

    /// The kernel's FORGET: it returns `n` lookups of `ino`. An inode with
    /// no links goes once the kernel no longer knows it and no handle is
    /// open.
    pub fn forget(&self, ino: u64, n: u64) -> LiveResult<()> {
        if self.open_files.forgotten(ino, n) {
            self.drop_if_unused(ino)?;
        }
        Ok(())
    }

    /// Remove an inode with no links, no open handles, and not known to the
    /// kernel. Each of the last two clears its own mark before calling, so
    /// whichever comes second removes it.
    pub(crate) fn drop_if_unused(&self, ino: u64) -> LiveResult<()> {
        if !self.open_files.unused_orphan(ino) {
            return Ok(());
        }
        let _b = self.barrier.read().unwrap_or_else(|e| e.into_inner());
        let gone = self.tx(|tx| match tx.get(ino) {
            Ok(r) if r.nlink == 0 => {
                tx.remove_inode(ino)?;
                Ok(Some(r.kind))
            }
            _ => Ok(None),
        })?;
        if gone.is_some() {
            self.open_files.removed(ino);
        }
        if gone == Some(Kind::File) {
            self.before_change(ino)?;
            self.discard_staged(ino);
        }
        Ok(())
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        noreplace: bool,
        exchange: bool,
    ) -> LiveResult<()> {
        check_name(newname)?;
        let _b = self.barrier.read().unwrap_or_else(|e| e.into_inner());
        self.tx(|tx| {
            dir_of(tx, parent)?;
            dir_of(tx, newparent)?;
            let src = tx.lookup(parent, name)?.ok_or(LiveError::NotFound)?;
            let dst = tx.lookup(newparent, newname)?;
            let srec = tx.get(src)?;
            if srec.kind == Kind::Dir && is_ancestor(tx, src, newparent)? {
                return Err(LiveError::Invalid);
            }
            if exchange {
                let dst = dst.ok_or(LiveError::NotFound)?;
                let drec = tx.get(dst)?;
                if drec.kind == Kind::Dir && is_ancestor(tx, dst, parent)? {
                    return Err(LiveError::Invalid);
                }
                tx.insert_dirent(parent, name, dst)?;
                tx.insert_dirent(newparent, newname, src)?;
                move_inode(tx, src, parent, newparent)?;
                move_inode(tx, dst, newparent, parent)?;
                let dirs = (srec.kind == Kind::Dir) as i32 - (drec.kind == Kind::Dir) as i32;
                if parent != newparent {
                    touch_dir(tx, parent, -dirs)?;
                    touch_dir(tx, newparent, dirs)?;
                } else {
                    touch_dir(tx, parent, 0)?;
                }
                return Ok(());
            }
            if let Some(dst) = dst {
                if noreplace {
                    return Err(LiveError::Exists);
                }
                if dst == src {
                    return Ok(());
                }
                let drec = tx.get(dst)?;
                match (srec.kind == Kind::Dir, drec.kind == Kind::Dir) {
                    (true, false) => return Err(LiveError::NotDir),
                    (false, true) => return Err(LiveError::IsDir),
                    (true, true) => {
                        if tx.has_children(dst)? {
                            return Err(LiveError::NotEmpty);
                        }
                        tx.remove_dirent(newparent, newname)?;
                        self.open_files.unlinked(remove_dir(tx, dst, drec)?);
                        touch_dir(tx, newparent, -1)?;
                    }
                    (false, false) => {
                        self.unlinked(remove_name(tx, newparent, newname, dst, drec)?)
                    }
                }
            }
            tx.remove_dirent(parent, name)?;
            tx.insert_dirent(newparent, newname, src)?;
            move_inode(tx, src, parent, newparent)?;
            let dirs = (srec.kind == Kind::Dir) as i32;
            if parent != newparent {
                touch_dir(tx, parent, -dirs)?;
                touch_dir(tx, newparent, dirs)?;
            } else {
                touch_dir(tx, parent, 0)?;
            }
            Ok(())
        })
    }

    /// Change what `a` names; `kill` says which set-ID bits go, asked of
    /// the record as it was (a chown decides on the old group).
    pub fn setattr(
        &self,
        ino: u64,
        a: &SetAttr,
        kill: &dyn Fn(&Inode) -> KillSetid,
    ) -> LiveResult<Inode> {
        let _b = self.barrier.read().unwrap_or_else(|e| e.into_inner());
        self.tx(|tx| {
            let mut r = tx.get(ino)?;
            let killed = kill(&r).apply(&r);
            r.mode = a.mode.map_or(killed, |m| m & 0o7777);
            if let Some(u) = a.uid {
                r.uid = u;
            }
            if let Some(g) = a.gid {
                r.gid = g;
            }
            if let Some(t) = a.atime {
                r.atime = t;
            }
            if let Some(t) = a.mtime {
                r.mtime = t;
            }
            r.ctime = a.ctime.unwrap_or_else(now);
            tx.stamp(ino, &mut r)?;
            Ok(r)
        })
    }

    /// What a write does to set-ID bits when the kernel asks for it
    /// (FUSE_WRITE_KILL_SUIDGID): a change only if a bit goes.
    pub fn kill_setid(&self, ino: u64, kill: &dyn Fn(&Inode) -> KillSetid) -> LiveResult<()> {
        if self.inode(ino)?.mode & 0o6000 == 0 {
            return Ok(());
        }
        let _b = self.barrier.read().unwrap_or_else(|e| e.into_inner());
        self.tx(|tx| {
            let mut r = tx.get(ino)?;
            let m = kill(&r).apply(&r);
            if m != r.mode {
                r.mode = m;
                r.ctime = now();
                tx.stamp(ino, &mut r)?;
            }
            Ok(())
        })
    }

    pub fn set_xattr(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        create: bool,
        replace: bool,
    ) -> LiveResult<()> {
        let _b = self.barrier.read().unwrap_or_else(|e| e.into_inner());
        self.tx(|tx| {
            tx.modify(ino, |r| {
                let pos = r.xattrs.iter().position(|(k, _)| k == name);
                match (pos, create, replace) {
                    (Some(_), true, _) => return Err(LiveError::Exists),
                    (None, _, true) => return Err(LiveError::NoAttr),
                    (Some(i), _, _) => r.xattrs[i].1 = value.to_vec(),
                    (None, _, _) => {
                        // The kernel lists at most XATTR_LIST_MAX bytes of
                        // names (each with its NUL), and records and trees
                        // count xattrs in a u16: a name beyond that is
                        // refused as on a full disk, never wrapped.
                        let listed: usize = r.xattrs.iter().map(|(k, _)| k.len() + 1).sum();
                        if listed + name.len() + 1 > XATTR_LIST_MAX {
                            return Err(LiveError::Io(std::io::Error::from_raw_os_error(
                                libc::ENOSPC,
                            )));
                        }
                        r.xattrs.push((name.to_vec(), value.to_vec()));
                        r.xattrs.sort();
                    }
                }
                r.ctime = now();
                Ok(())
            })
        })
    }

    pub fn remove_xattr(&self, ino: u64, name: &[u8]) -> LiveResult<()> {
        let _b = self.barrier.read().unwrap_or_else(|e| e.into_inner());
        self.tx(|tx| {
            tx.modify(ino, |r| {
                let pos = r
                    .xattrs
                    .iter()
                    .position(|(k, _)| k == name)
                    .ok_or(LiveError::NoAttr)?;
                r.xattrs.remove(pos);
                r.ctime = now();
                Ok(())
            })
        })
    }
}

/// Linux's bound on the bytes `listxattr` returns (names with their NULs):
/// at most 32,768 names, well within the u16 count of records and trees.
pub const XATTR_LIST_MAX: usize = 65_536;

/// Is `anc` an ancestor of (or the same as) directory `ino`?
fn is_ancestor(tx: &Tx, anc: u64, mut ino: u64) -> LiveResult<bool> {
    loop {
        if ino == anc {
            return Ok(true);
        }
        if ino == ROOT {
            return Ok(false);
        }
        ino = tx.get(ino)?.parent;
    }
}

/// Update parent links after `ino` moved from `from` to `to`.
fn move_inode(tx: &mut Tx, ino: u64, from: u64, to: u64) -> LiveResult<()> {
    let mut rec = tx.get(ino)?;
    if rec.kind == Kind::Dir {
        rec.parent = to;
    } else {
        tx.remove_parent(ino, from)?;
        tx.add_parent(ino, to)?;
    }
    rec.ctime = now();
    tx.stamp(ino, &mut rec)
}

/// Remove the name `parent`/`name` of the non-directory `ino`, whose
/// record `rec` the caller read in this transaction; returns `ino` if that
/// was its last link (it stays as an orphan until unused).
fn remove_name(
    tx: &mut Tx,
    parent: u64,
    name: &[u8],
    ino: u64,
    mut rec: Inode,
) -> LiveResult<Option<u64>> {
    tx.remove_dirent(parent, name)?;
    tx.remove_parent(ino, parent)?;
    rec.nlink = rec.nlink.saturating_sub(1);
    rec.ctime = now();
    if rec.nlink > 0 {
        // Other names' directories record the link count: they change too.
        tx.stamp(ino, &mut rec)?;
    } else {
        tx.put(ino, &rec)?;
        tx.clear_dirty_file(ino)?;
        tx.add_orphan(ino)?;
    }
    touch_dir(tx, parent, 0)?;
    Ok((rec.nlink == 0).then_some(ino))
}

/// The empty directory `ino`, whose entry the caller removed, loses its
/// links: an orphan until unused, as `remove_name` leaves a file. Returns
/// `ino`.
fn remove_dir(tx: &mut Tx, ino: u64, mut rec: Inode) -> LiveResult<u64> {
    rec.nlink = 0;
    rec.ctime = now();
    tx.put(ino, &rec)?;
    tx.add_orphan(ino)?;
    Ok(ino)
}

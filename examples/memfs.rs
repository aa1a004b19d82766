//! An in-memory FUSE filesystem: the ceiling of what any FUSE filesystem
//! can do for many small operations on this machine, measured by
//! `scripts/bench.sh ceil` with P1's steps (untar, md5sum -c, ls -lR,
//! rm -rf).
//!
//! Every node lives in one map behind one lock; file contents are vectors.
//! It answers the kernel as the mount does (same `fs::setup_kernel`,
//! `fs::session_config`, entry and attribute timeouts, `FOPEN_KEEP_CACHE`,
//! ENOSYS for FLUSH, ENODATA for a missing xattr, EOPNOTSUPP for the
//! names of `fs::unsupported_xattr`), so the kernel and programs send it
//! the same requests, and the difference between this and the mount is
//! secrate's own work per request: the live tree in redb, staged files on
//! disk.
//! Not a filesystem to keep anything in: it forgets everything when
//! unmounted, and it leaves set-ID bits alone where the kernel leaves
//! clearing them to the filesystem.
//!
//! Usage: `memfs MOUNTPOINT` (serves in the foreground until unmounted).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};

/// The mount's timeout for entries and attributes of the live tree.
const TTL: Duration = Duration::from_secs(30);

enum Body {
    File(Vec<u8>),
    Dir(BTreeMap<Vec<u8>, u64>),
    Symlink(Vec<u8>),
}

struct Node {
    attr: FileAttr,
    body: Body,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Node {
    /// A new node's attributes: created now, one link (two for a directory).
    fn new_attr(ino: u64, body: &Body, mode: u32, uid: u32, gid: u32) -> FileAttr {
        let now = SystemTime::now();
        let (size, nlink) = match body {
            Body::Dir(_) => (0, 2),
            Body::Symlink(t) => (t.len() as u64, 1),
            Body::File(_) => (0, 1),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind: kind_of(body),
            perm: (mode & 0o7777) as u16,
            nlink,
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

struct State {
    nodes: HashMap<u64, Node>,
    next: u64,
}

struct MemFs {
    state: Mutex<State>,
}

fn err(e: i32) -> Errno {
    Errno::from_i32(e)
}

fn kind_of(b: &Body) -> FileType {
    match b {
        Body::File(_) => FileType::RegularFile,
        Body::Dir(_) => FileType::Directory,
        Body::Symlink(_) => FileType::Symlink,
    }
}

fn set_time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl State {
    fn node(&mut self, ino: INodeNo) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)
    }

    fn dir(&mut self, ino: INodeNo) -> Result<&mut BTreeMap<Vec<u8>, u64>, Errno> {
        match &mut self.node(ino)?.body {
            Body::Dir(d) => Ok(d),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn child(&mut self, parent: INodeNo, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?
            .get(name.as_bytes())
            .copied()
            .ok_or(Errno::ENOENT)
    }

    fn touch_dir(&mut self, ino: INodeNo, nlink_delta: i32) {
        if let Ok(n) = self.node(ino) {
            let now = SystemTime::now();
            n.attr.mtime = now;
            n.attr.ctime = now;
            n.attr.nlink = n.attr.nlink.saturating_add_signed(nlink_delta);
        }
    }

    /// Make a node named `name` in `parent`: its attributes as the kernel
    /// gave them (owner from the request, mode after umask).
    fn make(
        &mut self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        body: Body,
    ) -> Result<FileAttr, Errno> {
        if self.dir(parent)?.contains_key(name.as_bytes()) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next;
        self.next += 1;
        let attr = Node::new_attr(ino, &body, mode, req.uid(), req.gid());
        let kind = attr.kind;
        self.nodes.insert(
            ino,
            Node {
                attr,
                body,
                xattrs: BTreeMap::new(),
            },
        );
        self.dir(parent)?.insert(name.as_bytes().to_vec(), ino);
        self.touch_dir(parent, if kind == FileType::Directory { 1 } else { 0 });
        Ok(attr)
    }

    /// Drop one link of `ino`; the node goes with its last.
    fn unlink_node(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.attr.nlink = n.attr.nlink.saturating_sub(1);
            n.attr.ctime = SystemTime::now();
            if n.attr.nlink == 0 || matches!(n.body, Body::Dir(_)) {
                self.nodes.remove(&ino);
            }
        }
    }

    fn remove(&mut self, parent: INodeNo, name: &OsStr, want_dir: bool) -> Result<(), Errno> {
        let ino = self.child(parent, name)?;
        match (&self.nodes[&ino].body, want_dir) {
            (Body::Dir(d), true) if !d.is_empty() => return Err(Errno::ENOTEMPTY),
            (Body::Dir(_), false) => return Err(Errno::EISDIR),
            (Body::File(_) | Body::Symlink(_), true) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        self.dir(parent)?.remove(name.as_bytes());
        self.touch_dir(parent, if want_dir { -1 } else { 0 });
        self.unlink_node(ino);
        Ok(())
    }

    fn listing(&mut self, ino: INodeNo) -> Result<Vec<(u64, FileType, Vec<u8>)>, Errno> {
        let d = self.dir(ino)?.clone();
        let mut out = vec![
            (ino.0, FileType::Directory, b".".to_vec()),
            (ino.0, FileType::Directory, b"..".to_vec()),
        ];
        for (name, child) in d {
            if let Some(n) = self.nodes.get(&child) {
                out.push((child, kind_of(&n.body), name));
            }
        }
        Ok(out)
    }
}

impl MemFs {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Filesystem for MemFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        secrate::fs::setup_kernel(config);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.lock();
        match s.child(parent, name) {
            Ok(ino) => reply.entry(&TTL, &s.nodes[&ino].attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.lock().node(ino) {
            Ok(n) => reply.attr(&TTL, &n.attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.lock();
        let n = match s.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        if let Some(size) = size {
            match &mut n.body {
                Body::File(data) => {
                    data.resize(size as usize, 0);
                    n.attr.size = size;
                    n.attr.blocks = size.div_ceil(512);
                    n.attr.mtime = SystemTime::now();
                }
                Body::Dir(_) => return reply.error(Errno::EISDIR),
                Body::Symlink(_) => return reply.error(Errno::EINVAL),
            }
        }
        if let Some(m) = mode {
            n.attr.perm = (m & 0o7777) as u16;
        }
        if let Some(u) = uid {
            n.attr.uid = u;
        }
        if let Some(g) = gid {
            n.attr.gid = g;
        }
        if let Some(t) = atime {
            n.attr.atime = set_time(t);
        }
        if let Some(t) = mtime {
            n.attr.mtime = set_time(t);
        }
        n.attr.ctime = SystemTime::now();
        reply.attr(&TTL, &n.attr)
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.lock().node(ino) {
            Ok(Node {
                body: Body::Symlink(t),
                ..
            }) => reply.data(t),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let body = Body::Dir(BTreeMap::new());
        match self.lock().make(req, parent, name, mode & !umask, body) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.lock().remove(parent, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.lock().remove(parent, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let body = Body::Symlink(target.as_os_str().as_bytes().to_vec());
        match self.lock().make(req, parent, link_name, 0o777, body) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.bits() != 0 {
            return reply.error(Errno::EINVAL);
        }
        let mut s = self.lock();
        let r = (|| {
            let ino = s.child(parent, name)?;
            if let Ok(old) = s.child(newparent, newname) {
                if old == ino {
                    return Ok(());
                }
                let is_dir = matches!(s.nodes[&old].body, Body::Dir(_));
                s.remove(newparent, newname, is_dir)?;
            }
            s.dir(parent)?.remove(name.as_bytes());
            s.dir(newparent)?.insert(newname.as_bytes().to_vec(), ino);
            let d = i32::from(matches!(s.nodes[&ino].body, Body::Dir(_)));
            s.touch_dir(parent, -d);
            s.touch_dir(newparent, d);
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut s = self.lock();
        let r = (|| {
            if s.dir(newparent)?.contains_key(newname.as_bytes()) {
                return Err(Errno::EEXIST);
            }
            let n = s.node(ino)?;
            n.attr.nlink += 1;
            n.attr.ctime = SystemTime::now();
            let attr = n.attr;
            s.dir(newparent)?.insert(newname.as_bytes().to_vec(), ino.0);
            s.touch_dir(newparent, 0);
            Ok(attr)
        })();
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.lock().node(ino) {
            Ok(Node {
                body: Body::Dir(_), ..
            }) => reply.error(Errno::EISDIR),
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.lock().node(ino) {
            Ok(Node {
                body: Body::File(d),
                ..
            }) => {
                let start = (offset as usize).min(d.len());
                let end = start.saturating_add(size as usize).min(d.len());
                reply.data(&d[start..end])
            }
            Ok(_) => reply.error(Errno::EISDIR),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.lock();
        let n = match s.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let Body::File(d) = &mut n.body else {
            return reply.error(Errno::EISDIR);
        };
        let end = offset as usize + data.len();
        if d.len() < end {
            d.resize(end, 0);
        }
        d[offset as usize..end].copy_from_slice(data);
        n.attr.size = d.len() as u64;
        n.attr.blocks = n.attr.size.div_ceil(512);
        n.attr.mtime = SystemTime::now();
        n.attr.ctime = n.attr.mtime;
        reply.written(data.len() as u32)
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let list = match self.lock().listing(ino) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        for (i, (ino, kind, name)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(*ino),
                (i + 1) as u64,
                *kind,
                OsStr::from_bytes(name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let mut s = self.lock();
        let list = match s.listing(ino) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        for (i, (child, _, name)) in list.iter().enumerate().skip(offset as usize) {
            let Some(n) = s.nodes.get(child) else {
                continue;
            };
            let name = OsStr::from_bytes(name);
            if reply.add(
                INodeNo(*child),
                (i + 1) as u64,
                name,
                &TTL,
                &n.attr,
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if secrate::fs::unsupported_xattr(name.as_bytes()) {
            return reply.error(err(libc::EOPNOTSUPP));
        }
        let mut s = self.lock();
        let n = match s.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let exists = n.xattrs.contains_key(name.as_bytes());
        if flags & libc::XATTR_CREATE != 0 && exists {
            return reply.error(Errno::EEXIST);
        }
        if flags & libc::XATTR_REPLACE != 0 && !exists {
            return reply.error(err(libc::ENODATA));
        }
        n.xattrs.insert(name.as_bytes().to_vec(), value.to_vec());
        reply.ok()
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if secrate::fs::unsupported_xattr(name.as_bytes()) {
            return reply.error(err(libc::EOPNOTSUPP));
        }
        let mut s = self.lock();
        let n = match s.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match n.xattrs.get(name.as_bytes()) {
            None => reply.error(err(libc::ENODATA)),
            Some(v) if size == 0 => reply.size(v.len() as u32),
            Some(v) if v.len() > size as usize => reply.error(err(libc::ERANGE)),
            Some(v) => reply.data(v),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let mut s = self.lock();
        let n = match s.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let mut buf = Vec::new();
        for k in n
            .xattrs
            .keys()
            .filter(|k| !secrate::fs::unsupported_xattr(k))
        {
            buf.extend_from_slice(k);
            buf.push(0);
        }
        if size == 0 {
            reply.size(buf.len() as u32)
        } else if buf.len() > size as usize {
            reply.error(err(libc::ERANGE))
        } else {
            reply.data(&buf)
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if secrate::fs::unsupported_xattr(name.as_bytes()) {
            return reply.error(err(libc::EOPNOTSUPP));
        }
        match self
            .lock()
            .node(ino)
            .map(|n| n.xattrs.remove(name.as_bytes()))
        {
            Ok(Some(_)) => reply.ok(),
            Ok(None) => reply.error(err(libc::ENODATA)),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let body = Body::File(Vec::new());
        match self.lock().make(req, parent, name, mode & !umask, body) {
            Ok(a) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(e),
        }
    }
}

fn main() {
    let Some(mountpoint) = std::env::args_os().nth(1) else {
        eprintln!("usage: memfs MOUNTPOINT");
        std::process::exit(2);
    };
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let body = Body::Dir(BTreeMap::new());
    let attr = Node::new_attr(INodeNo::ROOT.0, &body, 0o755, uid, gid);
    let mut nodes = HashMap::new();
    nodes.insert(
        INodeNo::ROOT.0,
        Node {
            attr,
            body,
            xattrs: BTreeMap::new(),
        },
    );
    let fs = MemFs {
        state: Mutex::new(State {
            nodes,
            next: INodeNo::ROOT.0 + 1,
        }),
    };
    let config = secrate::fs::session_config(vec![
        fuser::MountOption::FSName("memfs".into()),
        fuser::MountOption::NoAtime,
        fuser::MountOption::RW,
        fuser::MountOption::DefaultPermissions,
    ]);
    let served =
        secrate::fs::serve_like_the_mount("memfs", fs, std::path::Path::new(&mountpoint), &config);
    if let Err(e) = served {
        eprintln!("memfs: cannot serve at {}: {e}", mountpoint.display());
        std::process::exit(1);
    }
}

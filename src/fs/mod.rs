//! The FUSE filesystem: the live tree at the root, `.history/` beside it.
//!
//! Translates FUSE requests into `live` and `history` calls and their errors
//! into errno (in one place, `errno`). No format or crypto code lives here.
//! Requests run on several threads; everything below is thread-safe.

mod ahead;
mod gate;
pub mod history;
pub mod switch;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLockReadGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, Notifier, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::blobs::BlobReader;
use crate::flush::Flusher;
use crate::live::data::{Falloc, Times};
use crate::live::{
    Inode, KillSetid, Live, LiveError, LiveResult, NewNode, SetAttr, HISTORY_NAME, ROOT,
};
use crate::repo::tree::{Kind, Timestamp};

use self::ahead::Ahead;
use self::history::{HistAttr, History, HISTORY_INO};

/// How long the kernel may cache live attributes and entries. Every change
/// of the live tree passes through the kernel, which invalidates what an
/// operation changes (the parent's times on create, nlink on link and
/// unlink, ctime on rename and setxattr) and, with the writeback cache, owns
/// size and mtime; the live tree is imported before the mount starts, and
/// a read-only mount that moves to a newer snapshot tells the kernel what
/// to drop (`switch`). So a long time is safe, and it spares a lookup per
/// file whenever a program comes back to names listed more than a second
/// ago (`find | xargs md5sum`, builds). History never changes; only the `.history` directory
/// itself gains entries as snapshots are sealed.
const LIVE_TTL: Duration = Duration::from_secs(30);
const HISTORY_TTL: Duration = Duration::from_secs(60);
const HISTORY_DIR_TTL: Duration = Duration::from_secs(1);
/// Longest name in a directory (statfs reports it too).
const NAME_MAX: usize = 255;

/// An open directory: the listing taken at opendir (or at a rewind), with
/// the `live::dirents_generation` before it was taken, and whether it was
/// read since opendir (a later read from offset 0 is a rewind).
struct OpenDir {
    gen: u64,
    list: Arc<Listing>,
    read: bool,
}

/// An open directory's entries: (inode, type, name) of each, "." and ".."
/// first; for a `.history` directory, with the pins that keep the inode
/// numbers it shows alive while it is open.
struct Listing {
    entries: Vec<(u64, FileType, Vec<u8>)>,
    _pins: Option<history::Pins>,
}

pub struct SecrateFs {
    live: Arc<Live>,
    reader: Arc<BlobReader>,
    history: Arc<History>,
    ahead: Ahead,
    read_only: bool,
    /// Open directories.
    dirs: Mutex<HashMap<u64, OpenDir>>,
    next_fh: AtomicU64,
    /// Sends the kernel file content before it asks, and tells it what
    /// `.history` lost (set once mounted).
    notifier: Arc<OnceLock<Notifier>>,
    /// Held shared by replies naming live inodes on a read-only mount,
    /// exclusively by a switch of its live tree (see `switch`).
    gate: Arc<gate::ReplyGate>,
}

/// Largest file whose content an open for reading hands to the kernel
/// with the reply: the kernel's first read-ahead of a file asks this much.
const GIVE_MAX: u64 = 128 << 10;

fn errno(e: &LiveError) -> Errno {
    let n = match e {
        LiveError::NotFound => libc::ENOENT,
        LiveError::Exists => libc::EEXIST,
        LiveError::NotEmpty => libc::ENOTEMPTY,
        LiveError::NotDir => libc::ENOTDIR,
        LiveError::IsDir => libc::EISDIR,
        LiveError::Invalid => libc::EINVAL,
        LiveError::NameTooLong => libc::ENAMETOOLONG,
        LiveError::ReadOnly => libc::EROFS,
        LiveError::NoAttr => libc::ENODATA,
        LiveError::Io(io) => io.raw_os_error().unwrap_or(libc::EIO),
        LiveError::Repo(crate::Error::WriteOnly { .. }) => libc::EACCES,
        LiveError::Repo(crate::Error::Io { source, .. }) => {
            source.raw_os_error().unwrap_or(libc::EIO)
        }
        LiveError::Cache(_) | LiveError::Repo(_) => libc::EIO,
    };
    if n == libc::EIO || n == libc::EACCES {
        // The one place a damaged blob or an unreachable store surfaces.
        crate::log!("error: {e}");
    }
    Errno::from_i32(n)
}

fn system_time(t: Timestamp) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs())
            + Duration::from_nanos(t.nanos as u64)
    }
}

fn timestamp(t: TimeOrNow) -> Timestamp {
    let st = match t {
        TimeOrNow::SpecificTime(s) => s,
        TimeOrNow::Now => SystemTime::now(),
    };
    match st.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            let mut secs = -(d.as_secs() as i64);
            let mut nanos = d.subsec_nanos();
            if nanos > 0 {
                secs -= 1;
                nanos = 1_000_000_000 - nanos;
            }
            Timestamp { secs, nanos }
        }
    }
}

/// What to create; owner and group are filled in from the request.
fn node(kind: Kind, mode: u32, rdev: u64, symlink: Option<&[u8]>) -> NewNode<'_> {
    NewNode {
        kind,
        mode,
        uid: 0,
        gid: 0,
        rdev,
        symlink,
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
        Kind::Socket => FileType::Socket,
    }
}

fn live_attr(ino: u64, r: &Inode) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: r.size,
        blocks: r.size.div_ceil(512),
        atime: system_time(r.atime),
        mtime: system_time(r.mtime),
        ctime: system_time(r.ctime),
        crtime: system_time(r.ctime),
        kind: file_type(r.kind),
        perm: r.mode as u16,
        nlink: r.nlink,
        uid: r.uid,
        gid: r.gid,
        rdev: r.rdev as u32,
        blksize: 4096,
        flags: 0,
    }
}

fn hist_attr(ino: u64, a: &HistAttr) -> FileAttr {
    let t = system_time(a.mtime);
    FileAttr {
        ino: INodeNo(ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: t,
        mtime: t,
        ctime: system_time(a.ctime),
        crtime: t,
        kind: file_type(a.kind),
        // Read-only whatever the snapshot says: writes give EROFS anyway.
        perm: a.mode as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: 4096,
        flags: 0,
    }
}

impl SecrateFs {
    pub fn new(
        live: Arc<Live>,
        reader: Arc<BlobReader>,
        flusher: Arc<Flusher>,
        read_only: bool,
    ) -> SecrateFs {
        let history = History::attach(flusher.clone(), reader.clone());
        let notifier = Arc::new(OnceLock::<Notifier>::new());
        // Weak: the flusher keeps the hook, and the view keeps the flusher.
        let (view, kernel) = (Arc::downgrade(&history), notifier.clone());
        flusher.on_snapshots_changed(move || {
            if let (Some(h), Some(n)) = (view.upgrade(), kernel.get()) {
                h.snapshots_changed(n);
            }
        });
        SecrateFs {
            ahead: Ahead::start(&live, &history, reader.clone()),
            history,
            live,
            reader,
            read_only,
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            notifier,
            gate: Default::default(),
        }
    }

    /// What a read-only mount needs to move its live tree to a newer
    /// snapshot while it serves.
    pub fn live_switch(&self) -> switch::LiveSwitch {
        switch::LiveSwitch {
            live: self.live.clone(),
            reader: self.reader.clone(),
            gate: self.gate.clone(),
            notifier: self.notifier.clone(),
        }
    }

    /// `e` as the errno of a request about live inode `ino`. A read-only
    /// mount whose live tree moved to a newer snapshot (`switch`) may still
    /// be sent numbers of the old tree by a request under way: for one that
    /// is gone, ESTALE, on which the kernel walks the path again,
    /// revalidating what it cached, and finds what the name is now. ENOENT
    /// would tell a program that a name every snapshot has does not exist.
    fn errno_about(&self, ino: u64, e: &LiveError) -> Errno {
        if self.read_only
            && matches!(e, LiveError::NotFound)
            && !History::is_history(ino)
            && matches!(self.live.inode(ino), Err(LiveError::NotFound))
        {
            return Errno::from_i32(libc::ESTALE);
        }
        errno(e)
    }

    /// The gate's shared side, on a read-only mount (only its live tree
    /// switches), for a reply that names live inodes.
    fn switch_gate(&self) -> Option<RwLockReadGuard<'_, ()>> {
        self.read_only.then(|| self.gate.answering())
    }

    /// The `.history` view (its node count is part of `secrate status`).
    pub fn history(&self) -> Arc<History> {
        self.history.clone()
    }

    /// Where the mount puts the session's notifier once it exists (the
    /// session takes the filesystem, so this is asked for before).
    pub fn notifier_slot(&self) -> Arc<OnceLock<Notifier>> {
        self.notifier.clone()
    }

    fn owner(&self) -> (u32, u32) {
        self.live
            .inode(ROOT)
            .map(|r| (r.uid, r.gid))
            .unwrap_or((0, 0))
    }

    fn attr(&self, ino: u64) -> LiveResult<(FileAttr, Duration)> {
        if History::is_history(ino) {
            let a = self.history.attr(ino, self.owner())?;
            let ttl = if ino == HISTORY_INO {
                HISTORY_DIR_TTL
            } else {
                HISTORY_TTL
            };
            return Ok((hist_attr(ino, &a), ttl));
        }
        let r = self.live.inode(ino)?;
        Ok((live_attr(ino, &r), LIVE_TTL))
    }

    /// Refuse changes in `.history`, to `.history` itself, and everywhere
    /// on a read-only mount.
    fn writable(&self, ino: u64) -> LiveResult<()> {
        if self.read_only || History::is_history(ino) {
            return Err(LiveError::ReadOnly);
        }
        Ok(())
    }

    fn writable_name(&self, parent: u64, name: &[u8], creating: bool) -> LiveResult<()> {
        self.writable(parent)?;
        if parent == ROOT && name == HISTORY_NAME {
            return Err(if creating {
                LiveError::Exists
            } else {
                LiveError::ReadOnly
            });
        }
        Ok(())
    }

    fn new_node(
        &self,
        req: &Request,
        parent: u64,
        name: &[u8],
        node: NewNode,
        open: bool,
    ) -> LiveResult<(u64, Inode)> {
        let NewNode {
            kind,
            mode,
            rdev,
            symlink: target,
            ..
        } = node;
        self.writable_name(parent, name, true)?;
        let p = self.live.inode(parent)?;
        let mut mode = mode & 0o7777;
        let mut gid = req.gid();
        if p.mode & libc::S_ISGID != 0 {
            gid = p.gid;
            if kind == Kind::Dir {
                mode |= libc::S_ISGID;
            }
        }
        self.live.create_node(
            parent,
            name,
            NewNode {
                kind,
                mode,
                uid: req.uid(),
                gid,
                rdev,
                symlink: target,
            },
            open,
        )
    }

    fn reply_entry(&self, reply: ReplyEntry, r: LiveResult<(u64, Inode)>) {
        match r {
            Ok((ino, rec)) => {
                self.live.open_files.looked_up(ino);
                reply.entry(&LIVE_TTL, &live_attr(ino, &rec), Generation(0))
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// All xattrs `ino` has recorded (also those the mount does not show).
    fn xattrs(&self, ino: u64) -> LiveResult<Vec<(Vec<u8>, Vec<u8>)>> {
        if History::is_history(ino) {
            self.history.xattrs(ino)
        } else {
            self.live.inode(ino).map(|r| r.xattrs)
        }
    }

    /// The listing of open directory `fh`, and whether no entry changed
    /// since it was taken. A read from offset 0 (the first, or after
    /// `rewinddir`, which must show the directory as it is) takes a new
    /// listing if entries changed. `.history` gains and loses snapshots
    /// without a live entry changing: a rewind of it always lists it again.
    fn listing(&self, ino: u64, fh: u64, offset: u64) -> Result<(Arc<Listing>, bool), Errno> {
        let (gen, list, was_read) = {
            let mut dirs = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
            let d = dirs.get_mut(&fh).ok_or(Errno::EBADF)?;
            (d.gen, d.list.clone(), std::mem::replace(&mut d.read, true))
        };
        let now = crate::live::dirents_generation();
        let rewound_history = ino == HISTORY_INO && offset == 0 && was_read;
        if now == gen && !rewound_history {
            return Ok((list, true));
        }
        if offset != 0 {
            return Ok((list, false));
        }
        let list = Arc::new(self.list_dir(ino).map_err(|e| self.errno_about(ino, &e))?);
        if let Some(d) = self
            .dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&fh)
        {
            (d.gen, d.list) = (now, list.clone());
        }
        Ok((list, crate::live::dirents_generation() == now))
    }

    fn list_dir(&self, ino: u64) -> LiveResult<Listing> {
        let mut out = Vec::new();
        if History::is_history(ino) {
            out.push((ino, FileType::Directory, b".".to_vec()));
            out.push((
                if ino == HISTORY_INO { ROOT } else { ino },
                FileType::Directory,
                b"..".to_vec(),
            ));
            let (entries, pins) = self.history.readdir(ino)?;
            for (i, k, n) in entries {
                out.push((i, file_type(k), n));
            }
            return Ok(Listing {
                entries: out,
                _pins: Some(pins),
            });
        }
        let rec = self.live.inode(ino)?;
        out.push((ino, FileType::Directory, b".".to_vec()));
        out.push((rec.parent, FileType::Directory, b"..".to_vec()));
        if ino == ROOT {
            out.push((HISTORY_INO, FileType::Directory, HISTORY_NAME.to_vec()));
        }
        for (name, child, kind) in self.live.children(ino)? {
            out.push((child, file_type(kind), name));
        }
        Ok(Listing {
            entries: out,
            _pins: None,
        })
    }
}

/// Threads serving FUSE requests, each reading its own `/dev/fuse` fd.
pub const THREADS: usize = 4;

/// The session a mount runs: `mount_options`, `THREADS` threads, one fd
/// each. (Also the session of the benchmarks' example filesystems.)
pub fn session_config(mount_options: Vec<fuser::MountOption>) -> fuser::Config {
    let mut config = fuser::Config::default();
    config.mount_options = mount_options;
    config.n_threads = Some(THREADS);
    config.clone_fd = true;
    config
}

/// Mount `fs` at `mountpoint` and serve it with `config` as the mount
/// does, read-ahead included, until unmounted (the benchmarks' example
/// filesystems; `name` prefixes the message if the read-ahead stays).
pub fn serve_like_the_mount<FS: Filesystem>(
    name: &str,
    fs: FS,
    mountpoint: &std::path::Path,
    config: &fuser::Config,
) -> std::io::Result<()> {
    let session = fuser::Session::new(fs, mountpoint, config)?;
    if let Err(e) = raise_readahead(mountpoint) {
        eprintln!("{name}: read-ahead stays at the kernel's default: {e}");
    }
    session.run()
}

/// Read-ahead a mount asks for.
const READAHEAD: u32 = 4 << 20;

/// The largest write a mount asks for.
const MAX_WRITE: u32 = 1 << 20;

/// Raise the kernel's read-ahead for the FUSE mount at `mountpoint` to
/// `READAHEAD`: the kernel caps it at its 128 KiB default whatever INIT
/// asks, and only the mount's backing-device setting in sysfs (root only)
/// lifts that; a 2 GiB sequential read goes from 1.4-1.8 GB/s (128 KiB)
/// to 2.6-2.7 (1 MiB) on one VM, and from 3.0-3.5 (1 MiB) to 3.6-3.9
/// (4 MiB) on another with the staged file in the page cache. The kernel
/// still sends at most 1 MiB per request (`fs.fuse.max_pages_limit`), so
/// 4 MiB keeps 4 requests in flight for the daemon's threads. Call after
/// mounting and before the session answers INIT, which keeps the smaller
/// of this and INIT's value. (mergerfs does the same.)
pub fn raise_readahead(mountpoint: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())?;
    // SAFETY: statx writes only into `stx`; DONT_SYNC answers from the
    // kernel's copy (a request to the filesystem would wait for INIT).
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_STATX_DONT_SYNC,
            0,
            &mut stx,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // A FUSE mount has an anonymous device (major 0); anything else means
    // the path does not lead to our mount, and its disk is left alone.
    if stx.stx_dev_major != 0 {
        return Err(std::io::Error::other(format!(
            "{} is on device {}:{}, not a FUSE mount",
            mountpoint.display(),
            stx.stx_dev_major,
            stx.stx_dev_minor
        )));
    }
    std::fs::write(
        format!(
            "/sys/class/bdi/{}:{}/read_ahead_kb",
            stx.stx_dev_major, stx.stx_dev_minor
        ),
        format!("{}\n", READAHEAD >> 10),
    )
}

/// What a mount asks of the kernel: 1 MiB writes and readahead, the
/// writeback cache, parallel directory operations, READDIRPLUS, and
/// clearing set-ID bits left to the filesystem (FUSE_HANDLE_KILLPRIV_V2:
/// see `setattr` and `write`). (Also the setup of `examples/nullfs.rs` and
/// `examples/memfs.rs`, the FUSE ceilings of the benchmarks.)
pub fn setup_kernel(config: &mut KernelConfig) {
    let _ = config.set_max_write(MAX_WRITE);
    let _ = config.set_max_readahead(READAHEAD);
    let want = InitFlags::FUSE_WRITEBACK_CACHE
        | InitFlags::FUSE_PARALLEL_DIROPS
        | InitFlags::FUSE_DO_READDIRPLUS
        | InitFlags::FUSE_READDIRPLUS_AUTO
        | InitFlags::FUSE_ASYNC_DIO
        | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
    let caps = config.capabilities();
    let _ = config.add_capabilities(want & caps);
}

/// Extended attributes the mount does not keep, answered EOPNOTSUPP to
/// get, set, remove and left out of listings, as a local filesystem
/// without them answers (ext4 mounted `noacl`, tmpfs, NFS):
/// - POSIX ACLs (`system.posix_acl_*`): the kernel would pass them through
///   as plain xattrs that neither change the mode nor get enforced;
///   refusing them makes `cp -a`, tar and rsync fall back to chmod.
/// - SELinux labels (`security.selinux`): on a host running SELinux the
///   kernel labels a FUSE mount as a whole and answers this name itself,
///   so the mount never sees it there; elsewhere nothing reads it.
///
/// GNU `ls -l` asks both names for every entry unless the filesystem says
/// it does not support them, which it remembers per device: ENODATA cost
/// two round trips per entry of `ls -lR`. A label or ACL that `secrate
/// backup` recorded stays in the snapshot and in the live tree built from
/// it (and `secrate restore` writes it back); the mount only does not show
/// it.
pub fn unsupported_xattr(name: &[u8]) -> bool {
    name.starts_with(b"system.posix_acl_") || name == b"security.selinux"
}

/// What clears set-ID bits under FUSE_HANDLE_KILLPRIV_V2.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SetidOp {
    Chown,
    Truncate,
    /// A write the kernel flagged FUSE_WRITE_KILL_SUIDGID: it found the
    /// caller without CAP_FSETID.
    FlaggedWrite,
}

/// Which of `rec`'s set-ID bits `op` by process `pid` clears, as the VFS
/// decides on a local disk: set-user-ID and a group-executable
/// set-group-ID always on chown, on truncate and write unless the caller
/// has CAP_FSETID; a set-group-ID without group execute only when the
/// caller has no CAP_FSETID and is not in the file's group. fuser 0.18
/// does not pass the kernel's own decision for truncate, so the caller is
/// read from /proc (only for files that have such a bit).
fn setid_kill(rec: &Inode, pid: u32, op: SetidOp) -> KillSetid {
    if rec.kind == Kind::Dir || rec.mode & 0o6000 == 0 {
        return KillSetid::Keep;
    }
    let caller = Caller::read(pid);
    let fsetid = caller.fsetid && op != SetidOp::FlaggedWrite;
    if fsetid && op == SetidOp::Truncate {
        return KillSetid::Keep;
    }
    if rec.mode & 0o2010 == 0o2000 && !fsetid && !caller.groups.contains(&rec.gid) {
        KillSetid::All
    } else {
        KillSetid::Exec
    }
}

/// What decides a caller's effect on set-ID bits, from /proc/PID. Anything
/// unreadable reads as no capability and no groups, so in doubt the bits
/// are cleared, the safe side.
struct Caller {
    /// CAP_FSETID in its effective set, in the first user namespace (an
    /// identity uid map): the kernel's `capable()`.
    fsetid: bool,
    /// Its filesystem group and supplementary groups.
    groups: Vec<u32>,
}

impl Caller {
    fn read(pid: u32) -> Caller {
        const CAP_FSETID: u32 = 4;
        let read = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).ok();
        let status = read("status").unwrap_or_default();
        let field = |name: &str| -> Vec<String> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        let cap_eff = field("CapEff:")
            .first()
            .and_then(|v| u64::from_str_radix(v, 16).ok());
        let init_ns = read("uid_map")
            .is_some_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]);
        // Gid: real, effective, saved, filesystem.
        let fsgid = field("Gid:").get(3).cloned();
        let groups = fsgid
            .into_iter()
            .chain(field("Groups:"))
            .filter_map(|g| g.parse().ok())
            .collect();
        Caller {
            fsetid: matches!(cap_eff, Some(c) if c >> CAP_FSETID & 1 == 1) && init_ns,
            groups,
        }
    }
}

impl Filesystem for SecrateFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        setup_kernel(config);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (parent, name) = (parent.0, name.as_bytes());
        // The kernel leaves NAME_MAX to the filesystem: a longer name is
        // ENAMETOOLONG, not ENOENT, for every path that looks it up.
        if name.len() > NAME_MAX {
            return reply.error(Errno::from_i32(libc::ENAMETOOLONG));
        }
        if parent == ROOT && name == HISTORY_NAME {
            return match self.attr(HISTORY_INO) {
                Ok((a, ttl)) => reply.entry(&ttl, &a, Generation(0)),
                Err(e) => reply.error(errno(&e)),
            };
        }
        if History::is_history(parent) {
            // Until the reply is sent (see `History::answering`).
            let _answering = (parent == HISTORY_INO).then(|| self.history.answering());
            let ino = match self.history.lookup(parent, name) {
                Ok(ino) => ino,
                Err(e) => return reply.error(errno(&e)),
            };
            return match self.attr(ino) {
                Ok((a, ttl)) => reply.entry(&ttl, &a, Generation(0)),
                Err(e) => {
                    // Not handed out after all: the kernel will not forget it.
                    self.history.forget(ino, 1);
                    reply.error(errno(&e))
                }
            };
        }
        let _gate = self.switch_gate();
        match self.live.lookup(parent, name) {
            Err(e) => reply.error(self.errno_about(parent, &e)),
            found => self.reply_entry(reply, found),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if History::is_history(ino.0) {
            self.history.forget(ino.0, nlookup);
        } else if let Err(e) = self.live.forget(ino.0, nlookup) {
            crate::log!("error: removing unlinked inode {}: {e}", ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino.0) {
            Ok((a, ttl)) => reply.attr(&ttl, &a),
            Err(e) => reply.error(self.errno_about(ino.0, &e)),
        }
    }

    /// Under FUSE_HANDLE_KILLPRIV_V2 the kernel leaves clearing set-ID
    /// bits to the filesystem (and skips a GETATTR per chown and a
    /// `security.capability` query per write): chown clears them always
    /// (also chown(-1, -1)), truncate when the caller lacks CAP_FSETID, as
    /// the VFS does.
    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ino = ino.0;
        let r = self.writable(ino).and_then(|()| {
            // chown(-1, -1) reaches here as a change of ctime alone, the
            // only call that sends that.
            let ctime_only = ctime.is_some()
                && mode.is_none()
                && size.is_none()
                && atime.is_none()
                && mtime.is_none();
            let op = if uid.is_some() || gid.is_some() || ctime_only {
                Some(SetidOp::Chown)
            } else if size.is_some() {
                Some(SetidOp::Truncate)
            } else {
                None
            };
            if let Some(size) = size {
                self.live.truncate(ino, size, &*self.reader)?;
            }
            let a = SetAttr {
                mode,
                uid,
                gid,
                atime: atime.map(timestamp),
                mtime: mtime.map(timestamp),
                ctime: ctime.map(|c| timestamp(TimeOrNow::SpecificTime(c))),
            };
            self.live.setattr(ino, &a, &|r| match op {
                Some(op) => setid_kill(r, req.pid(), op),
                None => KillSetid::Keep,
            })
        });
        match r {
            Ok(rec) => reply.attr(&LIVE_TTL, &live_attr(ino, &rec)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = if History::is_history(ino.0) {
            self.history.readlink(ino.0)
        } else {
            self.live.inode(ino.0).and_then(|r| match r.body {
                crate::live::Body::Symlink(t) => Ok(t),
                _ => Err(LiveError::Invalid),
            })
        };
        match r {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(self.errno_about(ino.0, &e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let kind = match Kind::from_mode(mode) {
            Some(k) if k != Kind::Dir && k != Kind::Symlink => k,
            _ => return reply.error(Errno::EINVAL),
        };
        let r = self.new_node(
            req,
            parent.0,
            name.as_bytes(),
            node(kind, mode & !umask, rdev as u64, None),
            false,
        );
        self.reply_entry(reply, r);
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
        let r = self.new_node(
            req,
            parent.0,
            name.as_bytes(),
            node(Kind::Dir, mode & !umask, 0, None),
            false,
        );
        self.reply_entry(reply, r);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.as_bytes();
        match self
            .writable_name(parent.0, name, false)
            .and_then(|()| self.live.unlink(parent.0, name))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.as_bytes();
        match self
            .writable_name(parent.0, name, false)
            .and_then(|()| self.live.rmdir(parent.0, name))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
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
        let t = target.as_os_str().as_bytes();
        let r = self.new_node(
            req,
            parent.0,
            link_name.as_bytes(),
            node(Kind::Symlink, 0o777, 0, Some(t)),
            false,
        );
        self.reply_entry(reply, r);
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
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let (name, newname) = (name.as_bytes(), newname.as_bytes());
        let r = self
            .writable_name(parent.0, name, false)
            .and_then(|()| self.writable_name(newparent.0, newname, false))
            .and_then(|()| {
                self.live.rename(
                    parent.0,
                    name,
                    newparent.0,
                    newname,
                    flags.contains(RenameFlags::RENAME_NOREPLACE),
                    flags.contains(RenameFlags::RENAME_EXCHANGE),
                )
            });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
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
        let newname = newname.as_bytes();
        let r = self
            .writable(ino.0)
            .and_then(|()| self.writable_name(newparent.0, newname, true))
            .and_then(|()| self.live.link(ino.0, newparent.0, newname));
        self.reply_entry(reply, r);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let ino = ino.0;
        let acc = flags.0 & libc::O_ACCMODE;
        if History::is_history(ino) {
            if acc != libc::O_RDONLY {
                return reply.error(Errno::EROFS);
            }
            reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
            self.ahead.opened(ino);
            return;
        }
        if self.read_only && acc != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.live.inode(ino) {
            Ok(r) if r.kind == Kind::Dir => reply.error(Errno::EISDIR),
            Ok(r) => {
                self.live.open_file(ino);
                if self.read_only && matches!(self.live.inode(ino), Err(LiveError::NotFound)) {
                    // The live tree moved to a newer snapshot between the
                    // look above and the open: this inode is gone (see
                    // `errno_about`).
                    let _ = self.live.release_file(ino);
                    return reply.error(Errno::from_i32(libc::ESTALE));
                }
                // A small file opened for reading is read next: its content
                // goes to the kernel's page cache before the reply, so the
                // read needs no round trip of its own (a third of those of
                // `md5sum` or `grep -r` over small files).
                if acc == libc::O_RDONLY
                    && flags.0 & (libc::O_TRUNC | libc::O_DIRECT) == 0
                    && r.size <= GIVE_MAX
                {
                    if let Some(n) = self.notifier.get() {
                        self.live
                            .give_content(ino, GIVE_MAX, |d| n.store(INodeNo(ino), 0, d));
                    }
                }
                reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
                // Only after the reply: waking the read-ahead thread can
                // switch this CPU to it, and the caller should not wait.
                if acc == libc::O_RDONLY {
                    self.ahead.opened(ino);
                }
            }
            Err(e) => reply.error(self.errno_about(ino, &e)),
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
        let r = if History::is_history(ino.0) {
            self.history.read(ino.0, offset, size).map(Into::into)
        } else {
            self.live.read(ino.0, offset, size, &*self.reader)
        };
        match r {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(self.errno_about(ino.0, &e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // The kernel asks this of a write by a caller without CAP_FSETID
        // (FUSE_HANDLE_KILLPRIV_V2).
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self
            .writable(ino.0)
            .and_then(|()| {
                if kill {
                    self.live
                        .kill_setid(ino.0, &|r| setid_kill(r, req.pid(), SetidOp::FlaggedWrite))
                } else {
                    Ok(())
                }
            })
            .and_then(|()| {
                // Data from the page cache (the writeback cache): the
                // kernel sends its times itself.
                let times = if write_flags.contains(WriteFlags::FUSE_WRITE_CACHE) {
                    Times::Kernel
                } else {
                    Times::Now
                };
                self.live.write(ino.0, offset, data, times, &*self.reader)
            }) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// fallocate(2): reserving space (growing the size unless
    /// `FALLOC_FL_KEEP_SIZE`), punching a hole, zeroing a range. Collapsing
    /// or inserting a range: EOPNOTSUPP, as on tmpfs. (Before, ENOSYS: the
    /// kernel then answered EOPNOTSUPP to every fallocate, and only
    /// glibc's `posix_fallocate` worked, by writing a byte per block.)
    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = self.writable(ino.0).and_then(|()| {
            let how = Falloc::from_mode(mode).ok_or_else(|| {
                LiveError::Io(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP))
            })?;
            // The kernel stamps the times (`file_modified`) and, with the
            // writeback cache, sends them in a SETATTR of its own.
            self.live
                .fallocate(ino.0, offset, length, how, Times::Kernel, &*self.reader)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Nothing to do on close(): data reaches the staged file through the
    /// kernel's writeback (whose errors close() still returns) and is made
    /// durable by fsync. ENOSYS tells the kernel so once; it then stops
    /// sending FLUSH, a round trip saved on every close.
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

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if History::is_history(ino.0) {
            return reply.ok();
        }
        match self.live.release_file(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if History::is_history(ino.0) || self.read_only {
            return reply.ok();
        }
        match self.live.fsync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let gen = crate::live::dirents_generation();
        match self.list_dir(ino.0) {
            Ok(list) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.dirs.lock().unwrap_or_else(|e| e.into_inner()).insert(
                    fh,
                    OpenDir {
                        gen,
                        list: Arc::new(list),
                        read: false,
                    },
                );
                reply.opened(FileHandle(fh), FopenFlags::empty())
            }
            Err(e) => reply.error(self.errno_about(ino.0, &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let (list, _) = match self.listing(ino.0, fh.0, offset) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        for (i, (ino, kind, name)) in list.entries.iter().enumerate().skip(offset as usize) {
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
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        // Until the reply is sent (see `History::answering`).
        let in_history = ino.0 == HISTORY_INO;
        let _answering = in_history.then(|| self.history.answering());
        let _gate = (!History::is_history(ino.0))
            .then(|| self.switch_gate())
            .flatten();
        let (list, fresh) = match self.listing(ino.0, fh.0, offset) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        for (i, (child, _kind, name)) in list.entries.iter().enumerate().skip(offset as usize) {
            // A snapshot forgotten since the listing was made: the kernel
            // was told, or is about to be, that the name is gone.
            if in_history && name != b"." && name != b".." && !self.history.listed(name) {
                continue;
            }
            // The kernel keeps each entry sent here as a name it knows: one
            // renamed or removed since the listing would live on there,
            // naming an inode it no longer names (writes to it would go to
            // the other name, or to an orphan). Those are left out.
            if !fresh
                && name != b"."
                && name != b".."
                && !History::is_history(*child)
                && !History::is_history(ino.0)
                && self.live.child(ino.0, name).ok().flatten() != Some(*child)
            {
                continue;
            }
            let looked = self.attr(if name == b"." { ino.0 } else { *child });
            let Ok((attr, ttl)) = looked else { continue };
            // The kernel counts a lookup for every entry it is sent but
            // "." and ".."; the reply leaves at `ok` below. A history node
            // counts it before it is sent (the kernel may forget it the
            // moment the reply is in), and the count goes back if not sent.
            let counted = name != b"." && name != b"..";
            // `.history` itself is a fixed node, never freed: its lookups
            // are not counted (as in LOOKUP).
            let fixed = *child == HISTORY_INO;
            let history = counted && !fixed && History::is_history(*child);
            if history && !self.history.looked_up(*child) {
                continue;
            }
            if reply.add(
                INodeNo(*child),
                (i + 1) as u64,
                OsStr::from_bytes(name),
                &ttl,
                &attr,
                Generation(0),
            ) {
                if history {
                    self.history.forget(*child, 1);
                }
                break; // full: this entry is not sent
            }
            if counted && !history && !fixed {
                self.live.open_files.looked_up(*child);
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.live.commit(true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        let path =
            std::ffi::CString::new(self.live.dir().as_os_str().as_bytes()).unwrap_or_default();
        if unsafe { libc::statvfs(path.as_ptr(), &mut s) } != 0 {
            return reply.error(Errno::EIO);
        }
        // What users can write: the cache database's reserve is not theirs.
        let unit = (s.f_frsize as u64).max(1);
        let reserve = crate::space::reserve_for(s.f_blocks as u64 * unit) / unit;
        reply.statfs(
            s.f_blocks,
            s.f_bfree,
            (s.f_bavail as u64).saturating_sub(reserve),
            s.f_files,
            s.f_ffree,
            s.f_bsize as u32,
            NAME_MAX as u32,
            s.f_frsize as u32,
        );
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
        if unsupported_xattr(name.as_bytes()) {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        // The namespaces Linux filesystems store; others (the kernel passes
        // any name to FUSE) are EOPNOTSUPP as on ext4, xfs and tmpfs.
        let known: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];
        if !known.iter().any(|p| name.as_bytes().starts_with(p)) {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        let create = flags & libc::XATTR_CREATE != 0;
        let replace = flags & libc::XATTR_REPLACE != 0;
        match self.writable(ino.0).and_then(|()| {
            self.live
                .set_xattr(ino.0, name.as_bytes(), value, create, replace)
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if unsupported_xattr(name.as_bytes()) {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        let all = self.xattrs(ino.0);
        match all {
            Ok(x) => match x.iter().find(|(k, _)| k == name.as_bytes()) {
                Some((_, v)) if size == 0 => reply.size(v.len() as u32),
                Some((_, v)) if v.len() > size as usize => {
                    reply.error(Errno::from_i32(libc::ERANGE))
                }
                Some((_, v)) => reply.data(v),
                None => reply.error(Errno::from_i32(libc::ENODATA)),
            },
            Err(e) => reply.error(self.errno_about(ino.0, &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let all = self.xattrs(ino.0);
        match all {
            Ok(x) => {
                let mut buf = Vec::new();
                for (k, _) in x.iter().filter(|(k, _)| !unsupported_xattr(k)) {
                    buf.extend_from_slice(k);
                    buf.push(0);
                }
                if size == 0 {
                    reply.size(buf.len() as u32)
                } else if buf.len() > size as usize {
                    reply.error(Errno::from_i32(libc::ERANGE))
                } else {
                    reply.data(&buf)
                }
            }
            Err(e) => reply.error(self.errno_about(ino.0, &e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if unsupported_xattr(name.as_bytes()) {
            return reply.error(Errno::from_i32(libc::EOPNOTSUPP));
        }
        match self
            .writable(ino.0)
            .and_then(|()| self.live.remove_xattr(ino.0, name.as_bytes()))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel checks modes itself.
        reply.ok();
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
        match self.new_node(
            req,
            parent.0,
            name.as_bytes(),
            node(Kind::File, mode & !umask, 0, None),
            true,
        ) {
            Ok((ino, rec)) => {
                self.live.open_files.looked_up(ino);
                reply.created(
                    &LIVE_TTL,
                    &live_attr(ino, &rec),
                    Generation(0),
                    FileHandle(0),
                    FopenFlags::FOPEN_KEEP_CACHE,
                )
            }
            Err(e) => reply.error(errno(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ahead_is_raised_only_on_a_fuse_mount() {
        // A directory on a real disk: refused before any sysfs write, so
        // the disk's own read-ahead stays as it is.
        let dir = tempfile::tempdir().unwrap();
        let dev = std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(dir.path()).unwrap());
        let knob = format!(
            "/sys/class/bdi/{}:{}/read_ahead_kb",
            libc::major(dev),
            libc::minor(dev)
        );
        let before = std::fs::read_to_string(&knob).ok();
        assert!(raise_readahead(dir.path()).is_err());
        assert_eq!(std::fs::read_to_string(&knob).ok(), before);
        assert!(raise_readahead(&dir.path().join("missing")).is_err());
    }
}

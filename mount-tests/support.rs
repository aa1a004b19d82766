//! Helpers for the mount tests: a guard that always unmounts (also on
//! failure and panic), tmpfs and ext4-image guards (the image's power can
//! be cut), polling with a timeout, tree and errno checks, a small tar
//! reader and SQLite runner.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{describe_opts, Attrs, Secrate};

/// How long a background mount process may take to finish its last upload
/// after an unmount before the guard kills it.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(300);

/// True when this process can mount FUSE filesystems; otherwise says why
/// the test is skipped.
pub fn fuse_ready(test: &str) -> bool {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {test}: mount tests need root (FUSE mounts are root-only here)");
        return false;
    }
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED {test}: /dev/fuse is missing");
        return false;
    }
    true
}

/// Is a program on PATH?
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Fail (never skip) when a program the test needs is missing.
pub fn require(program: &str, package: &str) {
    assert!(
        have(program),
        "`{program}` is not installed: the mount tests need it; scripts/test.sh must install it \
         (apt-get install {package})"
    );
}

/// Poll `cond` every 50 ms until it holds; panic after `timeout`.
pub fn poll_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if cond() {
            return;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `\040`-style escapes of /proc/self/mountinfo.
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Is something mounted exactly at `p` (an absolute, canonical path)?
pub fn is_mounted(p: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|m| unescape_mountinfo(m) == p.as_os_str().as_bytes())
    })
}

/// Does `pid` still run? A zombie has finished (nobody may reap it here).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .unwrap_or("X");
    !matches!(state, "Z" | "X" | "x")
}

fn out_text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout).trim_end(),
        String::from_utf8_lossy(&o.stderr).trim_end()
    )
}

/// The length of every staged file in the mount cache `cache`, added up
/// (what eviction has left).
pub fn staged_bytes(cache: &Path) -> u64 {
    fs::read_dir(cache.join("staged"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.metadata().map_or(0, |m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}

/// Run a program, require success, return stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed: {}", out_text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A `Secrate` for the same store and environment.
pub fn same(s: &Secrate) -> Secrate {
    Secrate {
        store: s.store.clone(),
        envs: s.envs.clone(),
    }
}

/// A running `secrate mount`. Dropping it always leaves nothing mounted:
/// a lazy `fusermount3 -uz` if still mounted, then the background process
/// gets time to finish its last upload and is killed after that.
pub struct Mount {
    pub mnt: PathBuf,
    pub cache: PathBuf,
    pub s: Secrate,
    pub pid: Option<u32>,
}

/// A repository on a `file://` store in `work/store`, created.
pub fn file_repo(work: &Path) -> Secrate {
    let s = Secrate::new(&format!("file://{}/store", work.display()));
    s.init();
    s
}

impl Mount {
    /// `s` mounted at `work/mnt`, its cache in `work/cache` (`new`).
    pub fn in_dir(s: &Secrate, work: &Path, extra: &[&str]) -> Mount {
        Mount::new(s, &work.join("mnt"), &work.join("cache"), extra)
    }

    /// `secrate mount MNT --cache CACHE --snapshot-interval 0 EXTRA...`:
    /// snapshots only when a test asks, so history is deterministic (unless
    /// EXTRA sets its own `--snapshot-interval`).
    pub fn new(s: &Secrate, mnt: &Path, cache: &Path, extra: &[&str]) -> Mount {
        fs::create_dir_all(mnt).unwrap();
        let mnt = fs::canonicalize(mnt).unwrap();
        let mut m = Mount {
            mnt,
            cache: cache.to_path_buf(),
            s: same(s),
            pid: None,
        };
        let mut args = vec![
            "mount",
            m.mnt.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ];
        if !extra.contains(&"--snapshot-interval") {
            args.extend_from_slice(&["--snapshot-interval", "0"]);
        }
        args.extend_from_slice(extra);
        let t = Instant::now();
        let o = m.s.run(&args);
        eprintln!("  secrate mount: {:.1}s", t.elapsed().as_secs_f64());
        // The background process writes its pid into the lock once it serves.
        m.pid = fs::read_to_string(cache.join("lock"))
            .ok()
            .and_then(|p| p.trim().parse().ok());
        register(Active::Fuse(m.mnt.clone(), m.pid));
        assert!(
            o.status.success(),
            "secrate {args:?} failed: {}\nmount.log:\n{}",
            out_text(&o),
            m.log()
        );
        assert!(
            is_mounted(&m.mnt),
            "secrate mount returned 0 but nothing is mounted at {}",
            m.mnt.display()
        );
        m
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.cache.join("mount.log")).unwrap_or_default()
    }

    /// Wait for the background process to exit (it exits only after its
    /// last upload).
    pub fn wait_exit(&self) {
        if let Some(pid) = self.pid {
            poll_until(
                &format!("the background mount process {pid} to exit"),
                EXIT_TIMEOUT,
                || !pid_alive(pid),
            );
        }
    }

    /// `secrate umount MNT`: must succeed, leave nothing mounted, and the
    /// background process must exit.
    pub fn umount(&mut self) {
        let mnt = self.mnt.to_str().unwrap().to_string();
        let t = Instant::now();
        let o = self.s.run(&["umount", &mnt]);
        assert!(
            o.status.success(),
            "secrate umount failed: {}\nmount.log:\n{}",
            out_text(&o),
            self.log()
        );
        self.wait_exit();
        eprintln!("  secrate umount: {:.1}s", t.elapsed().as_secs_f64());
        assert!(!is_mounted(&self.mnt), "still mounted after secrate umount");
    }

    /// `fusermount3 -u MNT`, then wait for the background process to finish
    /// its flush and exit.
    pub fn fusermount_u(&mut self) {
        run_ok(Command::new("fusermount3").arg("-u").arg(&self.mnt));
        assert!(!is_mounted(&self.mnt), "still mounted after fusermount3 -u");
        self.wait_exit();
    }

    /// `secrate snapshot MNT` (waits for the upload).
    pub fn snapshot(&self) -> String {
        let t = Instant::now();
        let o = self.s.run(&["snapshot", self.mnt.to_str().unwrap()]);
        eprintln!("  secrate snapshot: {:.1}s", t.elapsed().as_secs_f64());
        assert!(
            o.status.success(),
            "secrate snapshot failed: {}\nmount.log:\n{}",
            out_text(&o),
            self.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The names in directory `rel` of the mount, sorted.
    pub fn names(&self, rel: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.path(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    /// Snapshot directory names in `.history`, oldest first (by time, then
    /// collision suffix), without `latest`.
    pub fn history(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.path(".history"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "latest")
            .collect();
        for n in &names {
            assert!(
                valid_snapshot_name(n),
                "bad snapshot directory name {n:?} in .history"
            );
        }
        names.sort_by_key(|n| history_key(n));
        names
    }

    /// Where `.history/latest` points.
    pub fn latest(&self) -> String {
        fs::read_link(self.path(".history/latest"))
            .unwrap()
            .into_os_string()
            .into_string()
            .unwrap()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of {}/mount.log ---", self.cache.display());
            for l in tail.iter().rev() {
                eprintln!("  | {l}");
            }
        }
        if is_mounted(&self.mnt) {
            let ok = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let c = std::ffi::CString::new(self.mnt.as_os_str().as_bytes()).unwrap();
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        if let Some(pid) = self.pid {
            let start = Instant::now();
            while pid_alive(pid) && start.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if pid_alive(pid) {
                eprintln!(
                    "killing the background mount process {pid}: still running 60 s after unmount"
                );
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        unregister(&self.mnt);
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` with an optional `-N` suffix.
pub fn valid_snapshot_name(n: &str) -> bool {
    let (base, suffix) = match n.split_once("Z-") {
        Some((b, s)) => (format!("{b}Z"), Some(s)),
        None => (n.to_string(), None),
    };
    let b = base.as_bytes();
    let shape = b.len() == 20
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'Z',
            _ => c.is_ascii_digit(),
        });
    shape && suffix.is_none_or(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
}

fn history_key(n: &str) -> (String, u64) {
    match n.split_once("Z-") {
        Some((b, s)) => (format!("{b}Z"), s.parse().unwrap_or(0)),
        None => (n.to_string(), 0),
    }
}

/// A tmpfs mounted at `dir` for as long as this lives.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn new(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let dir = fs::canonicalize(dir).unwrap();
        run_ok(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0700"),
                    "tmpfs",
                ])
                .arg(&dir),
        );
        register(Active::Disk(dir.clone()));
        Tmpfs { dir }
    }

    /// Free bytes (for root: f_bfree).
    pub fn free(&self) -> u64 {
        let c = std::ffi::CString::new(self.dir.as_os_str().as_bytes()).unwrap();
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
        s.f_bfree * s.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let c = std::ffi::CString::new(self.dir.as_os_str().as_bytes()).unwrap();
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        unregister(&self.dir);
    }
}

/// An ext4 file system in an image file, loop-mounted at `dir` for as long
/// as this lives: a cache disk whose power can be cut. `power_cut` shuts
/// the file system down without flushing its journal
/// (`EXT4_IOC_SHUTDOWN` with `EXT4_GOING_FLAGS_NOLOGFLUSH`, what xfstests
/// uses to simulate a power failure): what the disk had at that moment is
/// all that is left, page-cache data and uncommitted journal included;
/// `remount` then replays the journal as a boot after the cut would.
pub struct Ext4Image {
    pub dir: PathBuf,
    image: PathBuf,
}

impl Ext4Image {
    pub fn new(dir: &Path, image: &Path, size: &str) -> Ext4Image {
        fs::create_dir_all(dir).unwrap();
        let dir = fs::canonicalize(dir).unwrap();
        run_ok(Command::new("truncate").args(["-s", size]).arg(image));
        run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image));
        let img = Ext4Image {
            dir,
            image: image.to_path_buf(),
        };
        img.mount();
        img
    }

    fn mount(&self) {
        run_ok(
            Command::new("mount")
                .args(["-t", "ext4", "-o", "loop"])
                .arg(&self.image)
                .arg(&self.dir),
        );
        register(Active::Disk(self.dir.clone()));
    }

    /// Cut the power: nothing written from now on reaches the disk.
    pub fn power_cut(&self) {
        // _IOR('X', 125, __u32)
        const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d;
        const NOLOGFLUSH: u32 = 2;
        let f = fs::File::open(&self.dir).unwrap();
        let flags = NOLOGFLUSH;
        let r = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                EXT4_IOC_SHUTDOWN as _,
                &flags,
            )
        };
        assert_eq!(r, 0, "EXT4_IOC_SHUTDOWN: {}", io::Error::last_os_error());
    }

    /// Unmount (nothing may still use it) and mount again: the journal is
    /// replayed.
    pub fn remount(&self) {
        run_ok(Command::new("umount").arg(&self.dir));
        unregister(&self.dir);
        self.mount();
    }
}

impl Drop for Ext4Image {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let c = std::ffi::CString::new(self.dir.as_os_str().as_bytes()).unwrap();
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        unregister(&self.dir);
    }
}

/// A mount the signal handler must undo if the test process is stopped
/// by a signal (Ctrl-C, a CI timeout), when no destructor runs.
enum Active {
    Fuse(PathBuf, Option<u32>),
    /// A tmpfs or a loop-mounted image (caches may be on it).
    Disk(PathBuf),
}

static ACTIVE: std::sync::Mutex<Vec<Active>> = std::sync::Mutex::new(Vec::new());

fn register(a: Active) {
    static HANDLER: std::sync::Once = std::sync::Once::new();
    HANDLER.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
            return;
        };
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                eprintln!("signal {sig}: undoing the test mounts");
                let active = std::mem::take(&mut *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()));
                // FUSE mounts first (their caches may be on a tmpfs). No
                // time for a last upload: the run is being aborted.
                for a in &active {
                    if let Active::Fuse(mnt, pid) = a {
                        if is_mounted(mnt) {
                            unsafe { libc::umount2(cstr(mnt).as_ptr(), libc::MNT_DETACH) };
                        }
                        if let Some(pid) = pid.filter(|&p| pid_alive(p)) {
                            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                        }
                    }
                }
                for a in &active {
                    if let Active::Disk(dir) = a {
                        if is_mounted(dir) {
                            unsafe { libc::umount2(cstr(dir).as_ptr(), libc::MNT_DETACH) };
                        }
                    }
                }
                std::process::exit(128 + sig);
            }
        });
    });
    ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).push(a);
}

fn unregister(path: &Path) {
    ACTIVE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|a| match a {
            Active::Fuse(p, _) | Active::Disk(p) => p != path,
        });
}

/// A tree's description: relative path → attributes, hard-link groups.
pub type Desc = (HashMap<PathBuf, Attrs>, Vec<Vec<PathBuf>>);

pub fn desc(root: &Path) -> Desc {
    describe_opts(root, true)
}

/// Assert two tree descriptions are equal, listing the differences.
pub fn assert_same_desc(a: &Desc, b: &Desc, what: &str) {
    let mut diffs = Vec::new();
    for (p, x) in &a.0 {
        match b.0.get(p) {
            None => diffs.push(format!("{}: missing in the second", p.display())),
            Some(y) if x != y => diffs.push(format!("{}:\n  {x:?}\n  {y:?}", p.display())),
            _ => {}
        }
    }
    for p in b.0.keys() {
        if !a.0.contains_key(p) {
            diffs.push(format!("{}: only in the second", p.display()));
        }
    }
    if a.1 != b.1 {
        diffs.push(format!("hard links differ: {:?} vs {:?}", a.1, b.1));
    }
    diffs.sort();
    assert!(
        diffs.is_empty(),
        "{what}: {} differences:\n{}",
        diffs.len(),
        diffs
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Require `r` to fail with `errno`.
pub fn expect_errno<T: std::fmt::Debug>(what: &str, r: io::Result<T>, errno: i32) {
    match r {
        Ok(v) => panic!(
            "{what}: succeeded ({v:?}), expected {}",
            io::Error::from_raw_os_error(errno)
        ),
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(errno),
            "{what}: got {e}, expected {}",
            io::Error::from_raw_os_error(errno)
        ),
    }
}

/// Turn a libc return value into an io::Result.
pub fn cvt(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Create (or truncate) `p`, write `data` and fsync it.
pub fn write_synced(p: &Path, data: &[u8]) {
    let mut f = fs::File::create(p).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

/// How many pages of the file at `p` are in the kernel's page cache
/// (mincore of a read-only shared mapping, which faults nothing in).
pub fn cached_pages(p: &Path) -> usize {
    use std::os::unix::io::AsRawFd;
    let f = fs::File::open(p).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    if len == 0 {
        return 0;
    }
    let page = 4096;
    let pages = len.div_ceil(page);
    // SAFETY: a fresh read-only mapping of an open file, unmapped below;
    // `vec` holds one byte per page of it.
    unsafe {
        let at = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert!(
            at != libc::MAP_FAILED,
            "mmap: {}",
            io::Error::last_os_error()
        );
        let mut vec = vec![0u8; pages];
        let r = libc::mincore(at, len, vec.as_mut_ptr());
        let e = io::Error::last_os_error();
        libc::munmap(at, len);
        assert_eq!(r, 0, "mincore: {e}");
        vec.iter().filter(|b| **b & 1 == 1).count()
    }
}

pub fn cstr(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Deterministic pseudo-random bytes.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// One tar member as far as a comparison cares.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct TarMember {
    pub kind: u8,
    pub mode: u64,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
    pub link: Vec<u8>,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    pub content: [u8; 32],
}

fn cstr_field(b: &[u8]) -> Vec<u8> {
    b.iter().take_while(|&&c| c != 0).copied().collect()
}

fn octal(b: &[u8]) -> u64 {
    if b.first().is_some_and(|&c| c & 0x80 != 0) {
        // GNU base-256.
        return b[1..].iter().fold(0u64, |n, &c| (n << 8) | c as u64);
    }
    let s = String::from_utf8_lossy(&cstr_field(b)).trim().to_string();
    if s.is_empty() {
        0
    } else {
        u64::from_str_radix(&s, 8).unwrap_or_else(|_| panic!("bad octal tar field {s:?}"))
    }
}

/// Read a GNU/ustar archive: member name → member.
pub fn tar_members(path: &Path) -> BTreeMap<Vec<u8>, TarMember> {
    let mut data = Vec::new();
    fs::File::open(path)
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    let mut out = BTreeMap::new();
    let mut pos = 0;
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    while pos + 512 <= data.len() {
        let h = &data[pos..pos + 512];
        if h.iter().all(|&c| c == 0) {
            break;
        }
        let size = octal(&h[124..136]);
        let kind = h[156];
        let body = &data[pos + 512..pos + 512 + size as usize];
        pos += 512 + (size as usize).div_ceil(512) * 512;
        match kind {
            b'L' => {
                long_name = Some(cstr_field(body));
                continue;
            }
            b'K' => {
                long_link = Some(cstr_field(body));
                continue;
            }
            _ => {}
        }
        let name = long_name.take().unwrap_or_else(|| {
            let prefix = cstr_field(&h[345..500]);
            let n = cstr_field(&h[0..100]);
            if &h[257..262] == b"ustar" && h[263] == b'0' && !prefix.is_empty() {
                [prefix, b"/".to_vec(), n].concat()
            } else {
                n
            }
        });
        let link = long_link.take().unwrap_or_else(|| cstr_field(&h[157..257]));
        let m = TarMember {
            kind,
            mode: octal(&h[100..108]),
            uid: octal(&h[108..116]),
            gid: octal(&h[116..124]),
            size,
            mtime: octal(&h[136..148]),
            link,
            uname: cstr_field(&h[265..297]),
            gname: cstr_field(&h[297..329]),
            content: *blake3::hash(body).as_bytes(),
        };
        assert!(
            out.insert(name.clone(), m).is_none(),
            "{} holds {:?} twice",
            path.display(),
            String::from_utf8_lossy(&name)
        );
    }
    out
}

/// Run SQL against a database with the sqlite3 CLI, or with python3's
/// sqlite3 module when the CLI is missing; returns the rows printed
/// (columns joined by `|`, one row a line). Fails if neither exists.
pub fn sqlite(db: &Path, sql: &str) -> String {
    let mut cmd = if have("sqlite3") {
        let mut c = Command::new("sqlite3");
        c.args(["-batch", "-bail"]).arg(db);
        c
    } else if have("python3") {
        let mut c = Command::new("python3");
        c.arg("-c")
            .arg(
                r#"
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
buf = ""
for line in sys.stdin.read().splitlines(True):
    buf += line
    if sqlite3.complete_statement(buf):
        for row in con.execute(buf):
            print("|".join(str(c) for c in row))
        buf = ""
if buf.strip():
    raise SystemExit("incomplete statement: " + buf)
con.close()
"#,
            )
            .arg(db);
        c
    } else {
        panic!(
            "neither the sqlite3 CLI nor python3 is installed: scripts/test.sh must install one \
             (apt-get install sqlite3)"
        );
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "sqlite on {} failed: {}\nSQL:\n{sql}",
        db.display(),
        out_text(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Prints how long each step of a test took (information only, never
/// asserted: speed is for benchmarks).
pub struct Clock {
    start: Instant,
    last: std::cell::Cell<Instant>,
}

impl Clock {
    pub fn new() -> Clock {
        let now = Instant::now();
        Clock {
            start: now,
            last: std::cell::Cell::new(now),
        }
    }

    pub fn step(&self, what: &str) {
        let now = Instant::now();
        eprintln!(
            "  [{:6.1}s +{:5.1}s] {what}",
            (now - self.start).as_secs_f64(),
            (now - self.last.get()).as_secs_f64()
        );
        self.last.set(now);
    }
}

/// A private s3s-fs server (the one scripts/lib/s3-server.sh installs) that
/// a test can stop and start again on the same port and root directory, to
/// take the store away for real. Dropping it kills the server.
pub struct S3Server {
    bin: PathBuf,
    pub port: u16,
    /// The server's root; the bucket is its subdirectory `bucket`.
    pub root: PathBuf,
    key: String,
    secret: String,
    child: Option<std::process::Child>,
    log: PathBuf,
}

impl S3Server {
    /// `$S3_TOOLS/bin/s3s-fs` (else `$SECRATE_TOOLS`, else
    /// `~/.cache/secrate-tools`). `None` (with a note) when it is missing and
    /// this is not a scripts/test.sh run; under scripts/test.sh
    /// (`SECRATE_TEST_S3_URL` set), which installs it, a missing binary fails
    /// the test.
    pub fn binary(test: &str) -> Option<PathBuf> {
        let tools = std::env::var_os("S3_TOOLS")
            .or_else(|| std::env::var_os("SECRATE_TOOLS"))
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/secrate-tools")
            });
        let bin = tools.join("bin/s3s-fs");
        if bin.is_file() {
            return Some(bin);
        }
        assert!(
            std::env::var_os("SECRATE_TEST_S3_URL").is_none(),
            "{} is missing: {test} needs it; scripts/test.sh installs it (scripts/lib/s3-server.sh)",
            bin.display()
        );
        eprintln!(
            "note: SKIPPED {test}: {} is missing and SECRATE_TEST_S3_URL is not set (scripts/test.sh installs and sets both)",
            bin.display()
        );
        None
    }

    /// Start a server on a free loopback port with a fresh root directory
    /// under `dir` holding the bucket `bucket`, and random credentials.
    pub fn start(bin: &Path, dir: &Path, bucket: &str) -> S3Server {
        let root = dir.join("s3-root");
        fs::create_dir_all(root.join(bucket)).unwrap();
        // Below Linux's ephemeral range (32768-60999), so no outgoing
        // connection takes the port while the server is stopped.
        let port = (0..1000)
            .map(|_| rand::random::<u16>() % 12_000 + 20_000)
            .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
            .expect("a free loopback port below 32000");
        let mut s = S3Server {
            bin: bin.to_path_buf(),
            port,
            root,
            key: format!("secrate{}", hex::encode(rand::random::<[u8; 8]>())),
            secret: hex::encode(rand::random::<[u8; 20]>()),
            child: None,
            log: dir.join("s3s-fs.log"),
        };
        s.resume();
        s
    }

    /// The environment that points secrate at this server.
    pub fn envs(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret.clone()),
            (
                "AWS_ENDPOINT_URL".into(),
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("NO_PROXY".into(), "127.0.0.1,localhost".into()),
        ]
    }

    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL the server and reap it: the store is gone, connections reset.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the server (again) on the same port and root; waits until it
    /// accepts connections.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the S3 server is already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", &self.key, "--secret-key", &self.secret])
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                self.running(),
                "s3s-fs exited at start (port {}); its log:\n{}",
                self.port,
                fs::read_to_string(&self.log).unwrap_or_default()
            );
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "s3s-fs does not accept connections on port {} after 30 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

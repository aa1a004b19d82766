//! Empty staged files made ahead of need. Making a file on the cache disk
//! is most of what creating a file through the mount costs: the cache
//! filesystem searches its inode bitmaps, and ext4 without a journal passes
//! over every inode freed in the last minutes (`recently_deleted`), so
//! right after a large `rm -rf` each new file takes tens of µs. A thread
//! keeps a few unnamed files (`O_TMPFILE` in `staged/`) ready, and a create
//! names one (`linkat`), which only adds a directory entry.
//!
//! Never a source of loss: an unnamed file holds nothing and vanishes with
//! the process, so a crash leaves nothing behind, and naming one is the
//! same directory change a direct create makes. Where the pool is empty,
//! the cache filesystem has no `O_TMPFILE`, or naming fails for any reason,
//! the create makes its file directly, and that error is the one reported.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Unnamed files kept ready: enough for a burst of creates while the
/// thread catches up, few enough to be nothing on the disk.
pub(super) const DEPTH: usize = 64;

pub struct Spares {
    /// `staged/`, where the files are made and named.
    path: PathBuf,
    dir: File,
    pool: Mutex<Pool>,
    wake: Condvar,
    /// Naming through `AT_EMPTY_PATH` was refused (it needs
    /// CAP_DAC_READ_SEARCH before Linux 6.10): go through `/proc` instead.
    by_proc: AtomicBool,
}

#[derive(Default)]
struct Pool {
    files: Vec<File>,
    started: bool,
    /// The thread waits for `wake`.
    waiting: bool,
    /// The last attempt to make a file failed (a full disk): the thread
    /// tries again only after the next take.
    failed: bool,
    /// No more files: the filesystem cannot make them, or the tree is
    /// closing.
    off: bool,
}

impl Spares {
    pub fn new(staged: &Path) -> std::io::Result<Spares> {
        Ok(Spares {
            path: staged.to_path_buf(),
            dir: File::open(staged)?,
            pool: Mutex::new(Pool::default()),
            wake: Condvar::new(),
            by_proc: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ready unnamed file, if there is one. The first call starts the
    /// thread that makes them.
    pub fn take(self: &Arc<Self>) -> Option<File> {
        let mut p = self.lock();
        if !p.started {
            p.started = true;
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name("secrate-spares".into())
                .spawn(move || me.run());
            if let Err(e) = spawned {
                crate::log!("warning: files are created directly: cannot start a thread: {e}");
                p.off = true;
            }
        }
        let f = p.files.pop();
        p.failed = false;
        // Refilled in batches: waking a thread costs more than a file.
        if p.waiting && p.files.len() <= DEPTH / 2 {
            self.wake.notify_one();
        }
        f
    }

    /// How many files are ready, and the one `take` gives next (inode
    /// number and birth time: a number freed is soon given out again).
    #[cfg(test)]
    pub fn ready(&self) -> (usize, Option<(u64, std::time::SystemTime)>) {
        use std::os::unix::fs::MetadataExt;
        let p = self.lock();
        let next = p.files.last().map(|f| {
            let m = f.metadata().unwrap();
            (m.ino(), m.created().unwrap())
        });
        (p.files.len(), next)
    }

    /// Make one unnamed file in `staged/`.
    pub fn make(&self) -> std::io::Result<File> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(&self.path)
    }

    /// Give the unnamed file `f` the name `name` in `staged/`.
    pub fn name(&self, f: &File, name: &str) -> std::io::Result<()> {
        let to = CString::new(name).map_err(std::io::Error::other)?;
        if !self.by_proc.load(Ordering::Relaxed) {
            // SAFETY: both descriptors are open for the call and both
            // strings are NUL-terminated.
            let r = unsafe {
                libc::linkat(
                    f.as_raw_fd(),
                    c"".as_ptr(),
                    self.dir.as_raw_fd(),
                    to.as_ptr(),
                    libc::AT_EMPTY_PATH,
                )
            };
            if r == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(e);
            }
            // Without the capability the kernel answers ENOENT.
            self.by_proc.store(true, Ordering::Relaxed);
        }
        let from = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))
            .map_err(std::io::Error::other)?;
        // SAFETY: as above.
        let r = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                self.dir.as_raw_fd(),
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            // No `/proc` either: every create makes its file directly.
            self.close();
        }
        Err(e)
    }

    /// Stop making files and let go of the ready ones.
    pub fn close(&self) {
        let mut p = self.lock();
        p.off = true;
        p.files.clear();
        self.wake.notify_all();
    }

    fn run(&self) {
        loop {
            let mut p = self.lock();
            while !p.off && (p.files.len() >= DEPTH || p.failed) {
                // Asleep until the pool is half empty (see `take`).
                p.waiting = true;
                p = self.wake.wait(p).unwrap_or_else(|e| e.into_inner());
                p.waiting = false;
            }
            if p.off {
                return;
            }
            drop(p);
            let made = self.make();
            let mut p = self.lock();
            match made {
                Ok(f) if !p.off => p.files.push(f),
                Ok(_) => return,
                Err(e) if unsupported(&e) => {
                    crate::log!(
                        "files are created directly: the cache cannot make unnamed files: {e}"
                    );
                    p.off = true;
                    return;
                }
                Err(_) => p.failed = true,
            }
        }
    }
}

/// The cache filesystem (or kernel) has no `O_TMPFILE`.
fn unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
    )
}

/// Wait (up to 30 s, then fail with `what`) for the thread to bring
/// about `done`.
#[cfg(test)]
pub(super) fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn an_unnamed_file_gets_its_name_with_what_was_written_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spares::new(dir.path()).unwrap();
        let mut f = s.make().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        f.write_all(b"before the name").unwrap();
        s.name(&f, "17").unwrap();
        f.write_all(b", after").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("17")).unwrap(),
            b"before the name, after"
        );
        // A name that is taken is refused, never overwritten.
        let g = s.make().unwrap();
        let e = s.name(&g, "17").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        let mut back = String::new();
        f.rewind().unwrap();
        f.read_to_string(&mut back).unwrap();
        assert_eq!(back, "before the name, after");
    }

    #[test]
    fn naming_through_proc_works_too() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spares::new(dir.path()).unwrap();
        s.by_proc.store(true, Ordering::Relaxed);
        let mut f = s.make().unwrap();
        f.write_all(b"x").unwrap();
        s.name(&f, "20").unwrap();
        assert_eq!(std::fs::read(dir.path().join("20")).unwrap(), b"x");
    }

    #[test]
    fn the_pool_fills_after_the_first_take_and_stops_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(Spares::new(dir.path()).unwrap());
        assert!(s.take().is_none(), "nothing is made before it is needed");
        wait_until("pool never filled", || s.lock().files.len() >= DEPTH);
        let f = s.take().unwrap();
        s.name(&f, "5").unwrap();
        // Unnamed files take no name in the directory.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("5")]);
        // Refilled once half are gone.
        for _ in 1..=DEPTH / 2 {
            assert!(s.take().is_some());
        }
        wait_until("pool never refilled", || s.lock().files.len() >= DEPTH);
        s.close();
        assert!(s.take().is_none());
        wait_until("thread never ended", || Arc::strong_count(&s) == 1);
    }
}

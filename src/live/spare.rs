//! Empty staged files made ahead of need, under the names the next creates
//! will give them. Making a file on the cache disk is most of what creating
//! a file through the mount costs: the cache filesystem allocates an inode
//! (ext4 without a journal passes over every inode freed in the last
//! minutes, `recently_deleted`, so right after a large `rm -rf` each new
//! file takes tens of µs) and adds a directory entry (a search of a
//! directory block for the name, then for room: 11 % of the daemon's time
//! in an untar when a create named an unnamed file made ahead). Inode
//! numbers are given out in order, so a thread makes `staged/<n>` for the
//! next `DEPTH` numbers on the other core, and a create that gets number
//! `n` takes that file without a system call.
//!
//! Never a source of loss: the thread only ever makes a name that does not
//! exist (`O_EXCL`), so it never empties or touches a file some inode
//! uses; a name already there (left by a crash that rolled the counter
//! back) is skipped, and that create empties it as it always did. A file
//! made for a number that was given out meanwhile is simply the file the
//! create opens by name. Files made ahead and never used are empty and
//! carry numbers no record has (or a directory's): a clean stop removes
//! them, and after a crash the next start does, with every staged file no
//! record wants. Where a file is not ready, or making one fails, the
//! create makes its file itself.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Files kept ready: enough for a burst of creates while the thread
/// catches up, few enough to be nothing on the disk.
pub(super) const DEPTH: u64 = 64;

/// How many unused numbers are remembered for `close` to report; beyond
/// that the next start removes their files.
const UNUSED_MAX: usize = 1 << 16;

pub struct Spares {
    /// `staged/`, where the files are made.
    dir: File,
    pool: Mutex<Pool>,
    wake: Condvar,
}

#[derive(Default)]
struct Pool {
    /// Empty files made here, by the inode number they are named after.
    files: BTreeMap<u64, File>,
    /// The lowest number not given out yet (as far as creates told):
    /// files are made for the `DEPTH` numbers from here.
    next: u64,
    /// Numbers from `next` on whose name exists already: skipped.
    taken: BTreeSet<u64>,
    /// Numbers given out whose file made ahead no create took (a directory,
    /// a symlink): empty files left in `staged/` (at most `UNUSED_MAX`).
    unused: Vec<u64>,
    started: bool,
    /// The thread waits for `wake`.
    waiting: bool,
    /// The last attempt to make a file failed (a full disk): the thread
    /// tries again only after the next take.
    failed: bool,
    /// No more files: the tree is closing.
    off: bool,
}

impl Pool {
    /// The lowest number in the window with no file made or found.
    fn wanted(&self) -> Option<u64> {
        (self.next..self.next + DEPTH)
            .find(|n| !self.files.contains_key(n) && !self.taken.contains(n))
    }
}

impl Spares {
    pub fn new(staged: &Path) -> std::io::Result<Spares> {
        Ok(Spares {
            dir: File::open(staged)?,
            pool: Mutex::new(Pool::default()),
            wake: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The empty file `staged/<ino>`, if it was made ahead, for the create
    /// that was just given number `ino`. The first call starts the thread
    /// that makes them.
    pub fn take(self: &Arc<Self>, ino: u64) -> Option<File> {
        let mut p = self.lock();
        if p.off {
            return None;
        }
        if !p.started {
            p.started = true;
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name("secrate-spares".into())
                .spawn(move || me.run());
            if let Err(e) = spawned {
                crate::log!("warning: files are created directly: cannot start a thread: {e}");
                p.off = true;
                return None;
            }
        }
        p.next = p.next.max(ino + 1);
        let f = p.files.remove(&ino);
        // Files of numbers given out are no longer ours to hand out.
        let next = p.next;
        let rest = p.files.split_off(&next);
        let passed = std::mem::replace(&mut p.files, rest);
        if p.unused.len() < UNUSED_MAX {
            p.unused.extend(passed.into_keys());
        }
        p.taken = p.taken.split_off(&next);
        p.failed = false;
        // Refilled in batches: waking a thread costs more than a file.
        if p.waiting && p.files.len() as u64 <= DEPTH / 2 {
            self.wake.notify_one();
        }
        f
    }

    /// How many files are ready, and the inode (on the cache disk) of the
    /// one made for number `ino`.
    #[cfg(test)]
    pub fn ready(&self, ino: u64) -> (usize, Option<u64>) {
        use std::os::unix::fs::MetadataExt;
        let p = self.lock();
        let made = p.files.get(&ino).map(|f| f.metadata().unwrap().ino());
        (p.files.len(), made)
    }

    /// Make the empty file `staged/<n>`, unless that name exists.
    fn make(&self, n: u64) -> std::io::Result<File> {
        let name = CString::new(n.to_string()).map_err(std::io::Error::other)?;
        // SAFETY: the directory is open and the name NUL-terminated; the
        // descriptor returned is new and owned by the File.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Stop making files and let go of the ready ones. Returns the
    /// numbers of every file made here that no create took (some may have
    /// gone to a file that made its own, racing the thread: the caller
    /// checks the records).
    pub fn close(&self) -> Vec<u64> {
        let mut p = self.lock();
        p.off = true;
        let files = std::mem::take(&mut p.files);
        let mut unused = std::mem::take(&mut p.unused);
        unused.extend(files.into_keys());
        self.wake.notify_all();
        unused
    }

    fn run(&self) {
        loop {
            let mut p = self.lock();
            while !p.off && (p.failed || p.files.len() as u64 >= DEPTH || p.wanted().is_none()) {
                // Asleep until half the window is used (see `take`).
                p.waiting = true;
                p = self.wake.wait(p).unwrap_or_else(|e| e.into_inner());
                p.waiting = false;
            }
            if p.off {
                return;
            }
            let Some(n) = p.wanted() else { continue };
            drop(p);
            let made = self.make(n);
            let mut p = self.lock();
            if !self.settle(&mut p, n, made) {
                return;
            }
        }
    }

    /// Keep or account for the file just made for number `n`; false once
    /// the tree is closing.
    fn settle(&self, p: &mut Pool, n: u64, made: std::io::Result<File>) -> bool {
        match made {
            Ok(f) if !p.off && n >= p.next => {
                p.files.insert(n, f);
            }
            // No create can take it now (the session is over).
            Ok(_) if p.off => {
                if n >= p.next {
                    self.remove(n);
                }
                // Else a create may have opened it by name: the next
                // start's recovery keeps it or removes it.
                return false;
            }
            // A number given out meanwhile: a create opens this file by
            // name (or found the name taken and uses its own), or it went
            // to a directory or a symlink and nothing will: left for
            // `close`'s caller to decide by the records, as the unused.
            Ok(_) => {
                if p.unused.len() < UNUSED_MAX {
                    p.unused.push(n);
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                if n >= p.next {
                    p.taken.insert(n);
                }
            }
            Err(_) => p.failed = true,
        }
        true
    }

    /// Remove `staged/<n>`, made here and taken by nobody.
    fn remove(&self, n: u64) {
        if let Ok(name) = CString::new(n.to_string()) {
            // SAFETY: the directory is open and the name NUL-terminated.
            unsafe { libc::unlinkat(self.dir.as_raw_fd(), name.as_ptr(), 0) };
        }
    }
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
    use std::os::unix::fs::MetadataExt;

    /// A file made for a number that was given out while it was being
    /// made (to a directory, say: no create takes it) is reported as
    /// unused, and one made after the close is removed. (Stop 30: both
    /// were left in `staged/` after a clean stop.)
    #[test]
    fn a_file_made_too_late_is_not_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spares::new(dir.path()).unwrap();
        let mut p = Pool {
            next: 11,
            ..Pool::default()
        };
        assert!(s.settle(&mut p, 10, s.make(10)));
        assert_eq!(p.unused, vec![10]);
        assert!(
            dir.path().join("10").exists(),
            "a create may open it by name"
        );
        p.off = true;
        assert!(!s.settle(&mut p, 12, s.make(12)));
        assert!(!dir.path().join("12").exists());
        assert!(!s.settle(&mut p, 9, s.make(9)));
        assert!(dir.path().join("9").exists(), "a create may have opened it");
    }

    #[test]
    fn files_are_made_for_the_next_numbers_and_a_name_in_use_is_never_touched() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(Spares::new(dir.path()).unwrap());
        assert!(s.take(100).is_none(), "nothing is made before it is needed");
        wait_until("window never filled", || s.ready(0).0 as u64 >= DEPTH);
        let made = s.ready(101).1.expect("a file for the next number");
        let f = s.take(101).unwrap();
        assert_eq!(f.metadata().unwrap().ino(), made);
        assert_eq!(
            std::fs::metadata(dir.path().join("101")).unwrap().ino(),
            made,
            "made under its number"
        );
        // A name beyond the window exists already (a crash rolled the
        // counter back): skipped, its content left alone.
        let stale = 141 + DEPTH - 3;
        std::fs::write(dir.path().join(stale.to_string()), b"stale").unwrap();
        // Numbers 102-139 went to creates that did not ask: their files
        // leave the window, which is then refilled from 141.
        assert!(s.take(140).is_some());
        assert!((102..141).all(|n| s.ready(n).1.is_none()));
        wait_until("window never refilled", || {
            (141..141 + DEPTH)
                .filter(|&n| n != stale)
                .all(|n| s.ready(n).1.is_some())
        });
        assert_eq!(s.ready(stale).1, None);
        assert!(s.take(stale).is_none());
        assert_eq!(
            std::fs::read(dir.path().join(stale.to_string())).unwrap(),
            b"stale"
        );
        let unused = s.close();
        assert!(
            (102..110).all(|n| unused.contains(&n)),
            "passed over: {unused:?}"
        );
        assert!((141..141 + DEPTH)
            .filter(|&n| n != stale)
            .all(|n| unused.contains(&n)));
        assert!(!unused.contains(&101) && !unused.contains(&140) && !unused.contains(&stale));
        assert!(s.take(stale + 1).is_none());
        wait_until("thread never ended", || Arc::strong_count(&s) == 1);
    }
}

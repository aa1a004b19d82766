//! Free space on the cache disk.
//!
//! The cache database (redb) cannot survive a write that fails for lack of
//! space: after one failed commit it refuses every later transaction until
//! reopened, and the uncommitted changes are gone. So secrate's own writes
//! stop short of the end of the disk and leave the last bytes to the
//! database: user data (staged files, the chunk cache) stops at the full
//! reserve and gets ENOSPC, packs being prepared for upload may use half of
//! it (uploading is what frees space), and only the database writes into the
//! last half. Removing a file always works, so a user who hit ENOSPC can make
//! room again.

use std::io;
use std::path::Path;

/// Who is asking for space, from the first to be refused to the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// User writes, copies of files being sealed, the chunk cache.
    Data,
    /// Packs, index deltas and snapshots waiting in the outbox.
    Outbox,
}

/// Space kept free for the cache database: 1/16 of the filesystem,
/// between 2 MiB and 64 MiB.
pub fn reserve_for(total: u64) -> u64 {
    (total / 16).clamp(2 << 20, 64 << 20)
}

/// (free bytes for unprivileged users, total bytes) of the filesystem
/// holding `dir`, or None when it cannot be asked.
pub fn usage(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let unit = s.f_frsize as u64;
    Some((s.f_bavail as u64 * unit, s.f_blocks as u64 * unit))
}

/// Ok when `need` more bytes fit on the disk holding `dir` without
/// cutting into what `who` must leave free; ENOSPC otherwise.
pub fn check(dir: &Path, need: u64, who: Use) -> io::Result<()> {
    let Some((free, total)) = usage(dir) else {
        // Cannot tell: let the write itself find out.
        return Ok(());
    };
    let keep = match who {
        Use::Data => reserve_for(total),
        Use::Outbox => reserve_for(total) / 2,
    };
    if free < keep.saturating_add(need) {
        return Err(io::Error::from_raw_os_error(libc::ENOSPC));
    }
    Ok(())
}

/// A file holding disk space for the cache database against other programs
/// filling the disk: when free space runs out (below 1 MiB, which
/// secrate's own writes never go, see `check`), it is deleted just before a
/// commit, so the commit has room; it comes back once space returns. A
/// program that keeps writing after that can still take the last bytes.
pub struct Ballast {
    path: std::path::PathBuf,
    present: std::sync::atomic::AtomicBool,
}

/// Size of the ballast file.
const BALLAST: u64 = 4 << 20;

impl Ballast {
    /// The ballast for the cache in `dir` (`dir/ballast`), created now if
    /// there is room.
    pub fn new(dir: &Path) -> Ballast {
        let b = Ballast {
            path: dir.join("ballast"),
            present: std::sync::atomic::AtomicBool::new(false),
        };
        b.fill();
        b
    }

    fn fill(&self) {
        use std::os::fd::AsRawFd;
        use std::sync::atomic::Ordering;
        if std::fs::metadata(&self.path).is_ok_and(|m| m.blocks() * 512 >= BALLAST) {
            self.present.store(true, Ordering::Relaxed);
            return;
        }
        let Ok(f) = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
        else {
            return;
        };
        // SAFETY: a valid open descriptor; fallocate reserves real blocks.
        let ok = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, BALLAST as libc::off_t) } == 0;
        if !ok {
            drop(f);
            let _ = std::fs::remove_file(&self.path);
        }
        self.present.store(ok, Ordering::Relaxed);
    }

    /// Call before committing the database: gives the ballast's space back
    /// when the disk is (nearly) full, puts it back when there is room.
    pub fn before_commit(&self) {
        use std::sync::atomic::Ordering;
        let Some((free, total)) = usage(self.path.parent().unwrap_or(Path::new("."))) else {
            return;
        };
        if self.present.load(Ordering::Relaxed) {
            if free < 1 << 20 {
                let _ = std::fs::remove_file(&self.path);
                self.present.store(false, Ordering::Relaxed);
                crate::log!(
                    "warning: the cache disk is full; released the {} MiB kept for the cache database",
                    BALLAST >> 20
                );
            }
        } else if free > BALLAST + reserve_for(total) {
            self.fill();
        }
    }
}

use std::os::unix::fs::MetadataExt;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_is_bounded() {
        assert_eq!(reserve_for(0), 2 << 20);
        assert_eq!(reserve_for(64 << 20), 4 << 20);
        assert_eq!(reserve_for(1 << 40), 64 << 20);
    }

    #[test]
    fn asking_for_more_than_the_disk_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (_, total) = usage(d.path()).unwrap();
        let e = check(d.path(), total, Use::Outbox).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    }
}

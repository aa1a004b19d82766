//! The disk's writeback of big writes into staged files, started as they
//! come rather than at their fsync.
//!
//! A program writing a big file through the mount ends with an fsync (or
//! the unmount's), and the kernel keeps what the daemon wrote into the
//! staged file in its page cache until then: with the default dirty ratios
//! a 2 GiB file is written to the disk only once the whole of it went
//! through FUSE, so the time is FUSE's transfer plus the disk's, one after
//! the other. On a plain directory the same `dd conv=fsync` costs the
//! disk's time alone. So every `KICK` bytes written into one staged file,
//! a thread asks the kernel to start writing that range
//! (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait for the
//! disk), and the disk works while FUSE brings the rest; the fsync then
//! finds little left to write. Small files never reach `KICK` and are left
//! to the kernel, as before.
//!
//! Nothing here is needed for durability (fsync still does that); a kick
//! that cannot be queued or fails only leaves the data to the fsync.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

/// Bytes written into one staged file between two kicks.
pub(super) const KICK: u64 = 8 << 20;

/// Kicks waiting for the thread; beyond that they are dropped.
const QUEUE: usize = 64;

/// Writes into one staged file since its last kick.
#[derive(Default)]
pub(super) struct Unkicked {
    bytes: u64,
    lo: u64,
    hi: u64,
}

impl Unkicked {
    /// Count a write of `len` bytes at `offset`; the range to kick once
    /// `KICK` bytes were written since the last one.
    pub(super) fn add(&mut self, offset: u64, len: u64) -> Option<(u64, u64)> {
        let end = offset + len;
        if self.bytes == 0 {
            (self.lo, self.hi) = (offset, end);
        } else {
            self.lo = self.lo.min(offset);
            self.hi = self.hi.max(end);
        }
        self.bytes += len;
        if self.bytes < KICK {
            return None;
        }
        self.bytes = 0;
        Some((self.lo, self.hi))
    }
}

struct Kick {
    file: Arc<File>,
    lo: u64,
    hi: u64,
}

/// The thread that starts writeback, started at the first kick and ended
/// when its owner goes.
#[derive(Default)]
pub(super) struct Kicker {
    queue: OnceLock<SyncSender<Kick>>,
}

impl Kicker {
    /// Start writing `[lo, hi)` of `file` to the disk, on the thread.
    pub(super) fn kick(&self, file: Arc<File>, lo: u64, hi: u64) {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = sync_channel::<Kick>(QUEUE);
            let spawned = std::thread::Builder::new()
                .name("writeback".into())
                .spawn(move || {
                    for k in rx {
                        start_writeback(&k.file, k.lo, k.hi);
                    }
                });
            if let Err(e) = spawned {
                crate::log!("no writeback thread, big writes reach the disk at fsync: {e}");
            }
            tx
        });
        // A full queue means the disk is behind already: the kick adds
        // nothing the ones queued do not.
        match queue.try_send(Kick { file, lo, hi }) {
            Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Ask the kernel to start writing the dirty pages of `[lo, hi)`.
fn start_writeback(file: &File, lo: u64, hi: u64) {
    let (Ok(off), Ok(len)) = (i64::try_from(lo), i64::try_from(hi - lo)) else {
        return;
    };
    // SAFETY: a plain system call on a descriptor `file` keeps open; it
    // reads and writes no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), off, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kicks_every_kick_bytes_with_the_range_written() {
        let mut u = Unkicked::default();
        let mib = 1 << 20;
        for i in 0..7 {
            assert_eq!(u.add(i * mib, mib), None);
        }
        assert_eq!(u.add(7 * mib, mib), Some((0, 8 * mib)));
        // Out of order (the kernel's writeback sends several at once).
        assert_eq!(u.add(9 * mib, mib), None);
        for i in 10..16 {
            assert_eq!(u.add(i * mib, mib), None);
        }
        assert_eq!(u.add(8 * mib, mib), Some((8 * mib, 16 * mib)));
    }
}

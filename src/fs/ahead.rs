//! Read-ahead across files. A program that opens a directory's files one
//! after another in name order (`md5sum -c`, `grep -r`, `tar c`, `cp -r`)
//! gets the next files brought in while it works on the current one: the
//! head of each staged file is read from the cache disk, the first chunks of
//! a sealed file are fetched from the store. The latency of the disk or the
//! store then overlaps the round trips through the kernel instead of adding
//! to them, as the kernel's read-ahead does within one file.
//!
//! One open is not a pattern. A directory's files are warmed only while its
//! opens move forward in name order by at most `AHEAD` entries at a time, so
//! random opens cost one look at the directory, never a burst of reads.
//! Everything here is a hint: it runs on a thread of its own, from the last
//! committed view of the tree, and drops what it cannot keep up with.

use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Weak};

use lru::LruCache;

use crate::blobs::BlobReader;
use crate::live::{DataSource, Live, View};
use crate::repo::tree::Kind;

/// Directory entries kept warm past the last file opened.
const AHEAD: usize = 32;
/// Directories followed at once: a recursive walk's path and its siblings.
const DIRS: usize = 64;
/// Entries of the largest directory followed (8 bytes each in memory).
const MAX_ENTRIES: usize = 1 << 16;
/// Bytes of each staged file read ahead; once the program reads, the
/// kernel's own read-ahead takes over.
const HEAD: libc::off_t = 256 << 10;
/// Chunks of each sealed file fetched ahead.
const CHUNKS: usize = 4;
/// Opens waiting for the read-ahead thread; more are dropped.
const QUEUE: usize = 1024;

pub struct Ahead {
    opened: Option<SyncSender<u64>>,
}

impl Ahead {
    /// Start the read-ahead thread; it ends when the `Ahead` is dropped or
    /// the live tree is gone.
    pub fn start(live: &Arc<Live>, src: Arc<BlobReader>) -> Ahead {
        let (tx, rx) = sync_channel(QUEUE);
        let live = Arc::downgrade(live);
        let started = std::thread::Builder::new()
            .name("secrate-ahead".into())
            .spawn(move || run(&live, &src, &rx));
        if let Err(e) = &started {
            crate::log!("warning: no read-ahead across files: cannot start its thread: {e}");
        }
        Ahead {
            opened: started.is_ok().then_some(tx),
        }
    }

    /// A file of the live tree was opened for reading.
    pub fn opened(&self, ino: u64) {
        if let Some(tx) = &self.opened {
            // A full queue means the thread is behind: skip this hint.
            let _ = tx.try_send(ino);
        }
    }
}

fn run(live: &Weak<Live>, src: &BlobReader, rx: &Receiver<u64>) {
    let mut scans = Scans::new();
    while let Ok(ino) = rx.recv() {
        let Some(live) = live.upgrade() else { return };
        let Ok(view) = live.read_view() else { continue };
        for next in scans.opened(&view, ino) {
            warm(&live, &view, src, next);
        }
    }
}

/// Bring in the start of `ino`'s content, wherever it is.
fn warm(live: &Live, view: &View, src: &BlobReader, ino: u64) {
    let Ok(rec) = view.inode(ino) else { return };
    if rec.kind != Kind::File {
        return;
    }
    if rec.is_staged() {
        // Evicted or removed meanwhile: nothing to warm.
        if let Ok(f) = std::fs::File::open(live.staged_path(ino)) {
            // SAFETY: an advice call on a descriptor we own, integers only.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, HEAD, libc::POSIX_FADV_WILLNEED) };
        }
    } else if let Some(chunks) = rec.chunks() {
        let ids: Vec<_> = chunks.iter().take(CHUNKS).map(|c| c.id).collect();
        src.prefetch(&ids);
    }
}

/// How the opens in each recently used directory move.
struct Scans {
    dirs: LruCache<u64, Scan>,
}

struct Scan {
    /// The first file opened, until a second one makes the entries worth
    /// taking.
    first: u64,
    entries: Entries,
    /// Position of the last file opened.
    last: usize,
    /// Entries before this position have been warmed.
    warmed: usize,
}

enum Entries {
    NotYet,
    /// More than `MAX_ENTRIES`: not followed.
    TooBig,
    /// The directory's inodes in name order.
    Taken(Vec<u64>),
}

impl Scans {
    fn new() -> Scans {
        Scans {
            dirs: LruCache::new(NonZeroUsize::new(DIRS).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    /// `ino` was opened: the entries to warm now.
    fn opened(&mut self, view: &View, ino: u64) -> Vec<u64> {
        let Ok(rec) = view.inode(ino) else {
            return Vec::new();
        };
        let parent = match view.parents_of(ino, &rec).as_deref() {
            Ok([p, ..]) => *p,
            _ => return Vec::new(),
        };
        let Some(scan) = self.dirs.get_mut(&parent) else {
            self.dirs.put(
                parent,
                Scan {
                    first: ino,
                    entries: Entries::NotYet,
                    last: 0,
                    warmed: 0,
                },
            );
            return Vec::new();
        };
        scan.opened(view, parent, ino)
    }
}

impl Scan {
    fn opened(&mut self, view: &View, parent: u64, ino: u64) -> Vec<u64> {
        if matches!(self.entries, Entries::NotYet) {
            if ino == self.first {
                return Vec::new();
            }
            let Ok(children) = view.children(parent) else {
                return Vec::new();
            };
            if children.len() > MAX_ENTRIES {
                self.entries = Entries::TooBig;
                return Vec::new();
            }
            let inos: Vec<u64> = children.into_iter().map(|(_, i)| i).collect();
            let Some(first) = inos.iter().position(|&i| i == self.first) else {
                self.first = ino;
                return Vec::new();
            };
            self.last = first;
            self.warmed = first + 1;
            self.entries = Entries::Taken(inos);
        }
        self.step(ino)
    }

    /// With the listing taken: follow the open of `ino`.
    fn step(&mut self, ino: u64) -> Vec<u64> {
        let Entries::Taken(inos) = &self.entries else {
            return Vec::new();
        };
        // Forward within the window, or a jump (looked for everywhere).
        let ahead = self.last + 1..inos.len().min(self.last + 1 + AHEAD);
        let (p, forward) = match inos[ahead.clone()].iter().position(|&i| i == ino) {
            Some(k) => (ahead.start + k, true),
            None => match inos.iter().position(|&i| i == ino) {
                Some(p) => (p, false),
                // A file created since the listing: not part of a scan.
                None => return Vec::new(),
            },
        };
        self.last = p;
        if !forward {
            self.warmed = p + 1;
            return Vec::new();
        }
        let from = self.warmed.max(p + 1);
        let to = inos.len().min(p + 1 + AHEAD);
        self.warmed = self.warmed.max(to);
        inos.get(from..to).unwrap_or_default().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of `n` entries (inodes 100, 101, ...) whose first entry
    /// was opened.
    fn scan_of(n: u64) -> (Scan, Vec<u64>) {
        let inos: Vec<u64> = (100..100 + n).collect();
        let scan = Scan {
            first: 100,
            entries: Entries::Taken(inos.clone()),
            last: 0,
            warmed: 1,
        };
        (scan, inos)
    }

    #[test]
    fn forward_opens_keep_a_window_warm() {
        let (mut scan, inos) = scan_of(100);
        // The second file: everything up to AHEAD entries past it.
        assert_eq!(scan.step(101), inos[2..2 + AHEAD].to_vec());
        // Each further file adds one entry at the far end.
        assert_eq!(scan.step(102), vec![inos[2 + AHEAD]]);
        // Skipping a few entries (subdirectories) is still forward.
        assert_eq!(scan.step(105), inos[3 + AHEAD..6 + AHEAD].to_vec());
        // Reopening the same file warms nothing new.
        assert!(scan.step(105).is_empty());
    }

    #[test]
    fn random_opens_warm_nothing() {
        let (mut scan, inos) = scan_of(1000);
        assert!(scan.step(900).is_empty());
        assert!(scan.step(300).is_empty());
        assert!(scan.step(700).is_empty());
        // A scan that goes on from the last jump is followed again.
        assert_eq!(scan.step(701), inos[602..602 + AHEAD].to_vec());
    }

    #[test]
    fn the_window_stops_at_the_end_and_new_files_are_ignored() {
        let (mut scan, inos) = scan_of(10);
        assert_eq!(scan.step(101), inos[2..].to_vec());
        assert!(scan.step(102).is_empty());
        assert!(scan.step(109).is_empty());
        assert!(scan.step(5000).is_empty());
    }
}

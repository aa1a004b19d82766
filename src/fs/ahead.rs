//! Read-ahead across files. A program that opens a tree's files one after
//! another in path order (`md5sum -c` of a sorted list, `grep -r`, `tar c`,
//! `cp -r`) gets the next files brought in while it works on the current
//! one: the head of each staged file is read from the cache disk, the first
//! chunks of a sealed file, or of a file in a snapshot under `.history`,
//! are fetched from the store. The latency of the disk or the store then
//! overlaps the round trips through the kernel instead of adding to them,
//! as the kernel's read-ahead does within one file.
//!
//! One open is not a pattern. A walk starts when a directory's opens move
//! forward in name order by at most `AHEAD` entries; from there it keeps
//! the next `AHEAD` files of the tree warm (refilled `BATCH` at a time),
//! into subdirectories and on to the next directories, for as long as the
//! program opens files it expects. Random opens cost one look at the
//! directory, never a burst of reads. Everything here is a hint: it runs
//! on a thread of its own, from the last committed view of the tree, and
//! drops what it cannot keep up with.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Weak};

use lru::LruCache;

use crate::blobs::BlobReader;
use crate::fs::history::{History, Pins};
use crate::live::{DataSource, Live, View};
use crate::repo::tree::Kind;

/// Files kept warm past the last one opened, at least; also how far
/// forward (in entries) a directory's second open may be to start a walk.
const AHEAD: usize = 32;
/// Files warmed at once when a walk falls below `AHEAD`. One burst of
/// reads every `BATCH` opens instead of one read per open, and the opens
/// in between do not wake the thread (`Quiet`): in a cold `md5sum -c` of
/// the Linux tree the thread woke 18k times instead of 114k and used
/// 1.8 s of CPU instead of 3.1 (docs/benchmarks.md, P1).
const BATCH: usize = 16;
/// Directories whose opens are followed to find where a walk starts.
const DIRS: usize = 64;
/// Walks followed at once (programs walking different trees).
const WALKS: usize = 8;
/// Directories listed per open while a walk goes on.
const LISTINGS: usize = 16;
/// Entries of the largest directory followed (9 bytes each in memory).
const MAX_ENTRIES: usize = 1 << 16;
/// Entries a walk holds in the listings of the directories it is in; a
/// subdirectory that would take more is passed over.
const WALK_ENTRIES: usize = 2 * MAX_ENTRIES;
/// Bytes of each staged file read ahead; once the program reads, the
/// kernel's own read-ahead takes over.
const HEAD: libc::off_t = 256 << 10;
/// Chunks of each sealed file fetched ahead.
const CHUNKS: usize = 4;
/// Opens waiting for the read-ahead thread; more are dropped.
const QUEUE: usize = 1024;

pub struct Ahead {
    opened: Option<SyncSender<u64>>,
    quiet: Arc<Quiet>,
}

/// Files the read-ahead thread need not hear of: warmed already, and so
/// far from the end of their walk's queue that opening them starts no
/// reads. An open of one of them neither wakes the thread nor costs it a
/// look at the tree; the next open it does hear of moves the walk past
/// them. Inode numbers, 0 for none; a stale entry only sends or skips one
/// hint.
struct Quiet([AtomicU64; BATCH]);

impl Quiet {
    fn new() -> Quiet {
        Quiet(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    fn contains(&self, ino: u64) -> bool {
        self.0.iter().any(|s| s.load(Ordering::Relaxed) == ino)
    }

    fn set(&self, inos: &[u64]) {
        for (k, slot) in self.0.iter().enumerate() {
            slot.store(inos.get(k).copied().unwrap_or(0), Ordering::Relaxed);
        }
    }
}

impl Ahead {
    /// Start the read-ahead thread; it ends when the `Ahead` is dropped or
    /// the live tree is gone.
    pub fn start(live: &Arc<Live>, history: &Arc<History>, src: Arc<BlobReader>) -> Ahead {
        let (tx, rx) = sync_channel(QUEUE);
        let live = Arc::downgrade(live);
        let history = Arc::downgrade(history);
        let quiet = Arc::new(Quiet::new());
        let q = quiet.clone();
        let started = std::thread::Builder::new()
            .name("secrate-ahead".into())
            .spawn(move || run(&live, &history, &src, &rx, &q));
        if let Err(e) = &started {
            crate::log!("warning: no read-ahead across files: cannot start its thread: {e}");
        }
        Ahead {
            opened: started.is_ok().then_some(tx),
            quiet,
        }
    }

    /// A file was opened for reading (in the live tree or in `.history`).
    pub fn opened(&self, ino: u64) {
        if self.quiet.contains(ino) {
            return;
        }
        if let Some(tx) = &self.opened {
            // A full queue means the thread is behind: skip this hint.
            let _ = tx.try_send(ino);
        }
    }
}

fn run(
    live: &Weak<Live>,
    history: &Weak<History>,
    src: &BlobReader,
    rx: &Receiver<u64>,
    quiet: &Quiet,
) {
    // Inode numbers of the two trees never meet: one `Scans` each.
    let mut scans = Scans::new();
    let mut past = Scans::new();
    while let Ok(ino) = rx.recv() {
        if History::is_history(ino) {
            let Some(history) = history.upgrade() else {
                return;
            };
            for next in past.opened(&history, ino) {
                src.prefetch(&history.first_chunks(next, CHUNKS));
            }
            quiet.set(&past.quiet());
            continue;
        }
        let Some(live) = live.upgrade() else { return };
        let Ok(view) = live.read_view() else { continue };
        for next in scans.opened(&view, ino) {
            warm(&live, &view, src, next);
        }
        quiet.set(&scans.quiet());
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

/// How the opens move: walks in progress, and directories with opens no
/// walk expected.
struct Scans {
    /// Walks in progress, the most recently advanced first.
    walks: VecDeque<Walk>,
    /// Directories where an open came that no walk expected.
    dirs: LruCache<u64, Start>,
}

/// Opens in one directory that no walk expected. A second one at most
/// `AHEAD` entries past the one before starts a walk there.
struct Start {
    /// The first file opened, until a second one makes the listing worth
    /// taking.
    first: u64,
    listing: Listed,
    /// Position of the last file opened.
    last: usize,
}

enum Listed {
    NotYet,
    /// Not listable or more than `MAX_ENTRIES`: not followed.
    No,
    Taken(Listing),
}

/// A directory's entries in the order a recursive walk meets them: by name,
/// a directory's name as if it ended in '/' (so `a.c` comes before the
/// files in `a/`, as in a sorted list of paths). In `.history`, with the
/// pins that keep the nodes of those inode numbers while the listing or a
/// file of it queued by a walk is kept (the program's lookups of the files
/// it opens next then find the numbers expected); the walks and
/// directories kept here are bounded, so are they.
struct Listing {
    inos: Vec<u64>,
    is_dir: Vec<bool>,
    pins: Option<Arc<Pins>>,
}

/// A walk through the tree in listing order, from a file onwards.
struct Walk {
    /// Files expected next, in order, each warmed when it was added.
    queue: VecDeque<u64>,
    /// The pins of the listing each file in `queue` came from.
    holds: VecDeque<Option<Arc<Pins>>>,
    /// Where the walk goes on past the queue: the listings from the
    /// directory it started in down to the one it is in, each with the
    /// position of its next entry.
    levels: Vec<(u64, Listing, usize)>,
}

/// What a walk needs of the tree.
trait Tree {
    /// The directory holding `ino` (the first, for a hard-linked file).
    fn parent(&self, ino: u64) -> Option<u64>;
    /// `dir`'s entries, or None if it cannot be listed or has more than
    /// `MAX_ENTRIES`.
    fn listing(&self, dir: u64) -> Option<Listing>;
}

impl Tree for View {
    fn parent(&self, ino: u64) -> Option<u64> {
        let rec = self.inode(ino).ok()?;
        self.parents_of(ino, &rec).ok()?.first().copied()
    }

    fn listing(&self, dir: u64) -> Option<Listing> {
        let entries = self.children_kinds(dir).ok()?;
        Listing::of(
            entries
                .into_iter()
                .map(|(name, ino, kind)| (name, ino, kind == Kind::Dir))
                .collect(),
        )
    }
}

/// A snapshot's tree in `.history`. A walk ends at the snapshot's root.
impl Tree for Arc<History> {
    fn parent(&self, ino: u64) -> Option<u64> {
        History::parent(self, ino)
    }

    fn listing(&self, dir: u64) -> Option<Listing> {
        let (entries, pins) = self.readdir(dir).ok()?;
        let mut listing = Listing::of(
            entries
                .into_iter()
                .map(|(ino, kind, name)| (name, ino, kind == Kind::Dir))
                .collect(),
        )?;
        listing.pins = Some(Arc::new(pins));
        Some(listing)
    }
}

impl Listing {
    /// From (name, inode, is a directory), in any order; None past
    /// `MAX_ENTRIES`.
    fn of(mut entries: Vec<(Vec<u8>, u64, bool)>) -> Option<Listing> {
        if entries.len() > MAX_ENTRIES {
            return None;
        }
        entries.sort_by(|a, b| walk_order(&a.0, a.2).cmp(walk_order(&b.0, b.2)));
        Some(Listing {
            inos: entries.iter().map(|e| e.1).collect(),
            is_dir: entries.iter().map(|e| e.2).collect(),
            pins: None,
        })
    }
}

/// The bytes a recursive walk sorts an entry by.
fn walk_order(name: &[u8], is_dir: bool) -> impl Iterator<Item = &u8> {
    name.iter().chain(is_dir.then_some(&b'/'))
}

impl Scans {
    fn new() -> Scans {
        Scans {
            walks: VecDeque::new(),
            dirs: LruCache::new(NonZeroUsize::new(DIRS).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    /// Files of the walk moved last whose open would warm nothing: those
    /// before the last `AHEAD` of its queue (at most `BATCH`).
    fn quiet(&self) -> Vec<u64> {
        let Some(walk) = self.walks.front() else {
            return Vec::new();
        };
        let n = walk.queue.len().saturating_sub(AHEAD).min(BATCH);
        walk.queue.iter().take(n).copied().collect()
    }

    /// `ino` was opened: the files to warm now.
    fn opened(&mut self, tree: &impl Tree, ino: u64) -> Vec<u64> {
        // A walk that ran out of its directory listings goes on.
        let mut new = Vec::new();
        for walk in self.walks.iter_mut().filter(|w| w.queue.is_empty()) {
            new.extend(walk.fill(tree));
        }
        self.walks
            .retain(|w| !w.queue.is_empty() || !w.levels.is_empty());
        // A file some walk expected: that walk moves on.
        let hit = self
            .walks
            .iter()
            .enumerate()
            .find_map(|(w, walk)| Some((w, walk.queue.iter().position(|&i| i == ino)?)));
        if let Some((w, k)) = hit {
            let Some(mut walk) = self.walks.remove(w) else {
                return Vec::new();
            };
            walk.queue.drain(..=k);
            let n = (k + 1).min(walk.holds.len());
            walk.holds.drain(..n);
            if walk.queue.len() < AHEAD {
                new.extend(walk.fill(tree));
            }
            if !walk.queue.is_empty() || !walk.levels.is_empty() {
                self.walks.push_front(walk);
            }
            return new;
        }
        let Some(parent) = tree.parent(ino) else {
            return new;
        };
        let Some(start) = self.dirs.get_mut(&parent) else {
            self.dirs.put(
                parent,
                Start {
                    first: ino,
                    listing: Listed::NotYet,
                    last: 0,
                },
            );
            return new;
        };
        let Some(p) = start.opened(tree, parent, ino) else {
            return new;
        };
        let Some(Start {
            listing: Listed::Taken(listing),
            ..
        }) = self.dirs.pop(&parent)
        else {
            return new;
        };
        let mut walk = Walk {
            queue: VecDeque::new(),
            holds: VecDeque::new(),
            levels: vec![(parent, listing, p + 1)],
        };
        new.extend(walk.fill(tree));
        self.walks.push_front(walk);
        self.walks.truncate(WALKS);
        new
    }
}

impl Start {
    /// Follow the open of `ino` in `dir`: Some(its position) if a walk
    /// starts there.
    fn opened(&mut self, tree: &impl Tree, dir: u64, ino: u64) -> Option<usize> {
        if matches!(self.listing, Listed::NotYet) {
            if ino == self.first {
                return None;
            }
            let Some(listing) = tree.listing(dir) else {
                self.listing = Listed::No;
                return None;
            };
            let Some(first) = listing.inos.iter().position(|&i| i == self.first) else {
                self.first = ino;
                return None;
            };
            self.last = first;
            self.listing = Listed::Taken(listing);
        }
        self.step(ino)
    }

    /// With the listing taken: Some(position of `ino`) if it is at most
    /// `AHEAD` entries past the last file opened.
    fn step(&mut self, ino: u64) -> Option<usize> {
        let Listed::Taken(listing) = &self.listing else {
            return None;
        };
        let inos = &listing.inos;
        // Forward within the window, or a jump (looked for everywhere).
        let ahead = self.last + 1..inos.len().min(self.last + 1 + AHEAD);
        let (p, forward) = match inos[ahead.clone()].iter().position(|&i| i == ino) {
            Some(k) => (ahead.start + k, true),
            // A file created since the listing is not part of a scan.
            None => (inos.iter().position(|&i| i == ino)?, false),
        };
        self.last = p;
        forward.then_some(p)
    }
}

impl Walk {
    /// Extend the queue to `AHEAD + BATCH` files, listing at most
    /// `LISTINGS` directories on the way: the files added.
    fn fill(&mut self, tree: &impl Tree) -> Vec<u64> {
        let mut new = Vec::new();
        let mut listings = LISTINGS;
        while self.queue.len() < AHEAD + BATCH {
            let Some((dir, listing, next)) = self.levels.last_mut() else {
                break;
            };
            if let Some(&ino) = listing.inos.get(*next) {
                if listing.is_dir.get(*next) != Some(&true) {
                    *next += 1;
                    self.queue.push_back(ino);
                    self.holds.push_back(listing.pins.clone());
                    new.push(ino);
                    continue;
                }
                if listings == 0 {
                    break;
                }
                listings -= 1;
                *next += 1;
                if let Some(sub) = tree.listing(ino) {
                    let held: usize = self.levels.iter().map(|l| l.1.inos.len()).sum();
                    if held + sub.inos.len() <= WALK_ENTRIES {
                        self.levels.push((ino, sub, 0));
                    }
                }
                continue;
            }
            // This directory is done: back to the one above.
            let dir = *dir;
            if self.levels.len() > 1 {
                self.levels.pop();
                continue;
            }
            if listings == 0 {
                break;
            }
            listings -= 1;
            let above = tree.parent(dir).and_then(|up| {
                let listing = tree.listing(up)?;
                let p = listing.inos.iter().position(|&i| i == dir)?;
                Some((up, listing, p + 1))
            });
            match above {
                Some(level) => self.levels[0] = level,
                // The root, or a directory gone meanwhile: the walk ends.
                None => self.levels.clear(),
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// An entry: name, inode, is a directory.
    type Entry = (String, u64, bool);

    /// Directories by inode: parent and entries.
    #[derive(Default)]
    struct FakeTree(HashMap<u64, (u64, Vec<Entry>)>);

    impl FakeTree {
        fn dir(&mut self, ino: u64, parent: u64, entries: &[(&str, u64, bool)]) {
            let entries = entries
                .iter()
                .map(|&(n, i, d)| (n.to_string(), i, d))
                .collect();
            self.0.insert(ino, (parent, entries));
        }

        /// A directory `ino` under `parent` with files `inos`.
        fn files(&mut self, ino: u64, parent: u64, inos: std::ops::Range<u64>) {
            let names: Vec<String> = inos.clone().map(|i| format!("f{i:05}")).collect();
            let entries: Vec<(&str, u64, bool)> = names
                .iter()
                .zip(inos)
                .map(|(n, i)| (&n[..], i, false))
                .collect();
            self.dir(ino, parent, &entries);
        }
    }

    impl Tree for FakeTree {
        fn parent(&self, ino: u64) -> Option<u64> {
            if let Some((p, _)) = self.0.get(&ino) {
                return (ino != ROOT_INO).then_some(*p);
            }
            self.0
                .iter()
                .find(|(_, (_, es))| es.iter().any(|e| e.1 == ino))
                .map(|(d, _)| *d)
        }

        fn listing(&self, dir: u64) -> Option<Listing> {
            let mut es = self.0.get(&dir)?.1.clone();
            es.sort_by(|a, b| walk_order(a.0.as_bytes(), a.2).cmp(walk_order(b.0.as_bytes(), b.2)));
            Some(Listing {
                inos: es.iter().map(|e| e.1).collect(),
                is_dir: es.iter().map(|e| e.2).collect(),
                pins: None,
            })
        }
    }

    const ROOT_INO: u64 = 1;

    /// The root holding directory 2 with `n` files, inodes 100, 101, ...
    fn one_dir(n: u64) -> FakeTree {
        let mut t = FakeTree::default();
        t.dir(ROOT_INO, ROOT_INO, &[("d", 2, true)]);
        t.files(2, ROOT_INO, 100..100 + n);
        t
    }

    #[test]
    fn forward_opens_keep_a_window_warm() {
        let t = one_dir(200);
        let mut s = Scans::new();
        const W: u64 = (AHEAD + BATCH) as u64;
        // One open is not a pattern.
        assert!(s.opened(&t, 100).is_empty());
        // The second file: the next AHEAD + BATCH files.
        assert_eq!(s.opened(&t, 101), (102..102 + W).collect::<Vec<_>>());
        // The next BATCH files keep AHEAD warm past them: nothing to do,
        // and the serving threads need not say they were opened.
        assert_eq!(s.quiet(), (102..102 + BATCH as u64).collect::<Vec<_>>());
        for ino in 102..102 + BATCH as u64 {
            assert!(s.opened(&t, ino).is_empty(), "{ino}");
        }
        // The open past them warms the next batch at once.
        let next = 102 + BATCH as u64;
        assert_eq!(
            s.opened(&t, next),
            (102 + W..next + 1 + W).collect::<Vec<_>>()
        );
        // Skipping files is still the same walk; and a skipped quiet file
        // (never heard of) does not matter either.
        assert_eq!(s.quiet()[0], next + 1);
        let far = next + BATCH as u64 + 3;
        assert_eq!(
            s.opened(&t, far),
            (next + 1 + W..far + 1 + W).collect::<Vec<_>>()
        );
        // Reopening the same file warms nothing new.
        assert!(s.opened(&t, far).is_empty());
    }

    #[test]
    fn the_quiet_set_holds_what_was_set_last() {
        let q = Quiet::new();
        assert!(!q.contains(7));
        q.set(&[7, 8, 9]);
        assert!(q.contains(7) && q.contains(9));
        q.set(&[10]);
        assert!(q.contains(10));
        assert!(!q.contains(7) && !q.contains(9), "an old entry stayed");
        q.set(&[]);
        assert!(!q.contains(10));
    }

    #[test]
    fn random_opens_warm_nothing() {
        let t = one_dir(1000);
        let mut s = Scans::new();
        for ino in [900, 300, 700, 100, 500] {
            assert!(s.opened(&t, ino).is_empty(), "{ino}");
        }
        // A scan that goes on from the last jump is followed.
        assert_eq!(
            s.opened(&t, 501),
            (502..502 + (AHEAD + BATCH) as u64).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_walk_stops_at_the_end_of_the_tree_and_new_files_are_ignored() {
        let t = one_dir(10);
        let mut s = Scans::new();
        assert!(s.opened(&t, 100).is_empty());
        assert_eq!(s.opened(&t, 101), (102..110).collect::<Vec<_>>());
        assert!(s.opened(&t, 102).is_empty());
        assert!(s.opened(&t, 109).is_empty());
        assert!(s.walks.is_empty(), "a walk past the end of the tree");
        assert!(s.opened(&t, 5000).is_empty());
    }

    #[test]
    fn a_walk_goes_on_into_subdirectories_and_the_next_directories_in_path_order() {
        let mut t = FakeTree::default();
        // /a.c, /a/{f0,f1,f2,s/{g0,g1}}, /b/h0: sorted paths put a.c
        // before a/ ('.' < '/').
        t.dir(
            ROOT_INO,
            ROOT_INO,
            &[("a", 10, true), ("a.c", 30, false), ("b", 40, true)],
        );
        t.dir(
            10,
            ROOT_INO,
            &[
                ("f0", 11, false),
                ("f1", 12, false),
                ("f2", 13, false),
                ("s", 20, true),
            ],
        );
        t.dir(20, 10, &[("g0", 21, false), ("g1", 22, false)]);
        t.dir(40, ROOT_INO, &[("h0", 41, false)]);
        let mut s = Scans::new();
        assert!(s.opened(&t, 11).is_empty());
        assert_eq!(s.opened(&t, 12), vec![13, 21, 22, 41]);
        assert!(s.opened(&t, 13).is_empty());
        // A skipped file does not end the walk.
        assert!(s.opened(&t, 22).is_empty());
        assert!(s.opened(&t, 41).is_empty());
        assert!(s.walks.is_empty());
    }

    #[test]
    fn a_walk_lists_a_bounded_number_of_directories_per_open() {
        let mut t = FakeTree::default();
        // Two files, then 40 empty directories, then a file.
        let mut root: Vec<Entry> = vec![("a0".into(), 100, false), ("a1".into(), 101, false)];
        for i in 0..40 {
            root.push((format!("e{i:02}"), 200 + i, true));
            t.dir(200 + i, ROOT_INO, &[]);
        }
        root.push(("z".into(), 102, false));
        t.0.insert(ROOT_INO, (ROOT_INO, root));
        let mut s = Scans::new();
        assert!(s.opened(&t, 100).is_empty());
        // LISTINGS directories per open: the file past 40 of them is
        // reached on the third open (of whatever file).
        assert!(s.opened(&t, 101).is_empty());
        assert_eq!(s.walks[0].levels[0].2, 2 + LISTINGS, "entries passed");
        assert!(s.opened(&t, 100).is_empty());
        assert_eq!(s.opened(&t, 100), vec![102]);
    }

    #[test]
    fn two_walks_are_followed_at_once() {
        let mut t = FakeTree::default();
        t.dir(ROOT_INO, ROOT_INO, &[("d", 2, true), ("e", 3, true)]);
        t.files(2, ROOT_INO, 100..200);
        t.files(3, ROOT_INO, 1000..1100);
        let mut s = Scans::new();
        for ino in [100, 1000] {
            assert!(s.opened(&t, ino).is_empty());
        }
        const W: u64 = (AHEAD + BATCH) as u64;
        assert_eq!(s.opened(&t, 101).len() as u64, W);
        assert_eq!(s.opened(&t, 1001).len() as u64, W);
        // The walk moved last gives the quiet files.
        assert_eq!(s.quiet()[0], 1002);
        let (a, b) = (102 + BATCH as u64, 1002 + BATCH as u64);
        assert_eq!(s.opened(&t, a), (102 + W..a + 1 + W).collect::<Vec<_>>());
        assert_eq!(s.quiet()[0], a + 1);
        assert_eq!(s.opened(&t, b), (1002 + W..b + 1 + W).collect::<Vec<_>>());
        assert_eq!(s.quiet()[0], b + 1);
    }
}

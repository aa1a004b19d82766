//! fsx-style randomized file operations through a real mount: random
//! writes, appends, truncates (grow and shrink), fallocate (holes, zeroed
//! ranges, reservations), reads, mmap reads and
//! writes, fsync, close and reopen (sometimes with O_TRUNC), dropping the
//! page cache, on a few files, checked against an in-memory model after
//! every read. Snapshots are taken in between, the model is remembered at
//! each, and every snapshot is checked byte-exact from `.history/<name>/`
//! later: while the files go on changing, after the run, and after an
//! unmount and a mount on a fresh cache.
//!
//! `SECRATE_FSX_OPS` (default 100000), `SECRATE_FSX_SEED` (default random,
//! always printed), `SECRATE_FSX_SNAPSHOT_EVERY` (default ops/20, at
//! least 5000).
//! A failure prints the seed and the last operations; the same seed and
//! op count replays the same operations. scripts/fsx.sh runs 1M ops.
//!
//! Needs root and /dev/fuse (skips with a message otherwise).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use common::*;
use support::*;

const PAGE: usize = 4096;

/// The files and their largest sizes: one that spans several chunks
/// (min 512 KiB, avg 1 MiB), one of a few pages, one tiny.
const FILES: [(&str, usize); 3] = [("big", 3 << 20), ("small", 256 << 10), ("tiny", 16 << 10)];

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

struct FileState {
    path: PathBuf,
    max: usize,
    fd: Option<File>,
    model: Vec<u8>,
}

/// What a snapshot must hold.
struct Remembered {
    name: String,
    op: u64,
    models: Vec<Vec<u8>>,
}

struct Fsx {
    test: String,
    seed: u64,
    ops: u64,
    every: u64,
    op: u64,
    rng: StdRng,
    files: Vec<FileState>,
    log: VecDeque<String>,
    counts: std::collections::BTreeMap<&'static str, u64>,
}

impl Fsx {
    fn fail(&self, what: &str) -> ! {
        let log: Vec<&str> = self.log.iter().map(String::as_str).collect();
        panic!(
            "fsx failed at op {} of {} (seed {:#x}): {what}\nlast operations:\n  {}\n\
             replay: SECRATE_FSX_SEED={:#x} SECRATE_FSX_OPS={} SECRATE_FSX_SNAPSHOT_EVERY={} \
             cargo test --test fsx -- --exact {} --nocapture",
            self.op,
            self.ops,
            self.seed,
            log.join("\n  "),
            self.seed,
            self.ops,
            self.every,
            self.test
        );
    }

    fn note(&mut self, kind: &'static str, s: String) {
        *self.counts.entry(kind).or_default() += 1;
        if self.log.len() == 40 {
            self.log.pop_front();
        }
        self.log.push_back(format!("#{} {s}", self.op));
    }

    fn fd(&mut self, i: usize) -> &File {
        if self.files[i].fd.is_none() {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.files[i].path)
                .unwrap_or_else(|e| self.fail(&format!("reopen {}: {e}", FILES[i].0)));
            self.files[i].fd = Some(f);
        }
        self.files[i].fd.as_ref().unwrap()
    }

    /// Compare bytes read at `off` with the model.
    fn compare(&self, i: usize, how: &str, off: usize, got: &[u8]) {
        let m = &self.files[i].model;
        let end = (off + got.len()).min(m.len());
        let want = if off < m.len() { &m[off..end] } else { &[][..] };
        if got != want {
            let first = got
                .iter()
                .zip(want)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(want.len()));
            self.fail(&format!(
                "{how} of {} at {off}+{}: got {} bytes, model has {}; first difference at \
                 offset {} (got {:?}, want {:?}); model size {}",
                FILES[i].0,
                got.len(),
                got.len(),
                want.len(),
                off + first,
                got.get(first..(first + 16).min(got.len())),
                want.get(first..(first + 16).min(want.len())),
                m.len()
            ));
        }
    }

    fn random_len(&mut self, max: usize) -> usize {
        let n = match self.rng.gen_range(0..4) {
            0 => self.rng.gen_range(1..=16),
            1 => self.rng.gen_range(1..=PAGE * 2),
            _ => self.rng.gen_range(1..=64 << 10),
        };
        n.min(max).max(1)
    }

    fn random_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.rng.fill_bytes(&mut v);
        v
    }

    fn write(&mut self, i: usize) {
        let max = self.files[i].max;
        let size = self.files[i].model.len();
        // Mostly within or just past the end; sometimes far, leaving a hole.
        let off = if self.rng.gen_bool(0.7) {
            self.rng.gen_range(0..=size.min(max - 1))
        } else {
            self.rng.gen_range(0..max)
        };
        let n = self.random_len(max - off);
        let data = self.random_bytes(n);
        self.note(
            "write",
            format!("write {} {off}+{n} (size {size})", FILES[i].0),
        );
        if let Err(e) = self.fd(i).write_all_at(&data, off as u64) {
            self.fail(&format!("pwrite: {e}"));
        }
        let m = &mut self.files[i].model;
        if m.len() < off + n {
            m.resize(off + n, 0);
        }
        m[off..off + n].copy_from_slice(&data);
    }

    fn append(&mut self, i: usize) {
        let size = self.files[i].model.len();
        let room = self.files[i].max - size;
        if room == 0 {
            return self.truncate(i);
        }
        let n = self.random_len(room);
        let data = self.random_bytes(n);
        self.note(
            "append",
            format!("append {} +{n} (size {size})", FILES[i].0),
        );
        let mut f = OpenOptions::new()
            .append(true)
            .open(&self.files[i].path)
            .unwrap_or_else(|e| self.fail(&format!("open O_APPEND: {e}")));
        if let Err(e) = f.write_all(&data) {
            self.fail(&format!("append: {e}"));
        }
        drop(f);
        self.files[i].model.extend_from_slice(&data);
    }

    fn read(&mut self, i: usize) {
        let size = self.files[i].model.len();
        // Sometimes across or past the end.
        let off = self.rng.gen_range(0..=size + size / 8 + 16);
        let n = self.random_len(1 << 20);
        self.note(
            "read",
            format!("read {} {off}+{n} (size {size})", FILES[i].0),
        );
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match self.fd(i).read_at(&mut buf[got..], (off + got) as u64) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) => self.fail(&format!("pread: {e}")),
            }
        }
        self.compare(i, "read", off, &buf[..got]);
        let want = size.saturating_sub(off).min(n);
        if got != want {
            self.fail(&format!("read returned {got} bytes, expected {want}"));
        }
    }

    /// Map the pages covering off..off+n; returns (pointer to off, map base, map length).
    fn map(
        &mut self,
        i: usize,
        off: usize,
        n: usize,
        write: bool,
    ) -> (*mut u8, *mut libc::c_void, usize) {
        let start = off / PAGE * PAGE;
        let len = off + n - start;
        let prot = if write {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let fd = self.fd(i).as_raw_fd();
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                start as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            self.fail(&format!("mmap: {}", std::io::Error::last_os_error()));
        }
        (unsafe { (p as *mut u8).add(off - start) }, p, len)
    }

    fn map_write(&mut self, i: usize) {
        let size = self.files[i].model.len();
        if size == 0 {
            return self.write(i);
        }
        let off = self.rng.gen_range(0..size);
        let n = self.random_len(size - off);
        let data = self.random_bytes(n);
        let sync = self.rng.gen_range(0..4);
        self.note(
            "mapwrite",
            format!(
                "mapwrite {} {off}+{n} (size {size}, msync {sync})",
                FILES[i].0
            ),
        );
        let (p, base, len) = self.map(i, off, n, true);
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), p, n);
            let flags = match sync {
                0 => Some(libc::MS_SYNC),
                1 => Some(libc::MS_ASYNC),
                _ => None,
            };
            if let Some(fl) = flags {
                if libc::msync(base, len, fl) != 0 {
                    self.fail(&format!("msync: {}", std::io::Error::last_os_error()));
                }
            }
            libc::munmap(base, len);
        }
        self.files[i].model[off..off + n].copy_from_slice(&data);
    }

    fn map_read(&mut self, i: usize) {
        let size = self.files[i].model.len();
        if size == 0 {
            return self.read(i);
        }
        let off = self.rng.gen_range(0..size);
        let n = self.random_len(size - off);
        self.note(
            "mapread",
            format!("mapread {} {off}+{n} (size {size})", FILES[i].0),
        );
        let (p, base, len) = self.map(i, off, n, false);
        let got = unsafe { std::slice::from_raw_parts(p, n) }.to_vec();
        unsafe { libc::munmap(base, len) };
        self.compare(i, "mmap read", off, &got);
    }

    fn truncate(&mut self, i: usize) {
        let size = self.files[i].model.len();
        let max = self.files[i].max;
        let new = match self.rng.gen_range(0..5) {
            0 => 0,
            1 | 2 => self.rng.gen_range(0..=size),
            _ => self.rng.gen_range(size..=max),
        };
        let by_path = self.rng.gen_bool(0.25);
        self.note(
            "truncate",
            format!(
                "truncate {} {size} -> {new}{}",
                FILES[i].0,
                if by_path { " (by path)" } else { "" }
            ),
        );
        let r = if by_path {
            let c = cstr(&self.files[i].path);
            cvt(unsafe { libc::truncate(c.as_ptr(), new as libc::off_t) })
        } else {
            self.fd(i).set_len(new as u64)
        };
        if let Err(e) = r {
            self.fail(&format!("truncate: {e}"));
        }
        self.files[i].model.resize(new, 0);
    }

    /// fallocate(2): punch a hole, zero a range (keeping the size or
    /// growing it), or reserve space (the same).
    fn fallocate(&mut self, i: usize) {
        let size = self.files[i].model.len();
        let max = self.files[i].max;
        let off = if self.rng.gen_bool(0.7) {
            self.rng.gen_range(0..=size.min(max - 1))
        } else {
            self.rng.gen_range(0..max)
        };
        let n = self.random_len(max - off);
        let keep = libc::FALLOC_FL_KEEP_SIZE;
        let (mode, zero) = match self.rng.gen_range(0..5) {
            0 | 1 => (libc::FALLOC_FL_PUNCH_HOLE | keep, true),
            2 => (libc::FALLOC_FL_ZERO_RANGE, true),
            3 => (libc::FALLOC_FL_ZERO_RANGE | keep, true),
            _ => (if self.rng.gen_bool(0.5) { keep } else { 0 }, false),
        };
        self.note(
            "fallocate",
            format!(
                "fallocate {} mode {mode:#x} {off}+{n} (size {size})",
                FILES[i].0
            ),
        );
        let fd = self.fd(i).as_raw_fd();
        if let Err(e) =
            cvt(unsafe { libc::fallocate(fd, mode, off as libc::off_t, n as libc::off_t) })
        {
            self.fail(&format!("fallocate: {e}"));
        }
        let m = &mut self.files[i].model;
        if mode & keep == 0 && m.len() < off + n {
            m.resize(off + n, 0);
        }
        if zero {
            let end = (off + n).min(m.len());
            if off < end {
                m[off..end].fill(0);
            }
        }
    }

    fn fsync(&mut self, i: usize) {
        let data_only = self.rng.gen_bool(0.5);
        self.note(
            "fsync",
            format!("fsync {} (datasync {data_only})", FILES[i].0),
        );
        let r = if data_only {
            self.fd(i).sync_data()
        } else {
            self.fd(i).sync_all()
        };
        if let Err(e) = r {
            self.fail(&format!("fsync: {e}"));
        }
    }

    fn reopen(&mut self, i: usize) {
        let trunc = self.rng.gen_bool(0.1);
        self.note(
            "reopen",
            format!("close and reopen {} (O_TRUNC {trunc})", FILES[i].0),
        );
        self.files[i].fd = None;
        if trunc {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .truncate(true)
                .open(&self.files[i].path)
                .unwrap_or_else(|e| self.fail(&format!("open O_TRUNC: {e}")));
            self.files[i].fd = Some(f);
            self.files[i].model.clear();
        }
    }

    /// Write back and drop the file's pages, so the next reads come from
    /// secrate, not the page cache.
    fn drop_cache(&mut self, i: usize) {
        self.note(
            "dropcache",
            format!("fsync and drop the page cache of {}", FILES[i].0),
        );
        let fd = self.fd(i).as_raw_fd();
        if let Err(e) = self.fd(i).sync_all() {
            self.fail(&format!("fsync: {e}"));
        }
        unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
    }

    fn stat(&mut self, i: usize) {
        self.note("stat", format!("stat {}", FILES[i].0));
        let by_path = self.rng.gen_bool(0.5);
        let md = if by_path {
            fs::metadata(&self.files[i].path)
        } else {
            self.fd(i).metadata()
        }
        .unwrap_or_else(|e| self.fail(&format!("stat: {e}")));
        if md.len() != self.files[i].model.len() as u64 {
            self.fail(&format!(
                "stat size of {} is {}, model {}",
                FILES[i].0,
                md.len(),
                self.files[i].model.len()
            ));
        }
    }

    fn step(&mut self) {
        let i = self.rng.gen_range(0..self.files.len());
        match self.rng.gen_range(0..100) {
            0..=21 => self.write(i),
            22..=24 => self.append(i),
            25..=49 => self.read(i),
            50..=59 => self.map_write(i),
            60..=69 => self.map_read(i),
            70..=76 => self.truncate(i),
            77..=79 => self.fallocate(i),
            80..=82 => self.fsync(i),
            83..=86 => self.reopen(i),
            87..=89 => self.drop_cache(i),
            _ => self.stat(i),
        }
    }
}

/// Every remembered snapshot byte-exact under `.history/<name>/fsx/`.
fn check_snapshots(mnt: &Path, snaps: &[Remembered], seed: u64, when: &str) {
    for s in snaps {
        for (i, (name, _)) in FILES.iter().enumerate() {
            let p = mnt.join(".history").join(&s.name).join("fsx").join(name);
            let got = fs::read(&p).unwrap_or_else(|e| {
                panic!("{when}: cannot read {} (seed {seed:#x}): {e}", p.display())
            });
            let want = &s.models[i];
            if &got != want {
                let first = got.iter().zip(want).position(|(a, b)| a != b);
                panic!(
                    "{when}: .history/{}/fsx/{name} (snapshot after op {}) differs from the \
                     model (seed {seed:#x}): {} bytes, model {}; first difference at {:?}",
                    s.name,
                    s.op,
                    got.len(),
                    want.len(),
                    first
                );
            }
        }
    }
}

fn check_live(mnt: &Path, models: &[Vec<u8>], seed: u64, when: &str) {
    for (i, (name, _)) in FILES.iter().enumerate() {
        let got = fs::read(mnt.join("fsx").join(name)).unwrap();
        assert!(
            got == models[i],
            "{when}: fsx/{name} differs from the model (seed {seed:#x}): {} bytes, model {}; \
             first difference at {:?}",
            got.len(),
            models[i].len(),
            got.iter().zip(&models[i]).position(|(a, b)| a != b)
        );
    }
}

#[test]
fn fsx_random_ops_and_snapshots() {
    fsx_run("fsx_random_ops_and_snapshots", "fsx", 100_000, &[]);
}

/// The same with a cache too small to keep any clean copy: after each
/// upload (one a second) the staged copies of files not open are evicted,
/// racing the program's opens, writes and truncations by path; reads of
/// what was evicted come from the chunk cache or the store, and the next
/// write copies the file up again.
#[test]
fn fsx_with_clean_copies_evicted() {
    fsx_run(
        "fsx_with_clean_copies_evicted",
        "fsx-evict",
        40_000,
        &["--cache-size", "1M"],
    );
}

/// Random operations, snapshots and checks through a mount made with
/// `more` arguments; `ops` unless SECRATE_FSX_OPS says otherwise.
fn fsx_run(test: &str, store_name: &str, ops: u64, more: &[&str]) {
    if !fuse_ready(test) {
        return;
    }
    let ops = env_u64("SECRATE_FSX_OPS").unwrap_or(ops);
    let seed = env_u64("SECRATE_FSX_SEED").unwrap_or_else(rand::random);
    let every = env_u64("SECRATE_FSX_SNAPSHOT_EVERY")
        .unwrap_or((ops / 20).max(5_000))
        .max(1);
    let mut check_rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    eprintln!("fsx: seed {seed:#x}, {ops} ops, a snapshot every {every} ops");
    eprintln!(
        "fsx: replay with SECRATE_FSX_SEED={seed:#x} SECRATE_FSX_OPS={ops} \
         SECRATE_FSX_SNAPSHOT_EVERY={every}"
    );

    let store = stores(store_name).remove(0);
    let work = tempfile::tempdir().unwrap();
    let s = Secrate::new(&store.url);
    s.init();
    // Background seals every second race with the operations; the
    // snapshots the test asks for are checked exactly.
    let mut extra = vec!["--retention", "none", "--snapshot-interval", "1"];
    extra.extend_from_slice(more);
    let mut m = Mount::in_dir(&s, work.path(), &extra);
    fs::create_dir(m.path("fsx")).unwrap();
    let mut x = Fsx {
        test: test.to_string(),
        seed,
        ops,
        every,
        op: 0,
        rng: StdRng::seed_from_u64(seed),
        files: FILES
            .iter()
            .map(|(name, max)| {
                let path = m.path("fsx").join(name);
                File::create(&path).unwrap();
                FileState {
                    path,
                    max: *max,
                    fd: None,
                    model: Vec::new(),
                }
            })
            .collect(),
        log: VecDeque::new(),
        counts: Default::default(),
    };
    let mut snaps: Vec<Remembered> = Vec::new();
    let t = Instant::now();
    let mut snap_time = 0.0;
    while x.op < ops {
        x.op += 1;
        x.step();
        if x.op.is_multiple_of(every) || x.op == ops {
            // Files stay open (and pages dirty) across the snapshot: it must
            // hold everything written before it was asked for.
            let wait = x.rng.gen_bool(0.5);
            let before = m.history();
            let ts = Instant::now();
            let mut args = vec!["snapshot", m.mnt.to_str().unwrap()];
            if !wait {
                args.push("--no-wait");
            }
            let out = m.s.ok(&args);
            snap_time += ts.elapsed().as_secs_f64();
            let after = m.history();
            let new: Vec<String> = after
                .iter()
                .filter(|n| !before.contains(n))
                .cloned()
                .collect();
            x.note("snapshot", format!("snapshot (wait {wait}): new {new:?}"));
            // Background seals (every second) may add entries too, but
            // only before ours: nothing changes between our seal and the
            // listing, so a later seal finds nothing to do. If ours found
            // nothing changed, the newest one already holds everything.
            if new.is_empty() && !out.contains("nothing changed") {
                x.fail(&format!("snapshot made no new .history entry: {out}"));
            }
            let Some(ours) = after.last().cloned() else {
                x.fail("no snapshot in .history after a snapshot");
            };
            snaps.push(Remembered {
                name: ours,
                op: x.op,
                models: x.files.iter().map(|f| f.model.clone()).collect(),
            });
            // This one, the one before and a random older one, while the
            // live files go on changing (all of them at the end).
            let n = snaps.len();
            let older = check_rng.gen_range(0..n);
            for k in [n.saturating_sub(2), older] {
                check_snapshots(
                    &m.mnt,
                    &snaps[k..k + 1],
                    seed,
                    &format!("after op {}", x.op),
                );
            }
            check_snapshots(&m.mnt, &snaps[n - 1..], seed, &format!("after op {}", x.op));
        }
        if x.op.is_multiple_of((ops / 10).max(1)) {
            eprintln!(
                "  {} ops, {:.1}s ({:.1}s in snapshots)",
                x.op,
                t.elapsed().as_secs_f64(),
                snap_time
            );
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    eprintln!(
        "fsx: {ops} ops in {elapsed:.1}s ({:.0} ops/s; {snap_time:.1}s in {} snapshots): {:?}",
        ops as f64 / elapsed,
        snaps.len(),
        x.counts
    );

    let models: Vec<Vec<u8>> = x.files.iter().map(|f| f.model.clone()).collect();
    for f in &mut x.files {
        f.fd = None;
    }
    check_live(&m.mnt, &models, seed, "at the end");
    check_snapshots(&m.mnt, &snaps, seed, "at the end");
    // The background snapshots hold some state of the files in between
    // (pages reach secrate in no particular order without fsync): each
    // file reads in full and is no larger than it can get.
    let all = m.history();
    for name in &all {
        for (file, max) in FILES {
            let p = m.path(".history").join(name).join("fsx").join(file);
            let n = fs::read(&p)
                .unwrap_or_else(|e| panic!("{}: {e} (seed {seed:#x})", p.display()))
                .len();
            assert!(n <= max, "{}: {n} bytes (seed {seed:#x})", p.display());
        }
    }
    eprintln!(
        "fsx: {} snapshots in .history ({} asked for, the rest background seals)",
        all.len(),
        snaps.len()
    );
    m.umount();
    drop(m);

    // A fresh cache: everything comes from the store.
    let m = Mount::new(
        &s,
        &work.path().join("mnt"),
        &work.path().join("cache2"),
        &extra,
    );
    check_live(&m.mnt, &models, seed, "after a mount on a fresh cache");
    check_snapshots(&m.mnt, &snaps, seed, "after a mount on a fresh cache");
    eprintln!(
        "fsx: seed {seed:#x}: {ops} ops and {} snapshots checked byte-exact",
        snaps.len()
    );
}

/// `secrate snapshot` holds what was written to files that are still open
/// and whose pages are still dirty in the kernel (writes and mmap stores
/// under the writeback cache): the CLI syncs the mount before sealing.
/// The file descriptor is inherited by the `secrate` child on purpose:
/// closing it at exec would write the pages back and hide the problem.
#[test]
fn snapshot_holds_unflushed_writes() {
    if !fuse_ready("snapshot_holds_unflushed_writes") {
        return;
    }
    let store = stores("fsx-dirty").remove(0);
    let work = tempfile::tempdir().unwrap();
    let s = Secrate::new(&store.url);
    s.init();
    let m = Mount::in_dir(&s, work.path(), &[]);
    let path = m.path("dirty");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(0)
        .open(&path)
        .unwrap();
    // Not close-on-exec: the snapshot process inherits it.
    let fd = f.as_raw_fd();
    unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    let data = pseudo_random(7, 300_000);
    f.write_all_at(&data, 0).unwrap();
    let mut want = data.clone();
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    unsafe { std::ptr::copy_nonoverlapping(b"MMAP".as_ptr(), p as *mut u8, 4) };
    want[..4].copy_from_slice(b"MMAP");
    m.snapshot();
    unsafe { libc::munmap(p, PAGE) };
    let got = fs::read(m.path(".history/latest/dirty")).unwrap();
    assert_eq!(got.len(), want.len(), "size of the file in the snapshot");
    assert!(
        got == want,
        "the snapshot misses writes still in the page cache"
    );
    drop(f);
}

//! Crash tests: `kill -9` at random moments, aimed inside seals and
//! uploads, then recovery on the same cache.
//!
//! `mount_survives_kill_9` (on file:// and s3://): a mount sealing every
//! second, with 100 ms added to every store operation so uploads take a
//! while. A writer thread creates, overwrites in place, appends, patches,
//! replaces (write a temporary file, rename it over), renames, deletes and
//! fsyncs files, and keeps a model of what it did. The background mount
//! process is killed with SIGKILL (at a random time, while a seal runs, or
//! while uploads are in flight), the dead mount is lazily unmounted, and
//! the same cache is mounted again. Then:
//!
//! - every path is in a state the model allows: it names the file it named
//!   at the last fsync (secrate's fsync commits the whole tree, so every
//!   change made before an fsync is durable) or one it named afterwards,
//!   and that file holds a content it had at that fsync or got afterwards
//!   (POSIX: a rename the crash undid can leave the old name with data
//!   written through the new one); the one write cut short by the kill may
//!   leave its file torn between the old and new bytes (or zeros where
//!   pages never arrived), nothing else. A write counts as cut short unless
//!   its close returned before the kill was sent: the kernel may drop the
//!   pages it held for a dying mount and still let close return 0. So a file untouched since its
//!   fsync is byte-exact, and nothing holds bytes the writer never wrote;
//! - no file exists that the writer never wrote;
//! - `secrate check` finds no error (between cycles) and `check
//!   --read-data` none at the end;
//! - the last `secrate umount` completes, and a mount on a fresh cache
//!   shows exactly the last state.
//!
//! `SECRATE_CRASH_CYCLES` sets the number of kills per store (default 20);
//! `SECRATE_CRASH_SEED` replays a run (the seed is printed).
//!
//! `backup_survives_kill_9`: `secrate backup` of a ~200 MB tree killed
//! with SIGKILL a few times mid-way; the next run completes and reuses the
//! packs the killed runs uploaded (the store grows by well under the tree's
//! size), `check --read-data` is clean, and a restore is byte-exact.
//! `SECRATE_CRASH_BACKUP_MB` sets the tree size.
//!
//! `a_damaged_outbox_pack_is_never_uploaded` and
//! `a_pending_snapshot_is_whole_after_unlock_and_prune`: what a mount
//! killed with snapshots in its outbox finds when it starts again, a pack
//! the cache disk damaged meanwhile, or its lock removed and a prune run
//! (src/flush/verify.rs).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use common::*;
use support::*;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seed() -> u64 {
    let s = env_u64("SECRATE_CRASH_SEED", rand::random::<u32>() as u64);
    eprintln!("seed {s} (SECRATE_CRASH_SEED={s} replays this run)");
    s
}

// ---------------------------------------------------------------------------
// The writer's model.

type Data = Arc<Vec<u8>>;

#[derive(Clone)]
enum St {
    Absent,
    File(Data, blake3::Hash),
}

impl St {
    fn file(d: Vec<u8>) -> St {
        let h = blake3::hash(&d);
        St::File(Arc::new(d), h)
    }
    fn bytes(&self) -> &[u8] {
        match self {
            St::Absent => &[],
            St::File(d, _) => d,
        }
    }
    fn same(&self, o: &St) -> bool {
        match (self, o) {
            (St::Absent, St::Absent) => true,
            (St::File(_, a), St::File(_, b)) => a == b,
            _ => false,
        }
    }
    fn show(&self) -> String {
        match self {
            St::Absent => "absent".into(),
            St::File(d, h) => format!("{} bytes {}", d.len(), &h.to_hex()[..12]),
        }
    }
}

/// The write the kill cut short: its file may hold any mix of `base` and
/// `new` (and zeros where the kernel had not sent pages yet).
struct Torn {
    ino: u64,
    base: St,
    new: St,
}

/// What the writer did, as POSIX sees it: names point at files (inodes),
/// files have contents. After a crash a name may point at any file it named
/// since the last fsync, and that file may hold any content it had since
/// then (data written through another name after a rename that the crash
/// undid included, as on ext4).
#[derive(Default)]
struct Model {
    /// Path → the files it may name: the first at the last fsync (None:
    /// absent), the others came after.
    names: BTreeMap<String, Vec<Option<u64>>>,
    /// File → its contents since the last fsync.
    files: BTreeMap<u64, Vec<St>>,
    next_ino: u64,
    /// The operation running when the mount died.
    torn: Option<Torn>,
    /// Every content ever written: hash → (operation, path), to say which
    /// version a wrong file holds.
    versions: std::collections::HashMap<blake3::Hash, (u64, String)>,
    ops: u64,
    fsyncs: u64,
    last_fsync_op: u64,
}

impl Model {
    fn ino(&self, p: &str) -> Option<u64> {
        self.names.get(p).and_then(|h| *h.last().unwrap())
    }

    fn current(&self, p: &str) -> St {
        match self.ino(p) {
            Some(i) => self.files[&i].last().unwrap().clone(),
            None => St::Absent,
        }
    }

    fn link(&mut self, p: &str, ino: Option<u64>) {
        self.names
            .entry(p.to_string())
            .or_insert_with(|| vec![None])
            .push(ino);
    }

    /// `p` gets content `st` (a new file if `p` does not exist); returns
    /// the file.
    fn write(&mut self, p: &str, st: St) -> u64 {
        if let St::File(_, h) = &st {
            self.versions.entry(*h).or_insert((self.ops, p.to_string()));
        }
        match self.ino(p) {
            Some(i) => {
                self.files.get_mut(&i).unwrap().push(st);
                i
            }
            None => {
                self.next_ino += 1;
                let i = self.next_ino;
                self.files.insert(i, vec![st]);
                self.link(p, Some(i));
                i
            }
        }
    }

    fn rename(&mut self, from: &str, to: &str) {
        let i = self.ino(from);
        self.link(from, None);
        self.link(to, i);
    }

    /// An fsync returned: everything done so far is durable.
    fn durable(&mut self) {
        for h in self.names.values_mut() {
            let last = h.pop().expect("never empty");
            h.clear();
            h.push(last);
        }
        self.names.retain(|_, h| h[0].is_some());
        let live: BTreeSet<u64> = self.names.values().filter_map(|h| h[0]).collect();
        self.files.retain(|i, _| live.contains(i));
        for h in self.files.values_mut() {
            let last = h.pop().expect("never empty");
            h.clear();
            h.push(last);
        }
        self.fsyncs += 1;
        self.last_fsync_op = self.ops;
    }

    fn existing(&self) -> Vec<String> {
        self.names
            .iter()
            .filter(|(_, h)| h.last().unwrap().is_some())
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// After a crash and recovery the observed tree is durable: it is the
    /// new starting point.
    fn reset(&mut self, observed: &BTreeMap<String, St>) {
        self.names.clear();
        self.files.clear();
        for (p, st) in observed {
            self.next_ino += 1;
            self.files.insert(self.next_ino, vec![st.clone()]);
            self.names.insert(p.clone(), vec![Some(self.next_ino)]);
        }
        self.torn = None;
    }

    fn describe(&self, st: &St) -> String {
        let St::File(_, h) = st else {
            return "absent".into();
        };
        match self.versions.get(h) {
            Some((op, p)) => format!("{} (written to {p} by operation {op})", st.show()),
            None => format!("{} = no content the writer ever wrote", st.show()),
        }
    }
}

fn torn_ok(t: &Torn, got: &[u8]) -> bool {
    let (base, new) = (t.base.bytes(), t.new.bytes());
    got.len() <= base.len().max(new.len())
        && got.iter().enumerate().all(|(i, &b)| {
            b == 0 || new.get(i).is_some_and(|&n| n == b) || base.get(i).is_some_and(|&o| o == b)
        })
}

// ---------------------------------------------------------------------------
// The writer.

const DIRS: [&str; 3] = ["d0", "d1", "d2"];
const NAMES: usize = 12;

fn content(rng: &mut StdRng) -> Vec<u8> {
    let len = match rng.gen_range(0..100) {
        0..=5 => rng.gen_range(3 << 20..10 << 20),
        6..=30 => rng.gen_range(64 << 10..1 << 20),
        31..=35 => 0,
        _ => rng.gen_range(1..64 << 10),
    };
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

fn close(f: fs::File) -> std::io::Result<()> {
    // close(2)'s error matters: with the writeback cache it is where the
    // kernel sends the last pages.
    let fd = f.into_raw_fd();
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

struct Writer {
    mnt: PathBuf,
    rng: StdRng,
    /// Set just before the mount is killed.
    killed: Arc<AtomicBool>,
}

impl Writer {
    fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    fn pick_name(&mut self) -> String {
        format!(
            "{}/f{:02}",
            DIRS[self.rng.gen_range(0..DIRS.len())],
            self.rng.gen_range(0..NAMES)
        )
    }

    /// Write `new` as the whole of `rel`, through `open` (truncating or
    /// not) and `write_at(offset)`; fsync if asked.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        m: &Mutex<Model>,
        rel: &str,
        new: St,
        trunc: bool,
        offset: u64,
        piece: &[u8],
        fsync: bool,
    ) -> std::io::Result<()> {
        {
            let mut m = m.lock().unwrap();
            let base = m.current(rel);
            let ino = m.write(rel, new.clone());
            m.torn = Some(Torn { ino, base, new });
        }
        let f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(trunc)
            .open(self.p(rel))?;
        f.write_all_at(piece, offset)?;
        if fsync {
            // The mount answered FSYNC: durable, even if it dies right after.
            f.sync_all()?;
            m.lock().unwrap().durable();
        }
        close(f)?;
        // A close that returns once the kill is under way proves nothing:
        // the kernel may drop the dirty pages it still held for the dead
        // mount and return 0 all the same (seen on Linux 6.18: O_TRUNC
        // reached the mount, the data never did, close said success). So
        // the write stays cut short, and the writer stops here.
        if self.killed.load(Ordering::SeqCst) {
            return Err(std::io::Error::other(
                "the mount was killed during this write",
            ));
        }
        m.lock().unwrap().torn = None;
        Ok(())
    }

    fn step(&mut self, m: &Mutex<Model>) -> std::io::Result<()> {
        let existing = m.lock().unwrap().existing();
        m.lock().unwrap().ops += 1;
        let fsync = self.rng.gen_bool(0.15);
        let roll = self.rng.gen_range(0..100);
        let pick_existing = |rng: &mut StdRng| existing[rng.gen_range(0..existing.len())].clone();
        match roll {
            // Create or overwrite in place (O_TRUNC).
            0..=29 => {
                let rel = self.pick_name();
                let data = content(&mut self.rng);
                self.write(m, &rel, St::file(data.clone()), true, 0, &data, fsync)
            }
            // Append.
            30..=39 if !existing.is_empty() => {
                let rel = pick_existing(&mut self.rng);
                let base = m.lock().unwrap().current(&rel);
                let extra = {
                    let mut v = vec![0u8; self.rng.gen_range(1..300_000)];
                    self.rng.fill_bytes(&mut v);
                    v
                };
                let mut new = base.bytes().to_vec();
                let off = new.len() as u64;
                new.extend_from_slice(&extra);
                self.write(m, &rel, St::file(new), false, off, &extra, fsync)
            }
            // Patch in the middle, no truncation.
            40..=49 if !existing.is_empty() => {
                let rel = pick_existing(&mut self.rng);
                let base = m.lock().unwrap().current(&rel);
                let mut new = base.bytes().to_vec();
                let off = self.rng.gen_range(0..=new.len());
                let mut piece = vec![0u8; self.rng.gen_range(1..200_000)];
                self.rng.fill_bytes(&mut piece);
                if new.len() < off + piece.len() {
                    new.resize(off + piece.len(), 0);
                }
                new[off..off + piece.len()].copy_from_slice(&piece);
                self.write(m, &rel, St::file(new), false, off as u64, &piece, fsync)
            }
            // Replace: write a temporary file, maybe fsync it, rename it
            // over the target, maybe fsync the directory.
            50..=64 => {
                let rel = self.pick_name();
                let tmp = format!("{rel}.tmp");
                let data = content(&mut self.rng);
                self.write(m, &tmp, St::file(data.clone()), true, 0, &data, fsync)?;
                self.rename(m, &tmp, &rel)?;
                if self.rng.gen_bool(0.3) {
                    let dir = Path::new(&rel)
                        .parent()
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_string();
                    fs::File::open(self.p(&dir))?.sync_all()?;
                    m.lock().unwrap().durable();
                }
                Ok(())
            }
            // Rename to another name (maybe replacing it).
            65..=74 if !existing.is_empty() => {
                let from = pick_existing(&mut self.rng);
                let to = self.pick_name();
                if from == to {
                    return Ok(());
                }
                self.rename(m, &from, &to)
            }
            // Delete.
            75..=84 if !existing.is_empty() => {
                let rel = pick_existing(&mut self.rng);
                m.lock().unwrap().link(&rel, None);
                fs::remove_file(self.p(&rel))
            }
            // fsync a file.
            85..=89 if !existing.is_empty() => {
                let rel = pick_existing(&mut self.rng);
                let f = fs::File::open(self.p(&rel))?;
                f.sync_all()?;
                drop(f);
                m.lock().unwrap().durable();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn rename(&mut self, m: &Mutex<Model>, from: &str, to: &str) -> std::io::Result<()> {
        m.lock().unwrap().rename(from, to);
        fs::rename(self.p(from), self.p(to))
    }
}

// ---------------------------------------------------------------------------
// Looking at a mounted tree.

/// Every file under the mount (without `.history`); anything that is not
/// one of the writer's directories or a file in them is an error.
fn observe(mnt: &Path) -> Result<BTreeMap<String, St>, String> {
    let mut out = BTreeMap::new();
    let mut top = BTreeSet::new();
    for e in fs::read_dir(mnt).map_err(|e| format!("readdir /: {e}"))? {
        let e = e.map_err(|e| e.to_string())?;
        let name = e.file_name().into_string().unwrap();
        if name == ".history" {
            continue;
        }
        top.insert(name);
    }
    let want: BTreeSet<String> = DIRS.iter().map(|s| s.to_string()).collect();
    if top != want {
        return Err(format!("the root holds {top:?}, expected {want:?}"));
    }
    for d in DIRS {
        for e in fs::read_dir(mnt.join(d)).map_err(|e| format!("readdir {d}: {e}"))? {
            let e = e.map_err(|e| e.to_string())?;
            let name = e.file_name().into_string().unwrap();
            let rel = format!("{d}/{name}");
            let md = fs::symlink_metadata(e.path()).map_err(|e| format!("{rel}: {e}"))?;
            if !md.is_file() {
                return Err(format!("{rel} is not a regular file"));
            }
            let data = fs::read(e.path()).map_err(|e| format!("read {rel}: {e}"))?;
            if data.len() as u64 != md.len() {
                return Err(format!(
                    "{rel}: stat says {} bytes, reading gives {}",
                    md.len(),
                    data.len()
                ));
            }
            out.insert(rel, St::file(data));
        }
    }
    Ok(out)
}

/// Every path in a state the model allows; returns the problems.
fn judge(m: &Model, seen: &BTreeMap<String, St>) -> Vec<String> {
    let paths: BTreeSet<&String> = m.names.keys().chain(seen.keys()).collect();
    let mut bad = Vec::new();
    for p in paths {
        let got = seen.get(p).cloned().unwrap_or(St::Absent);
        let names = m.names.get(p).cloned().unwrap_or_else(|| vec![None]);
        let ok = names.iter().any(|n| match n {
            None => matches!(got, St::Absent),
            Some(i) => {
                m.files[i].iter().any(|s| s.same(&got))
                    || m.torn.as_ref().is_some_and(|t| {
                        t.ino == *i && matches!(got, St::File(..)) && torn_ok(t, got.bytes())
                    })
            }
        });
        if ok {
            continue;
        }
        let allowed: Vec<String> = names
            .iter()
            .map(|n| match n {
                None => "absent".to_string(),
                Some(i) => {
                    let mut v: Vec<String> = m.files[i].iter().map(|s| m.describe(s)).collect();
                    if let Some(t) = m.torn.as_ref().filter(|t| t.ino == *i) {
                        v.push(format!(
                            "torn between {} and {}",
                            t.base.show(),
                            t.new.show()
                        ));
                    }
                    format!("file {i}: {}", v.join(" / "))
                }
            })
            .collect();
        bad.push(format!(
            "{p}: holds {}; allowed since the last fsync (after operation {}): {}",
            m.describe(&got),
            m.last_fsync_op,
            allowed.join(" | ")
        ));
    }
    bad
}

// ---------------------------------------------------------------------------
// The mount's threads, for aiming kills.

/// (name, tid, state) of every thread of `pid`.
fn threads(pid: u32) -> Vec<(String, String, char)> {
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|t| {
            let comm = fs::read_to_string(t.path().join("comm")).ok()?;
            let stat = fs::read_to_string(t.path().join("stat")).ok()?;
            let state = stat[stat.rfind(')')? + 1..].trim_start().chars().next()?;
            let tid = t.file_name().to_string_lossy().into_owned();
            Some((comm.trim().to_string(), tid, state))
        })
        .collect()
}

/// Is the seal thread sealing, rather than sleeping between seals? (Its
/// only sleep is `thread::sleep`: clock_nanosleep or nanosleep.)
fn sealing(pid: u32) -> bool {
    threads(pid).iter().any(|(n, tid, _)| {
        n == "secrate-seal"
            && fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).is_ok_and(|s| {
                let nr = s.split_whitespace().next().unwrap_or("");
                nr != "230" && nr != "35"
            })
    })
}

/// Objects sealed and waiting for upload, as files in the outbox.
fn outbox_files(cache: &Path) -> usize {
    fs::read_dir(cache.join("outbox"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
                .count()
        })
        .unwrap_or(0)
}

fn snapshot_in_outbox(cache: &Path) -> bool {
    fs::read_dir(cache.join("outbox"))
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("snapshots_"))
        })
        .unwrap_or(false)
}

#[derive(Default, Debug)]
struct Figures {
    cycles: u64,
    kills_in_seal: u64,
    kills_with_uploads: u64,
    ops: u64,
    fsyncs: u64,
    files_verified: u64,
    bytes_verified: u64,
    torn_in_flight: u64,
}

fn check_clean(s: &Secrate, read_data: bool) {
    let mut args = vec!["check"];
    if read_data {
        args.push("--read-data");
    }
    let o = s.run(&args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success() && out.contains("no errors"),
        "secrate {args:?} is not clean ({}):\n{out}\n{}",
        o.status,
        stderr(&o)
    );
}

fn kill_mount(m: &Mount) {
    let pid = m.pid.expect("the mount's pid");
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    // Dead (maybe a zombie nobody reaped yet: the new mount's writer lock
    // must see that its holder is gone).
    poll_until(
        "the killed mount process to die",
        Duration::from_secs(20),
        || !pid_alive(pid),
    );
    run_ok(Command::new("fusermount3").arg("-uz").arg(&m.mnt));
    assert!(!is_mounted(&m.mnt), "still mounted after fusermount3 -uz");
}

#[test]
fn mount_survives_kill_9() {
    if !fuse_ready("mount_survives_kill_9") {
        return;
    }
    require("fusermount3", "fuse3");
    let cycles = env_u64("SECRATE_CRASH_CYCLES", 20);
    let seed = seed();
    for store in stores("crash-mount") {
        eprintln!("== {} store, {cycles} kills", store.label);
        let clock = Clock::new();
        let work = tempfile::tempdir().unwrap();
        let s = Secrate::new(&store.url);
        s.init();
        let mut flaky = same(&s);
        flaky
            .envs
            .push(("SECRATE_FAULTS".into(), "latency_ms=100".into()));
        let mnt = work.path().join("mnt");
        let cache = work.path().join("cache");
        let extra = ["--snapshot-interval", "1", "--retention", "none"];
        let mut rng = StdRng::seed_from_u64(seed ^ store.label.len() as u64);
        let model = Arc::new(Mutex::new(Model::default()));
        let mut fig = Figures::default();

        let mut m = Mount::new(&flaky, &mnt, &cache, &extra);
        for d in DIRS {
            fs::create_dir(m.path(d)).unwrap();
        }
        fs::File::open(&m.mnt).unwrap().sync_all().unwrap();

        for cycle in 0..=cycles {
            let last = cycle == cycles;
            // The writer runs until the mount dies (or, in the last round,
            // until told to stop).
            let stop = Arc::new(AtomicBool::new(false));
            let killed = Arc::new(AtomicBool::new(false));
            let writer = {
                let (model, stop, killed) = (model.clone(), stop.clone(), killed.clone());
                let mut w = Writer {
                    mnt: m.mnt.clone(),
                    rng: StdRng::seed_from_u64(rng.gen()),
                    killed: killed.clone(),
                };
                std::thread::spawn(move || -> Result<(), String> {
                    while !stop.load(Ordering::SeqCst) {
                        if let Err(e) = w.step(&model) {
                            if killed.load(Ordering::SeqCst) {
                                return Ok(());
                            }
                            let op = model.lock().unwrap().ops;
                            return Err(format!("operation {op} failed before any kill: {e}"));
                        }
                    }
                    Ok(())
                })
            };
            let pid = m.pid.unwrap();
            let start = Instant::now();
            let aim = if last { 9 } else { cycle % 3 };
            match aim {
                // While a seal is working.
                1 => {
                    while start.elapsed() < Duration::from_secs(5) && !sealing(pid) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    std::thread::sleep(Duration::from_millis(rng.gen_range(0..3)));
                }
                // While a snapshot is being uploaded.
                2 => {
                    while start.elapsed() < Duration::from_secs(5) && !snapshot_in_outbox(&cache) {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    std::thread::sleep(Duration::from_millis(rng.gen_range(0..100)));
                }
                // At any moment.
                _ => std::thread::sleep(Duration::from_millis(rng.gen_range(0..2000))),
            }
            if writer.is_finished() {
                let r = writer.join().unwrap();
                panic!("cycle {cycle}: the writer stopped: {r:?}");
            }
            if last {
                stop.store(true, Ordering::SeqCst);
                writer.join().unwrap().unwrap();
                break;
            }
            let in_seal = sealing(pid);
            let uploads = outbox_files(&cache) > 0;
            killed.store(true, Ordering::SeqCst);
            kill_mount(&m);
            writer.join().unwrap().unwrap();
            drop(m);
            fig.cycles += 1;
            fig.kills_in_seal += in_seal as u64;
            fig.kills_with_uploads += uploads as u64;

            // Nothing the store holds is broken: a crash leaves at most
            // packs no index lists.
            check_clean(&s, false);

            m = Mount::new(&flaky, &mnt, &cache, &extra);
            let seen = observe(&m.mnt).unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
            let mut mo = model.lock().unwrap();
            let bad = judge(&mo, &seen);
            let torn = mo.torn.as_ref().map(|t| t.ino);
            eprintln!(
                "  cycle {cycle:3}: aim {}, kill {}{}; {} ops, {} fsyncs so far; {} files; cut short: {}",
                ["any", "seal", "upload"][aim as usize],
                if in_seal { "in seal" } else { "outside seal" },
                if uploads { ", uploads pending" } else { "" },
                mo.ops,
                mo.fsyncs,
                seen.len(),
                torn.map_or("-".into(), |i| format!("file {i}"))
            );
            if !bad.is_empty() {
                // The mount's inode numbers, to find them in a trace.
                let inos: Vec<String> = bad
                    .iter()
                    .filter_map(|b| b.split(": holds").next())
                    .map(|p| match fs::metadata(m.mnt.join(p)) {
                        Ok(md) => format!("{p} is inode {}", md.ino()),
                        Err(e) => format!("{p}: {e}"),
                    })
                    .collect();
                panic!(
                    "cycle {cycle} (seed {seed}): {} files are wrong after kill -9 and recovery:\n{}\n({})",
                    bad.len(),
                    bad.join("\n"),
                    inos.join(", ")
                );
            }
            if let Some(t) = &mo.torn {
                // Files holding a mix: the write cut short, seen torn.
                let whole = |g: &St| mo.files.values().flatten().any(|s| s.same(g));
                if seen.values().any(|g| !whole(g) && torn_ok(t, g.bytes())) {
                    fig.torn_in_flight += 1;
                }
            }
            fig.files_verified += seen.len() as u64;
            fig.bytes_verified += seen.values().map(|s| s.bytes().len() as u64).sum::<u64>();
            mo.reset(&seen);
        }
        clock.step(&format!("{} kill cycles", fig.cycles));

        // The last state: unmount (everything uploaded), check, and a fresh
        // cache shows exactly what the writer left.
        m.umount();
        drop(m);
        clock.step("secrate umount");
        check_clean(&s, true);
        clock.step("check --read-data");
        let fresh = Mount::new(&s, &mnt, &work.path().join("fresh"), &["--read-only"]);
        let seen = observe(&fresh.mnt).unwrap();
        drop(fresh);
        let mo = model.lock().unwrap();
        let mut exact = Model::default();
        for p in mo.existing() {
            exact.next_ino += 1;
            exact.files.insert(exact.next_ino, vec![mo.current(&p)]);
            exact.names.insert(p.clone(), vec![Some(exact.next_ino)]);
        }
        exact.versions = mo.versions.clone();
        exact.last_fsync_op = mo.ops;
        let bad = judge(&exact, &seen);
        assert!(
            bad.is_empty(),
            "a fresh mount differs from the last state:\n{}",
            bad.join("\n")
        );
        fig.ops = mo.ops;
        fig.fsyncs = mo.fsyncs;
        clock.step("fresh mount shows the last state");
        eprintln!("FIGURES {} store: {fig:?}", store.label);
    }
}

/// Files in the chunk cache (each chunk fetched from the store lands there).
fn chunk_files(cache: &Path) -> usize {
    fs::read_dir(cache.join("chunks")).map_or(0, |rd| rd.count())
}

/// The log lines a mount wrote after the first `skip` bytes of its log.
fn log_since(m: &Mount, skip: usize) -> String {
    m.log().get(skip..).unwrap_or_default().to_string()
}

#[test]
fn a_clean_stop_keeps_cached_copies_a_crash_drops_them() {
    if !fuse_ready("a_clean_stop_keeps_cached_copies_a_crash_drops_them") {
        return;
    }
    require("fusermount3", "fuse3");
    let data = pseudo_random(7, 3 << 20);
    for store in stores("crash-clean-stop") {
        eprintln!("== {} store", store.label);
        let work = tempfile::tempdir().unwrap();
        let s = Secrate::new(&store.url);
        s.init();
        let (mnt, cache) = (work.path().join("mnt"), work.path().join("cache"));
        let mut m = Mount::new(&s, &mnt, &cache, &[]);
        write_synced(&m.path("f"), &data);
        m.snapshot();
        m.umount();
        drop(m);

        // A clean stop: the sealed file's staged copy is still the file.
        let mark = fs::read_to_string(cache.join("mount.log")).unwrap().len();
        let m = Mount::new(&s, &mnt, &cache, &[]);
        let chunks = chunk_files(&cache);
        assert_eq!(fs::read(m.path("f")).unwrap(), data);
        let log = log_since(&m, mark);
        assert!(
            !log.contains("back to its sealed content")
                && !log.contains("back to their sealed content"),
            "a clean stop dropped cached copies:\n{log}"
        );
        assert_eq!(
            chunk_files(&cache),
            chunks,
            "the file was read from the store, not from its cached copy"
        );

        // A crash: the copy may have been written after the last durable
        // commit, so the next mount goes back to the sealed chunks.
        kill_mount(&m);
        drop(m);
        let mark = fs::read_to_string(cache.join("mount.log")).unwrap().len();
        let mut m = Mount::new(&s, &mnt, &cache, &[]);
        let log = log_since(&m, mark);
        assert!(
            log.contains("1 sealed file back to its sealed content"),
            "after a crash the cached copy must go:\n{log}"
        );
        assert_eq!(fs::read(m.path("f")).unwrap(), data);
        assert!(chunk_files(&cache) > chunks, "read without fetching chunks");

        // A copy cut outside the mount after a clean stop: its length no
        // longer matches its record, so the next mount goes back to the
        // chunks rather than read zeros past the cut.
        write_synced(&m.path("f"), &data);
        m.snapshot();
        m.umount();
        drop(m);
        let copy = fs::read_dir(cache.join("staged"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| fs::metadata(p).unwrap().len() == data.len() as u64)
            .expect("the staged copy");
        fs::OpenOptions::new()
            .write(true)
            .open(&copy)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let mark = fs::read_to_string(cache.join("mount.log")).unwrap().len();
        let mut m = Mount::new(&s, &mnt, &cache, &[]);
        let log = log_since(&m, mark);
        assert!(
            log.contains("1 sealed file back to its sealed content"),
            "a cut copy was trusted:\n{log}"
        );
        assert_eq!(fs::read(m.path("f")).unwrap(), data);
        m.umount();
    }
}

/// A write (never fsync'd) to a sealed file with no cached copy, then a
/// durable commit for something else, then a power cut: the file keeps its
/// old content (the write may or may not be there). The copy-up wrote the
/// old content unsynced and renamed it into place, and the other file's
/// fsync made the rename and the record "dirty, no chunks" durable while
/// ext4 still held the data in memory: after the cut the staged file was
/// empty and recovery took its length as the size (found by review). The
/// cache is on an ext4 image whose power is cut with `EXT4_IOC_SHUTDOWN`.
#[test]
fn a_write_to_an_evicted_file_survives_a_power_cut() {
    if !fuse_ready("a_write_to_an_evicted_file_survives_a_power_cut") {
        return;
    }
    require("fusermount3", "fuse3");
    require("mkfs.ext4", "e2fsprogs");
    let old = pseudo_random(11, 3 << 20);
    let store = &stores("crash-power-cut")[0];
    let work = tempfile::tempdir().unwrap();
    let s = Secrate::new(&store.url);
    s.init();
    let disk = Ext4Image::new(
        &work.path().join("disk"),
        &work.path().join("disk.img"),
        "256M",
    );
    let (mnt, cache) = (work.path().join("mnt"), disk.dir.join("cache"));
    let staged = || staged_bytes(&cache);

    // Sealed, uploaded, and its cached copy evicted.
    let m = Mount::new(&s, &mnt, &cache, &["--cache-size", "1M"]);
    write_synced(&m.path("f"), &old);
    m.snapshot();
    poll_until(
        "the cached copy to be evicted",
        Duration::from_secs(60),
        || staged() == 0,
    );

    // 10 bytes into it (a copy-up), no fsync; another file's fsync
    // commits the live tree durably.
    let new = b"0123456789";
    {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(m.path("f"))
            .unwrap();
        f.write_all_at(new, 100).unwrap();
    }
    write_synced(&m.path("g"), b"another file");
    disk.power_cut();
    kill_mount(&m);
    drop(m);
    disk.remount();

    let mut m = Mount::new(&s, &mnt, &cache, &[]);
    let got = fs::read(m.path("f")).unwrap();
    assert_eq!(got.len(), old.len(), "the file lost its old content");
    assert!(
        got[100..110] == old[100..110] || &got[100..110] == new,
        "the unsynced write left other bytes"
    );
    assert!(
        got[..100] == old[..100] && got[110..] == old[110..],
        "the old content changed"
    );
    assert_eq!(fs::read(m.path("g")).unwrap(), b"another file");
    m.umount();
}

/// The live tree is committed durably every `DURABLE_EVERY` while it
/// changes, fsync or not: such a commit must never make a record rely on
/// staged data the disk does not hold yet. A file replaced by rename (the
/// new one written and closed, never fsync'd) over a sealed file whose
/// copy was evicted, then a periodic durable commit, then a power cut: the
/// file reads as its new content or its old one, as ext4 gives for a
/// rename over a file; never empty, other bytes, or the new length with
/// zeros. A file fsync'd before is whole. (Found by review: it came back
/// empty, the durable rename naming a staged file whose data the disk did
/// not hold yet; the periodic commit now syncs the cache disk first.)
#[test]
fn a_periodic_durable_commit_then_a_power_cut_gives_no_wrong_bytes() {
    if !fuse_ready("a_periodic_durable_commit_then_a_power_cut_gives_no_wrong_bytes") {
        return;
    }
    require("fusermount3", "fuse3");
    require("mkfs.ext4", "e2fsprogs");
    let old = pseudo_random(12, 3 << 20);
    let new = pseudo_random(13, 3 << 20);
    let store = &stores("crash-periodic-durable")[0];
    let work = tempfile::tempdir().unwrap();
    let s = Secrate::new(&store.url);
    s.init();
    let disk = Ext4Image::new(
        &work.path().join("disk"),
        &work.path().join("disk.img"),
        "256M",
    );
    let (mnt, cache) = (work.path().join("mnt"), disk.dir.join("cache"));
    let m = Mount::new(
        &s,
        &mnt,
        &cache,
        &["--cache-size", "1M", "--snapshot-interval", "0"],
    );
    write_synced(&m.path("f"), &old);
    m.snapshot();
    poll_until(
        "the cached copy to be evicted",
        Duration::from_secs(60),
        || staged_bytes(&cache) == 0,
    );
    write_synced(&m.path("synced"), b"fsync'd");
    fs::write(m.path("f.tmp"), &new).unwrap();
    fs::rename(m.path("f.tmp"), m.path("f")).unwrap();
    fs::write(m.path("small"), b"written, closed").unwrap();
    std::thread::sleep(secrate::live::DURABLE_EVERY + Duration::from_secs(2));
    disk.power_cut();
    kill_mount(&m);
    drop(m);
    disk.remount();

    let mut m = Mount::new(&s, &mnt, &cache, &[]);
    let got = fs::read(m.path("f")).unwrap();
    let what = if got == new {
        "its new content"
    } else if got == old {
        "its old content (the rename not durable)"
    } else {
        panic!(
            "f after the power cut: {} bytes, neither its new nor its old content",
            got.len()
        )
    };
    eprintln!("f after the power cut: {what}");
    if let Ok(b) = fs::read(m.path("small")) {
        assert!(b == b"written, closed" || b.is_empty(), "{b:?}");
    }
    assert_eq!(fs::read(m.path("synced")).unwrap(), b"fsync'd");
    assert!(!m.path("f.tmp").exists());
    m.umount();
}

// ---------------------------------------------------------------------------
// Backup.

fn packs_bytes(url: &str) -> u64 {
    open_store(url)
        .list("packs")
        .unwrap_or_default()
        .iter()
        .map(|o| o.size)
        .sum()
}

fn tree_bytes(root: &Path) -> u64 {
    describe(root)
        .0
        .values()
        .filter(|a| a.kind == libc::S_IFREG)
        .map(|a| a.size)
        .sum()
}

#[test]
fn backup_survives_kill_9() {
    let mb = env_u64("SECRATE_CRASH_BACKUP_MB", 200);
    let seed = seed();
    let src_dir = tempfile::tempdir().unwrap();
    let src = src_dir.path().join("src");
    make_tree(
        &src,
        &TreeSpec {
            small_files: 300,
            big_file: 16 << 20,
            seed,
        },
    );
    let mut rng = StdRng::seed_from_u64(seed);
    fs::create_dir_all(src.join("data")).unwrap();
    let n = (mb.saturating_sub(16) / 12).max(1);
    for i in 0..n {
        let mut v = vec![0u8; 12 << 20];
        rng.fill_bytes(&mut v);
        fs::File::create(src.join(format!("data/blob-{i:03}")))
            .unwrap()
            .write_all(&v)
            .unwrap();
    }
    let total = tree_bytes(&src);
    eprintln!("tree: {} MB", total >> 20);
    for store in stores("crash-backup") {
        eprintln!("== {} store", store.label);
        let clock = Clock::new();
        let work = tempfile::tempdir().unwrap();
        let s = Secrate::new(&store.url);
        s.init();
        let mut slow = same(&s);
        slow.envs
            .push(("SECRATE_FAULTS".into(), "latency_ms=250".into()));
        let mut delay = Duration::from_millis(rng.gen_range(300..800));
        let mut kills = 0;
        let mut grew = 0;
        let mut completed = None;
        while kills < 3 || grew == 0 {
            assert!(
                kills < 12,
                "no killed backup stored any pack: nothing to reuse"
            );
            let before = packs_bytes(&store.url);
            let mut child = slow
                .command()
                .args(["backup", "-q", src.to_str().unwrap()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let start = Instant::now();
            let mut finished = None;
            while start.elapsed() < delay {
                if let Some(st) = child.try_wait().unwrap() {
                    finished = Some(st);
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if let Some(st) = finished {
                // Not killed in time: this is the completing run.
                assert!(st.success(), "backup failed: {st}");
                completed = Some((before, start.elapsed()));
                break;
            }
            child.kill().unwrap();
            let st = child.wait().unwrap();
            assert!(!st.success(), "a killed backup reported success");
            let after = packs_bytes(&store.url);
            eprintln!(
                "  killed after {:.2}s: packs {} → {} MB",
                delay.as_secs_f64(),
                before >> 20,
                after >> 20
            );
            kills += 1;
            if after > before {
                grew += 1;
                delay = delay.mul_f64(rng.gen_range(0.9..1.1));
            } else {
                delay = delay.mul_f64(rng.gen_range(1.2..1.6));
            }
            check_clean(&s, false);
        }
        let (before, took) = match completed {
            Some(c) => c,
            None => {
                let before = packs_bytes(&store.url);
                let t = Instant::now();
                s.ok(&["backup", "-q", src.to_str().unwrap()]);
                (before, t.elapsed())
            }
        };
        let after = packs_bytes(&store.url);
        let added = after - before;
        eprintln!(
            "  {kills} kills; the next backup completed in {:.1}s: {} MB already stored, {} MB added, tree {} MB",
            took.as_secs_f64(),
            before >> 20,
            added >> 20,
            total >> 20
        );
        // What the killed runs stored is reused: the store grows by what
        // was missing (plus the packs cut short), not by the tree again.
        assert!(
            before >= 16 << 20 && added < total - total / 10,
            "the backup after the kills added {added} bytes with {before} already stored, for a tree of {total}: the uploaded packs were not reused"
        );
        // At most what was missing, plus packs that were cut short.
        assert!(
            added <= total.saturating_sub(before) + (40 << 20),
            "the backup after the kills added {added} bytes with {before} already stored, for a tree of {total}"
        );
        assert!(
            after < total + total / 5 + (48 << 20),
            "the store holds {after} bytes of packs for a tree of {total}: data was stored twice"
        );
        clock.step("kills and the completing backup");
        check_clean(&s, true);
        clock.step("check --read-data");
        let dst = work.path().join("dst");
        s.ok(&["restore", "latest", dst.to_str().unwrap()]);
        assert_same_tree(&src, &dst);
        clock.step("restore is byte-exact");
    }
}

/// A mount killed with a snapshot not uploaded (its store was away), its
/// lock then removed on purpose with `secrate unlock`, and the snapshot
/// before it forgotten and pruned: the pending snapshot reuses a
/// directory's tree only the forgotten one held, and the prune deleted
/// it. The mount started again finds its outbox's lock gone, confirms the
/// pending snapshot against the store, encodes that directory again from
/// its live tree, and uploads the snapshot whole. (Stop 29: before, it
/// uploaded a snapshot naming a deleted tree and `check` failed.)
#[test]
fn a_pending_snapshot_is_whole_after_unlock_and_prune() {
    if !fuse_ready("a_pending_snapshot_is_whole_after_unlock_and_prune") {
        return;
    }
    require("fusermount3", "fuse3");
    let work = tempfile::tempdir().unwrap();
    let s = file_repo(work.path());
    let data = pseudo_random(29, 3 << 20);
    // The same bytes in a backup: the prune keeps their chunks and takes
    // what the mount's first snapshot alone held, its trees.
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), &data).unwrap();
    s.ok(&["backup", "-q", src.to_str().unwrap()]);
    let m = Mount::in_dir(&s, work.path(), &[]);
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/f"), &data).unwrap();
    let out = m.snapshot();
    let s1 = out.split_whitespace().nth(1).unwrap().to_string();
    let (store, away) = (work.path().join("store"), work.path().join("store.away"));
    fs::rename(&store, &away).unwrap();
    fs::write(m.path("new"), b"sealed while the store was away").unwrap();
    m.s.ok(&["snapshot", "--no-wait", m.mnt.to_str().unwrap()]);
    kill_mount(&m);
    fs::rename(&away, &store).unwrap();

    s.ok(&["unlock"]);
    s.ok(&["forget", &s1]);
    let pruned = s.ok(&["prune", "--max-unused", "0"]);
    eprintln!("{pruned}");

    let mut m = Mount::in_dir(&s, work.path(), &[]);
    m.umount();
    let log = m.log();
    let check = s.run(&["check", "--read-data"]);
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && out.contains("no errors"),
        "{out}\nmount.log:\n{log}"
    );
    assert!(
        log.contains("not yet uploaded, names")
            && log.contains("every blob it names is stored again"),
        "mount.log:\n{log}"
    );
    let m = Mount::in_dir(&s, work.path(), &[]);
    assert_eq!(fs::read(m.path("d/f")).unwrap(), data);
    assert_eq!(
        m.history().len(),
        3,
        "the backup, the pending snapshot, the one that stored the tree again"
    );
}

/// A mount killed with a snapshot in its outbox (its store was away), whose
/// tree pack the cache disk then damaged: the mount started again never
/// uploads the damaged pack, sets it aside, encodes the directories again
/// from its live tree, uploads the snapshot whole, and `secrate status`
/// says what happened. (Stop 29: before, the damaged pack was uploaded and
/// `check` failed.)
#[test]
fn a_damaged_outbox_pack_is_never_uploaded() {
    if !fuse_ready("a_damaged_outbox_pack_is_never_uploaded") {
        return;
    }
    require("fusermount3", "fuse3");
    let work = tempfile::tempdir().unwrap();
    let s = file_repo(work.path());
    let m = Mount::in_dir(&s, work.path(), &[]);
    // Away (not a fault injected: a file:// store takes packs by hard link).
    let (store, away) = (work.path().join("store"), work.path().join("store.away"));
    fs::rename(&store, &away).unwrap();
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/f"), pseudo_random(30, 2 << 20)).unwrap();
    m.s.ok(&["snapshot", "--no-wait", m.mnt.to_str().unwrap()]);
    kill_mount(&m);
    fs::rename(&away, &store).unwrap();

    // The smallest pack is the tree pack (the data pack holds 2 MiB).
    let outbox = work.path().join("cache/outbox");
    let tree_pack = fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("packs_")
        })
        .min_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("a pack in the outbox");
    let mut bytes = fs::read(&tree_pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&tree_pack, bytes).unwrap();
    let name = tree_pack
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let object = name.replacen('_', "/", 2);

    let mut m = Mount::in_dir(&s, work.path(), &[]);
    let t = Instant::now();
    loop {
        let st = m.s.ok(&["status", m.mnt.to_str().unwrap()]);
        if st.contains("OUTBOX PROBLEM") && st.contains(&object) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no outbox problem in `secrate status`:\n{st}\nmount.log:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Seen, then cleared: the problems shown and the item kept go.
    let kept = work.path().join("cache/damaged").join(&name);
    assert!(kept.exists());
    let o =
        m.s.run(&["status", "--clear-problems", m.mnt.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("damaged items deleted: 1"), "{e}");
    assert!(!kept.exists());
    let st = m.s.ok(&["status", m.mnt.to_str().unwrap()]);
    assert!(!st.contains("OUTBOX PROBLEM"), "{st}");
    m.umount();
    let log = m.log();
    let check = s.run(&["check", "--read-data"]);
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && out.contains("no errors"),
        "{out}\nmount.log:\n{log}"
    );
    assert!(
        !work.path().join("store").join(&object).exists(),
        "{object} was uploaded"
    );
    assert!(log.contains("was damaged on this cache's disk"), "{log}");
}

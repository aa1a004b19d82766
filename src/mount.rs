//! Serving a mount: cache directory, locks, the live tree, the flusher, the
//! control socket and the FUSE session, from mount to the last upload.
//!
//! Order on the way in: lock the cache directory (one process per cache),
//! take the repository's writer lock, recover the outbox, make the live tree
//! follow the repository (import on a fresh cache), start flushing, mount.
//! On the way out (`secrate umount`, `fusermount3 -u`, SIGTERM): the session
//! ends, a last snapshot is sealed, and the process exits only when the
//! outbox is empty, so an unmount means "everything is in the store".
//! A read-only mount takes no writer lock and seals nothing; instead it
//! looks at the store every `--snapshot-interval` for snapshots that other
//! processes added or forgot, so its `.history` follows the repository,
//! and its live tree moves to the newest snapshot (`fs::switch`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::blobs::BlobReader;
use crate::control::{send, Event, Request, FSNAME_PREFIX, SOCKET};
use crate::error::{Error, Result};
use crate::flush::{live_err, Flusher};
use crate::fs::SecrateFs;
use crate::live::import::import_snapshot;
use crate::live::{Live, ROOT};
use crate::log::{agree, count};
use crate::repo::Repository;

pub struct MountOptions {
    pub mountpoint: PathBuf,
    pub cache_dir: PathBuf,
    pub snapshot_interval: Duration,
    pub read_only: bool,
    /// Bound on clean cached data (decrypted chunks), in bytes.
    pub cache_size: u64,
    pub allow_other: bool,
    /// Applied to this mount's automatic snapshots; `None` keeps all.
    pub retention: Option<crate::ops::forget::Policy>,
    /// With `retention`: prune at most this often once it forgot
    /// snapshots (zero: never).
    pub prune_interval: Duration,
}

/// `$XDG_CACHE_HOME/secrate/<repository id>` (falling back to `~/.cache`).
pub fn default_cache_dir(repo_id: &str) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("secrate").join(repo_id)
}

/// Refuse a cache directory or a `file://` store inside the mountpoint
/// (or at it): once mounted, their paths lead into the mount, and the
/// process serving it would wait on itself. Refuse a mountpoint a secrate
/// mount already serves, a mountpoint that holds files (the mount would
/// hide them: files written there while a mount had failed looked lost),
/// and a cache "directory" that is a file. `mountpoint` is canonical.
pub fn check_places(
    mountpoint: &Path,
    cache_dir: &Path,
    store: &crate::store::Store,
) -> Result<()> {
    if cache_dir.exists() && !cache_dir.is_dir() {
        return Err(Error::Invalid(format!(
            "the cache directory {} is a file, not a directory",
            cache_dir.display()
        )));
    }
    let places = std::iter::once(("cache directory", cache_dir.to_path_buf()))
        .chain(store.local_dirs().into_iter().map(|d| ("store", d)));
    for (what, place) in places {
        if crate::store::resolved(&place).starts_with(mountpoint) {
            return Err(Error::Invalid(format!(
                "the {what} {} is inside the mountpoint {}: give one outside it",
                place.display(),
                mountpoint.display()
            )));
        }
    }
    // A second mount there would hide the first (a read-only one takes no
    // lock that would stop it), which then serves nobody until unmounted.
    if let Ok(other) = crate::control::cache_dir_of(mountpoint) {
        return Err(Error::Invalid(format!(
            "{} is already a secrate mount (cache {}): unmount it first (`secrate umount {}`)",
            mountpoint.display(),
            other.display(),
            mountpoint.display()
        )));
    }
    if let Ok(entries) = fs::read_dir(mountpoint) {
        // The root of a filesystem of its own has a `lost+found` that
        // nobody writes to (fsck does): no file of the user's is hidden.
        let held = |e: &io::Result<fs::DirEntry>| {
            !e.as_ref().is_ok_and(|e| {
                e.file_name() == "lost+found" && e.file_type().is_ok_and(|t| t.is_dir())
            })
        };
        if entries.into_iter().any(|e| held(&e)) {
            return Err(Error::Invalid(format!(
                "{} is not empty: a mount there would hide what it holds; give an empty directory",
                mountpoint.display()
            )));
        }
    }
    Ok(())
}

/// Holds `lock` in the cache directory (flock) for as long as it lives.
pub struct CacheLock {
    _file: File,
}

/// Create the cache directory (0700) and take its lock.
pub fn lock_cache(dir: &Path) -> Result<CacheLock> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| Error::io(dir, e))?;
    let path = dir.join("lock");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    use std::os::fd::AsRawFd;
    let take = || unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    // A holder that was killed may still be exiting (its first thread a
    // zombie while others finish): its lock goes with its last thread, so
    // wait for that a while rather than refuse.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut locked = take();
    while !locked && std::time::Instant::now() < deadline {
        let holder = fs::read_to_string(&path).unwrap_or_default();
        match holder.trim().parse::<u32>() {
            Ok(pid) if !crate::repo::lock::process_alive(pid) => {
                std::thread::sleep(std::time::Duration::from_millis(100));
                locked = take();
            }
            _ => break,
        }
    }
    if !locked {
        let holder = fs::read_to_string(&path).unwrap_or_default();
        return Err(Error::Invalid(format!(
            "the cache directory {} is in use by another secrate process (pid {}); one process per cache",
            dir.display(),
            holder.trim()
        )));
    }
    f.set_len(0).map_err(|e| Error::io(&path, e))?;
    write!(f, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
    Ok(CacheLock { _file: f })
}

/// Everything a running mount shares between its threads.
struct Shared {
    flusher: Arc<Flusher>,
    mountpoint: PathBuf,
    read_only: bool,
    /// Clients waiting for the unmount to finish.
    watchers: Mutex<Vec<UnixStream>>,
    /// The `.history` view, once the filesystem exists.
    history: std::sync::OnceLock<Arc<crate::fs::history::History>>,
}

/// Mount and serve until unmounted; `ready` runs once the filesystem is
/// mounted. Returns after the final upload.
pub fn serve(repo: Arc<Repository>, opts: MountOptions, ready: &mut dyn FnMut()) -> Result<()> {
    // Everything this process creates in the cache is private (files 0600,
    // directories 0700); modes inside the mount are kept in the records.
    unsafe { libc::umask(0o077) };
    check_places(&opts.mountpoint, &opts.cache_dir, repo.store())?;
    let cache_lock = lock_cache(&opts.cache_dir)?;
    let md = fs::metadata(&opts.mountpoint).map_err(|e| Error::io(&opts.mountpoint, e))?;
    if !md.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not a directory",
            opts.mountpoint.display()
        )));
    }
    let writer_lock = if opts.read_only {
        None
    } else {
        let cache = fs::canonicalize(&opts.cache_dir).unwrap_or_else(|_| opts.cache_dir.clone());
        let outbox = format!("{}:{}", crate::repo::lock::hostname(), cache.display());
        Some(repo.lock_mount(&format!("mount at {}", opts.mountpoint.display()), &outbox)?)
    };
    for problem in repo.load_index()? {
        crate::log!("warning: {problem}");
    }
    for id in repo.forget_missing_packs()? {
        crate::log!(
            "warning: the index lists {} but the store does not hold it: its blobs are stored again if needed (run `secrate check`)",
            crate::repo::pack::pack_name(&id)
        );
    }
    let live = Arc::new(Live::open(&opts.cache_dir).map_err(live_err)?);
    let rec = live.recover().map_err(live_err)?;
    if rec.removed_files + rec.dropped_orphans + rec.dropped_clean + rec.resized > 0
        || !rec.lost_dirty.is_empty()
    {
        crate::log!("{}", recovered_line(&rec));
    }
    let reader = BlobReader::new(repo.clone(), &opts.cache_dir, opts.cache_size)?;
    let dropped = reader.drop_unindexed_tree_packs();
    if dropped > 0 {
        crate::log!("{}", dropped_tree_packs_line(dropped));
    }
    let source = opts.mountpoint.display().to_string();
    let flusher = Flusher::new(
        live.clone(),
        reader.clone(),
        repo.clone(),
        writer_lock,
        source,
    )?;
    flusher.set_cache_size(opts.cache_size);
    let mut starting = Starting {
        flusher: &flusher,
        threads: Vec::new(),
        serving: false,
    };
    follow_repository(&live, &reader, &flusher)?;
    if !opts.read_only {
        mark_lost(&repo, &live)?;
        // After the outbox's packs joined the index (`Flusher::new`).
        let restaged = live
            .restage_unindexed(|id| repo.index().contains(id))
            .map_err(live_err)?;
        for path in &restaged {
            crate::log!(
                "{path}: chunks the store no longer holds are stored again from this cache's copy"
            );
        }
    }

    let shared = Arc::new(Shared {
        flusher: flusher.clone(),
        mountpoint: opts.mountpoint.clone(),
        read_only: opts.read_only,
        watchers: Mutex::new(Vec::new()),
        history: std::sync::OnceLock::new(),
    });
    let sock = opts.cache_dir.join(SOCKET);
    let _ = fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).map_err(|e| Error::io(&sock, e))?;
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("secrate-control".into())
            .spawn(move || control_loop(listener, shared))
            .map_err(|e| Error::io("control thread", e))?;
    }
    let fs = SecrateFs::new(
        live.clone(),
        reader.clone(),
        flusher.clone(),
        opts.read_only,
    );
    if opts.read_only {
        // Nothing here adds snapshots, but other processes may (a backup
        // into this repository, a writable mount elsewhere): show them in
        // `.history`, and the newest as the live tree.
        let switch = fs.live_switch();
        let (live, f) = (live.clone(), flusher.clone());
        let pace = Mutex::new(None);
        starting
            .threads
            .extend(flusher.start_following(opts.snapshot_interval, move || {
                follow_newest(&live, &f, &switch, &pace)
            }));
    } else {
        starting.threads = flusher.start(
            opts.snapshot_interval,
            opts.retention.clone(),
            opts.prune_interval,
        );
    }
    let _ = shared.history.set(fs.history());
    let mut options = vec![
        fuser::MountOption::FSName(format!("{FSNAME_PREFIX}{}", opts.cache_dir.display())),
        fuser::MountOption::Subtype("secrate".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoAtime,
    ];
    options.push(if opts.read_only {
        fuser::MountOption::RO
    } else {
        fuser::MountOption::RW
    });
    let mut config = crate::fs::session_config(options);
    config.acl = if opts.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    let notifier = fs.notifier_slot();
    let session = fuser::Session::new(fs, &opts.mountpoint, &config).map_err(|e| {
        Error::Invalid(format!(
            "cannot mount at {}: {e}",
            opts.mountpoint.display()
        ))
    })?;
    // Set once, here; the filesystem cannot run before `session.run`.
    let _ = notifier.set(session.notifier());
    let threads = starting.serve();
    let unmounting = Arc::new(AtomicBool::new(false));
    watch_signals(&opts.mountpoint, live.clone(), unmounting.clone());
    crate::log!(
        "mounted {} at {} (cache {})",
        repo.url(),
        opts.mountpoint.display(),
        opts.cache_dir.display()
    );
    if let Err(e) = crate::fs::raise_readahead(&opts.mountpoint) {
        crate::log!("note: the kernel's read-ahead for this mount stays at its default ({e}; raising it needs root)");
    }
    ready();
    let r = session.run();
    unmounting.store(true, Ordering::SeqCst);
    crate::log!("unmounted {}", opts.mountpoint.display());
    if let Err(e) = r {
        crate::log!("warning: the FUSE session ended with {e}");
    }
    flusher.stop();
    for t in threads {
        let _ = t.join();
    }
    let result = if opts.read_only {
        Ok(())
    } else {
        final_flush(&shared)
    };
    reader.stop();
    // The session is over: no more writes reach the staged files.
    if let Err(e) = live.mark_clean_stop() {
        crate::log!("warning: cannot mark the cache as cleanly stopped: {e}");
    }
    let _ = live.commit(true);
    if result.is_ok() || opts.read_only {
        flusher.release_lock();
    } else {
        // What is not uploaded stays protected (see `repo/lock.rs`).
        flusher.leave_lock();
    }
    let mut watchers =
        std::mem::take(&mut *shared.watchers.lock().unwrap_or_else(|e| e.into_inner()));
    for w in &mut watchers {
        let ev = match &result {
            Ok(()) => Event::Done,
            Err(e) => Event::Error {
                message: e.to_string(),
            },
        };
        let _ = send(w, &ev);
    }
    let _ = fs::remove_file(&sock);
    // The control thread still holds the cache database open: keep the
    // cache lock until the process exits and the kernel drops both, so the
    // next mount of this cache (which may start the moment `secrate
    // umount` returns: it waits for this lock) never finds it in use.
    std::mem::forget(cache_lock);
    result
}

/// A mount on its way in. If it fails before the filesystem serves, its
/// writer lock goes as on an unmount: released if nothing waits for upload
/// and the live tree holds nothing unsealed, else left in the store for
/// the next mount of this cache. (The control
/// and flusher threads hold the flusher, and with it the lock, until the
/// process exits: dropping ours would release nothing.)
struct Starting<'a> {
    flusher: &'a Flusher,
    threads: Vec<std::thread::JoinHandle<()>>,
    serving: bool,
}

impl Starting<'_> {
    /// The filesystem serves: the flusher's threads, to join at unmount.
    fn serve(mut self) -> Vec<std::thread::JoinHandle<()>> {
        self.serving = true;
        std::mem::take(&mut self.threads)
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        if self.serving {
            return;
        }
        self.flusher.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Changes recovered from a crash and not sealed yet need blobs the
        // store holds: another writer's prune must not take them.
        match (self.flusher.pending(), self.flusher.unsealed_changes()) {
            (Ok((0, _)), Ok(false)) => self.flusher.release_lock(),
            _ => self.flusher.leave_lock(),
        }
    }
}

/// Wait up to `timeout` until no process holds the lock of the cache at
/// `dir` (the serving process exits soon after its final upload). True
/// when free.
pub fn wait_cache_free(dir: &Path, timeout: std::time::Duration) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = File::open(dir.join("lock")) else {
        return true;
    };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// How the live tree stands to the repository's latest uploaded snapshot
/// (by time, as `.history` orders them), when it is not that snapshot.
struct Behind {
    latest: crate::flush::SnapEntry,
    /// The live tree should become `latest`: the cache is fresh, or its
    /// own snapshot is older (or forgotten) and nothing in it is unsealed.
    import: bool,
    /// Its own snapshot is older or forgotten.
    older: bool,
}

/// The snapshot a live tree follows: the newest uploaded one that a mount
/// made, or the newest of all while no mount has made one (a repository
/// filled by `secrate backup` and mounted for the first time). A `secrate
/// backup /elsewhere` into a mount's repository is another directory, not
/// a newer version of the mount's tree: it stays in `.history` only.
fn newest_to_follow(snaps: &[crate::flush::SnapEntry]) -> Option<&crate::flush::SnapEntry> {
    let uploaded = || snaps.iter().rev().filter(|s| s.uploaded);
    uploaded()
        .find(|s| s.snapshot.origin == crate::repo::snapshot::Origin::Mount)
        .or_else(|| uploaded().next())
}

fn behind(live: &Live, flusher: &Flusher) -> Result<Option<Behind>> {
    let (base, last, sealed) = live
        .tx(|tx| {
            Ok((
                tx.state("base_snapshot")?,
                tx.state("last_snapshot")?,
                tx.state_u64("seal_gen")?,
            ))
        })
        .map_err(live_err)?;
    let snaps = flusher.snapshots();
    let Some(latest) = newest_to_follow(&snaps) else {
        return Ok(None);
    };
    if last.as_deref() == Some(&latest.id.0[..]) {
        return Ok(None);
    }
    let root = live.inode(ROOT).map_err(live_err)?;
    let has_children = live.tx(|tx| tx.has_children(ROOT)).map_err(live_err)?;
    let fresh = base.is_none() && sealed == 0 && !has_children;
    let ours = last
        .as_ref()
        .and_then(|l| snaps.iter().find(|s| &s.id.0[..] == l.as_slice()));
    let older = ours.is_none_or(|o| o.snapshot.time_ns < latest.snapshot.time_ns);
    let clean = root.dir_tree().is_some() && flusher.pending().map_err(live_err)?.0 == 0;
    Ok(Some(Behind {
        latest: latest.clone(),
        import: fresh || (older && clean),
        older,
    }))
}

/// What `Live::recover` did, for the mount's log.
fn recovered_line(rec: &crate::live::Recovery) -> String {
    format!(
        "recovered the cache: {} removed, {} dropped, {} written but never fsync'd {} lost, \
         {} back to {} sealed content, {} set from staged data",
        count(rec.removed_files, "leftover staged file"),
        count(rec.dropped_orphans, "unlinked file"),
        count(rec.lost_dirty.len(), "file"),
        agree(rec.lost_dirty.len(), "was", "were"),
        count(rec.dropped_clean, "sealed file"),
        agree(rec.dropped_clean, "its", "their"),
        count(rec.resized, "size")
    )
}

fn dropped_tree_packs_line(dropped: usize) -> String {
    format!(
        "removed {} the index no longer lists",
        count(dropped, "cached tree pack")
    )
}

fn reencoded_dirs_line(dirs: usize) -> String {
    format!(
        "{} whose tree was lost {} encoded again",
        count(dirs, "directory"),
        agree(dirs, "is", "are")
    )
}

/// How much work an import or switch took, for the mount's log.
fn import_how(i: &crate::live::import::Import) -> String {
    if i.whole {
        count(i.trees_read, "tree") + " read"
    } else {
        format!(
            "{} read, {} changed",
            count(i.trees_read, "tree"),
            count(i.changed_names.len(), "name")
        )
    }
}

fn log_import(
    latest: &crate::flush::SnapEntry,
    i: &crate::live::import::Import,
    took: std::time::Duration,
) {
    let how = import_how(i);
    crate::log!(
        "the live tree is now snapshot {} ({}): {}, {}, in {:.3} s ({how})",
        latest.id.short(),
        latest.snapshot.time_rfc3339(),
        count(i.files, "file"),
        count(i.dirs, "directory"),
        took.as_secs_f64()
    );
}

/// On a fresh cache, show the repository's latest snapshot; on a clean
/// cache that the repository moved past (another machine mounted it), catch
/// up. A cache with unsealed changes keeps them.
fn follow_repository(live: &Live, reader: &BlobReader, flusher: &Flusher) -> Result<()> {
    let snaps = flusher.snapshots();
    let newest = snaps.iter().rev().find(|s| s.uploaded);
    if let (Some(n), Some(f)) = (newest, newest_to_follow(&snaps)) {
        if n.id != f.id {
            crate::log!(
                "snapshot {} ({}, `secrate backup` of {}) is newer than the mount's newest {}; \
                 the live tree follows the mount's snapshots (the other is in .history)",
                n.id.short(),
                n.snapshot.time_rfc3339(),
                n.snapshot.source,
                f.id.short()
            );
        }
    }
    let Some(Behind {
        latest,
        import,
        older,
    }) = behind(live, flusher)?
    else {
        return Ok(());
    };
    if import {
        let at = std::time::Instant::now();
        // A clean cache moves by what changed: unchanged files keep their
        // staged copies (data it already holds). A fresh cache has no tree
        // to compare, and is imported whole.
        let root = live.inode(ROOT).map_err(live_err)?;
        let i = if root.dir_tree().is_some() {
            crate::live::diff::switch_snapshot(live, reader, &latest.id, &latest.snapshot)
        } else {
            import_snapshot(live, reader, &latest.id, &latest.snapshot)
        }
        .map_err(live_err)?;
        live.commit(true).map_err(live_err)?;
        log_import(&latest, &i, at.elapsed());
    } else if older {
        crate::log!(
            "warning: the repository has a newer snapshot {} ({}) but this cache has unsealed changes; \
             keeping the cache (the other snapshot stays in .history)",
            latest.id.short(),
            latest.snapshot.time_rfc3339()
        );
    }
    Ok(())
}

/// A switch holds requests on the live tree while it runs: a few
/// microseconds per entry that changed, but a whole import (a hard link
/// among what changed, `live::diff`) takes seconds for a tree of a million
/// files. So switches come at most this many times their last one's
/// length apart: requests wait at most a twentieth of the time, however
/// often another machine seals.
const SWITCH_PACE: u32 = 20;

/// A serving read-only mount's live tree follows the newest snapshot, as
/// at its start (`follow_repository`): after each look at the store, if a
/// newer one came, it becomes the live tree (`fs::switch`), paced by
/// `SWITCH_PACE` (`pace`: when the last switch began, and how long it took).
fn follow_newest(
    live: &Live,
    flusher: &Flusher,
    switch: &crate::fs::switch::LiveSwitch,
    pace: &Mutex<Option<(std::time::Instant, std::time::Duration)>>,
) -> Result<()> {
    let mut pace = pace.lock().unwrap_or_else(|e| e.into_inner());
    if pace.is_some_and(|(at, took)| at.elapsed() < took * SWITCH_PACE) {
        return Ok(());
    }
    let Some(b) = behind(live, flusher)?.filter(|b| b.import) else {
        return Ok(());
    };
    let at = std::time::Instant::now();
    let i = switch
        .to_snapshot(&b.latest.id, &b.latest.snapshot)
        .map_err(live_err)?;
    let took = at.elapsed();
    *pace = Some((at, took));
    log_import(&b.latest, &i, took);
    if i.kept_open > 0 {
        crate::log!(
            "{} open in the old live tree {} until closed",
            count(i.kept_open, "file"),
            agree(i.kept_open, "keeps its content", "keep their content")
        );
    }
    Ok(())
}

/// Mark what `secrate repair` recorded as lost in the live tree, so that
/// no new snapshot references it (src/live/lost.rs).
fn mark_lost(repo: &Repository, live: &Live) -> Result<()> {
    let (lost, problems) = repo.lost_blobs()?;
    for p in problems {
        crate::log!("warning: {p}");
    }
    let m = live.mark_lost(&lost).map_err(live_err)?;
    for (path, bytes) in &m.damaged {
        crate::log!(
            "damaged: {path}: {bytes} bytes were lost from the store (recorded by `secrate repair`); \
             reads of them give EIO until the file is rewritten"
        );
    }
    for path in &m.restaged {
        crate::log!("{path}: its lost chunks are stored again from this cache's copy");
    }
    if m.dirs > 0 {
        crate::log!("{}", reencoded_dirs_line(m.dirs));
    }
    Ok(())
}

fn final_flush(shared: &Shared) -> Result<()> {
    let f = &shared.flusher;
    let progress = |phase: &str, n: u64, b: u64, err: Option<&str>| {
        if let Some(e) = err {
            crate::log!("warning: upload: {e} (retrying)");
        }
        let mut ws = shared.watchers.lock().unwrap_or_else(|e| e.into_inner());
        ws.retain_mut(|w| {
            send(
                w,
                &Event::Progress {
                    pending_objects: n,
                    pending_bytes: b,
                    error: err.map(str::to_string),
                    phase: phase.into(),
                },
            )
            .is_ok()
        });
    };
    progress("sealing", 0, 0, None);
    let sealed = match f.seal() {
        Ok(s) => Ok(s),
        Err(e) => {
            // The room the seal needs on the cache disk may be held by
            // packs waiting for their upload, which frees it: upload them,
            // then seal once more.
            crate::log!(
                "warning: the last seal failed ({e}); uploading what waits, then sealing again"
            );
            f.drain(&|n, b, err| progress("uploading", n, b, err))?;
            progress("sealing", 0, 0, None);
            f.seal()
        }
    };
    match sealed {
        Ok(Some(s)) => crate::log!("sealed snapshot {} on unmount", s.id.short()),
        Ok(None) => {}
        Err(e) => {
            crate::log!("error: the last snapshot could not be sealed: {e}");
            return Err(e);
        }
    }
    f.drain(&|n, b, err| progress("uploading", n, b, err))?;
    crate::log!("everything is in the store");
    Ok(())
}

/// SIGTERM, SIGINT or SIGHUP unmount (lazily: files still open keep the
/// filesystem serving until closed), so the usual seal and upload follow.
/// Once the unmount has begun (`unmounting`: a signal came, or the session
/// ended), SIGTERM or SIGINT stops the process without waiting for open
/// files or the upload, as a kill would but with the cache committed: what
/// is not uploaded stays in the cache, under the writer lock, for the next
/// mount of this cache. A SIGHUP then is only logged (a hung-up terminal
/// may send more than one).
fn watch_signals(mountpoint: &Path, live: Arc<Live>, unmounting: Arc<AtomicBool>) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) else {
        return;
    };
    let mp = mountpoint.to_path_buf();
    let _ = std::thread::Builder::new()
        .name("secrate-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if !unmounting.swap(true, Ordering::SeqCst) {
                    crate::log!(
                        "signal {sig}: unmounting (SIGTERM or SIGINT again stops without waiting)"
                    );
                    let _ = unmount(&mp, true);
                } else if sig == SIGHUP {
                    crate::log!("signal {sig}: already unmounting");
                } else {
                    crate::log!(
                        "signal {sig} while unmounting: stopping now; what is not uploaded \
                         stays in the cache, and the next mount of it uploads it"
                    );
                    if let Err(e) = live.commit(true) {
                        crate::log!("warning: cannot commit the cache: {e}");
                    }
                    let _ = unmount(&mp, true);
                    std::process::exit(1);
                }
            }
        });
}

/// Unmount `mp`; `lazy` detaches even while files are open.
fn unmount(mp: &Path, lazy: bool) -> std::io::Result<()> {
    let c = std::ffi::CString::new(mp.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EPERM) {
        return Err(err);
    }
    // Not root: the setuid helper unmounts for us.
    let mut cmd = std::process::Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd.arg("--").arg(mp).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// How long `secrate umount` waits for a busy mount to be let go.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Unmount, waiting up to `BUSY_WAIT` while the mount is busy. A mount is
/// busy for an instant after a program lets it go: a child between fork
/// and exec still holds copies of its parent's descriptors, a process that
/// just exited may not have closed its files yet. (A CI run's `secrate
/// umount` failed "busy" right after the test had read and closed its
/// last file, while other tests spawned processes.)
fn unmount_when_free(mp: &Path) -> std::io::Result<()> {
    let start = std::time::Instant::now();
    loop {
        match unmount(mp, false) {
            Err(e) if is_busy(&e) && start.elapsed() < BUSY_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// EBUSY from umount2, or fusermount3's message for it.
fn is_busy(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EBUSY) || e.to_string().contains("Device or resource busy")
}

fn control_loop(listener: UnixListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("secrate-client".into())
            .spawn(move || handle_client(stream, &shared));
    }
}

fn handle_client(mut stream: UnixStream, shared: &Shared) {
    let mut line = String::new();
    let Ok(reader_stream) = stream.try_clone() else {
        return;
    };
    if BufReader::new(reader_stream).read_line(&mut line).is_err() {
        return;
    }
    let req: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            let _ = send(
                &mut stream,
                &Event::Error {
                    message: format!("bad request: {e}"),
                },
            );
            return;
        }
    };
    let f = &shared.flusher;
    let result: Result<()> = match req {
        Request::Status => {
            let mut status = f.status();
            if let Some(h) = shared.history.get() {
                status.history_nodes = h.live_nodes() as u64;
            }
            // A root with no tree is a change not sealed yet, except the
            // empty root of a repository with no snapshot: a read-only
            // mount of it holds nothing the store lacks (its `umount`
            // said the cache held changes).
            if shared.read_only && status.dirty && status.last_snapshot.is_none() {
                let empty = f
                    .live
                    .read_view()
                    .and_then(|v| v.children(crate::live::ROOT))
                    .is_ok_and(|c| c.is_empty());
                status.dirty = !empty;
            }
            let mut status = serde_json::to_value(status).unwrap_or_default();
            // `umount` says what is in the store by it: nothing a
            // read-only mount holds is uploaded.
            if let Some(o) = status.as_object_mut() {
                o.insert("read_only".into(), shared.read_only.into());
            }
            let _ = send(&mut stream, &Event::Status { status });
            Ok(())
        }
        Request::ClearProblems { seen } => {
            f.clear_outbox_problems(&seen).map(|(problems, items)| {
                let _ = send(
                    &mut stream,
                    &Event::Cleared {
                        problems: problems as u64,
                        items: items as u64,
                    },
                );
            })
        }
        Request::Snapshot { wait } => snapshot(shared, &mut stream, wait),
        Request::Umount => {
            // Register first: the session may end the moment we unmount.
            let Ok(w) = stream.try_clone() else { return };
            shared
                .watchers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(w);
            match unmount_when_free(&shared.mountpoint) {
                // The serving thread reports progress and the end.
                Ok(()) => return,
                Err(e) => {
                    shared
                        .watchers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .pop();
                    let why = if is_busy(&e) {
                        format!("{} is busy (files are open or a process is inside it): close them and try again", shared.mountpoint.display())
                    } else {
                        format!("cannot unmount {}: {e}", shared.mountpoint.display())
                    };
                    Err(Error::Invalid(why))
                }
            }
        }
    };
    let ev = match result {
        Ok(()) => Event::Done,
        Err(e) => Event::Error {
            message: e.to_string(),
        },
    };
    let _ = send(&mut stream, &ev);
}

/// Seal now; with `wait`, stream progress until that snapshot is uploaded.
fn snapshot(shared: &Shared, stream: &mut UnixStream, wait: bool) -> Result<()> {
    if shared.read_only {
        return Err(Error::Invalid(
            "this mount is read-only: it makes no snapshots".into(),
        ));
    }
    let f = &shared.flusher;
    let sealed = f.seal()?;
    let _ = send(
        stream,
        &Event::Sealed {
            id: sealed.as_ref().map(|s| s.id.to_hex()),
        },
    );
    if !wait {
        return Ok(());
    }
    let target = match &sealed {
        Some(s) => s.gen,
        None => f.gens().map_err(live_err)?.0,
    };
    f.kick();
    loop {
        let seen = f.progress_seen();
        let (_, uploaded) = f.gens().map_err(live_err)?;
        let (n, b) = f.pending().map_err(live_err)?;
        if uploaded >= target {
            return Ok(());
        }
        if send(
            stream,
            &Event::Progress {
                pending_objects: n,
                pending_bytes: b,
                error: f.upload_problem(),
                phase: "uploading".into(),
            },
        )
        .is_err()
        {
            return Ok(());
        }
        f.wait_progress(seen, Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mount's log lines agree with their counts. (Found by review in
    /// stop 34: the move to `count` made "3 sizes set from staged data"
    /// "3 size sets from staged data", and left "1 trees read, 1 names
    /// changed", "removed 1 cached tree packs", "1 directories whose tree
    /// was lost are encoded again".)
    #[test]
    fn log_lines_agree_with_their_counts() {
        let rec = crate::live::Recovery {
            removed_files: 1,
            lost_dirty: vec![7, 8],
            dropped_orphans: 0,
            dropped_clean: 1,
            resized: 3,
        };
        assert_eq!(
            recovered_line(&rec),
            "recovered the cache: 1 leftover staged file removed, 0 unlinked files dropped, \
             2 files written but never fsync'd were lost, 1 sealed file back to its sealed \
             content, 3 sizes set from staged data"
        );
        let one = crate::live::Recovery {
            resized: 1,
            ..Default::default()
        };
        assert!(
            recovered_line(&one).ends_with(", 1 size set from staged data"),
            "{}",
            recovered_line(&one)
        );
        assert_eq!(
            dropped_tree_packs_line(1),
            "removed 1 cached tree pack the index no longer lists"
        );
        assert_eq!(
            dropped_tree_packs_line(2),
            "removed 2 cached tree packs the index no longer lists"
        );
        assert_eq!(
            reencoded_dirs_line(1),
            "1 directory whose tree was lost is encoded again"
        );
        assert_eq!(
            reencoded_dirs_line(4),
            "4 directories whose tree was lost are encoded again"
        );
        let mut i = crate::live::import::Import {
            files: 0,
            dirs: 0,
            old_root_names: Vec::new(),
            kept_open: 0,
            kept: Vec::new(),
            changed_names: vec![(1, b"a".to_vec())],
            changed_dirs: Vec::new(),
            trees_read: 1,
            whole: false,
        };
        assert_eq!(import_how(&i), "1 tree read, 1 name changed");
        i.trees_read = 4;
        i.changed_names.push((1, b"b".to_vec()));
        assert_eq!(import_how(&i), "4 trees read, 2 names changed");
        i.whole = true;
        assert_eq!(import_how(&i), "4 trees read");
        i.trees_read = 1;
        assert_eq!(import_how(&i), "1 tree read");
    }
}

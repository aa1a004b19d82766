//! `secrate mount`, `umount`, `snapshot` and `status`.
//!
//! `mount` without `--foreground` starts a copy of itself in the
//! background (a new session, its log in the cache directory), hands it the
//! passphrase through a pipe, and returns once it reports the filesystem
//! mounted, or prints why it is not. The others talk to the running mount
//! through its control socket.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use secrate::control::{self, Event, Request};
use secrate::mount::{default_cache_dir, serve, MountOptions};
use secrate::repo::{Repository, Secret};

use super::format::{agree, bytes, count, parse_size};
use super::{secret, Globals};

#[derive(clap::Args)]
pub struct Args {
    /// Where to mount (an existing directory).
    mountpoint: PathBuf,
    /// Cache directory (default: $XDG_CACHE_HOME/secrate/<repository id>).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Seal a snapshot this often while something changed (0: only on demand and unmount);
    /// read-only: look for snapshots other processes added or forgot this often (0: never).
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    snapshot_interval: u64,
    /// Bound on cached clean data, e.g. 10G.
    #[arg(long, default_value = "10G", value_parser = parse_size, value_name = "SIZE")]
    cache_size: u64,
    /// Retention for automatic snapshots, e.g. `within=1h,hourly=48,daily=30,weekly=52`
    /// (the default), or `none` to keep every snapshot.
    #[arg(long, value_name = "POLICY")]
    retention: Option<String>,
    /// Remove the data of snapshots retention forgot (as `secrate prune`) at most this
    /// often (0: never; then `secrate prune` after unmounting).
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    prune_interval: u64,
    /// Mount read-only (no snapshots, no writer lock; `.history` follows the store).
    #[arg(long)]
    read_only: bool,
    /// Let other users see the mount (needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    allow_other: bool,
    /// Serve in the foreground; logs to stderr.
    #[arg(long)]
    foreground: bool,
    /// Internal: the background copy started by `mount`.
    #[arg(long, hide = true)]
    daemon_child: bool,
}

pub fn mount(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let mountpoint = std::fs::canonicalize(&a.mountpoint)
        .and_then(|m| std::fs::metadata(&m).map(|md| (m, md.is_dir())));
    let mountpoint = match mountpoint {
        Ok((m, true)) => m,
        Ok((m, false)) => bail!("cannot mount at {}: not a directory", m.display()),
        // A mount whose process died (killed) answers nothing but this,
        // at it and at every path inside it: name the mount to clear.
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            match secrate::control::mount_holding(&a.mountpoint) {
                Some(point) if std::path::absolute(&a.mountpoint).is_ok_and(|m| m == point) => bail!(
                    "{} is a mount whose secrate process is gone: unmount it with `fusermount3 -uz {}` and mount again",
                    a.mountpoint.display(),
                    a.mountpoint.display()
                ),
                Some(point) => bail!(
                    "{} is inside {}, a mount whose secrate process is gone: unmount it with `fusermount3 -uz {}`",
                    a.mountpoint.display(),
                    point.display(),
                    point.display()
                ),
                None => bail!(
                    "cannot mount at {}: {e} (a FUSE mount whose process is gone? `fusermount3 -uz` it)",
                    a.mountpoint.display()
                ),
            }
        }
        Err(e) => bail!("cannot mount at {}: {e}", a.mountpoint.display()),
    };
    let store = g.open_store(false)?;
    let config = Repository::read_config(&store)?;
    let cache_dir = match &a.cache {
        Some(c) => std::path::absolute(c)
            .with_context(|| format!("bad cache directory {}", c.display()))?,
        None => default_cache_dir(&config.repo_id_hex()),
    };
    secrate::mount::check_places(&mountpoint, &cache_dir, &store)?;
    if a.daemon_child {
        return run_child(g, a, mountpoint, cache_dir, store);
    }
    // Bad options fail here, before anything starts.
    options(&a, mountpoint.clone(), cache_dir.clone())?;
    let secret = secret::for_open(g)?;
    if a.foreground {
        let repo = Arc::new(Repository::open(store, &secret)?);
        let opts = options(&a, mountpoint.clone(), cache_dir)?;
        serve(repo, opts, &mut || {
            // Never a panic: stderr may be gone (a hung-up terminal).
            let _ = writeln!(std::io::stderr(), "mounted at {}", mountpoint.display());
        })?;
        return Ok(0);
    }
    spawn_child(g, &a, &mountpoint, &cache_dir, &secret)
}

fn options(a: &Args, mountpoint: PathBuf, cache_dir: PathBuf) -> anyhow::Result<MountOptions> {
    let retention = match &a.retention {
        None => Some(secrate::ops::forget::Policy::mount_default()),
        Some(p) => secrate::ops::forget::Policy::parse(p)?,
    };
    Ok(MountOptions {
        mountpoint,
        cache_dir,
        snapshot_interval: Duration::from_secs(a.snapshot_interval),
        read_only: a.read_only,
        cache_size: a.cache_size,
        allow_other: a.allow_other,
        retention,
        prune_interval: Duration::from_secs(a.prune_interval),
    })
}

/// Start the background copy and wait for it to say "ready" or why not.
fn spawn_child(
    g: &Globals,
    a: &Args,
    mountpoint: &std::path::Path,
    cache_dir: &std::path::Path,
    secret: &Secret,
) -> anyhow::Result<i32> {
    secrate::mount::lock_cache(cache_dir).map(drop)?;
    let log = cache_dir.join("mount.log");
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log)
        .and_then(|f| {
            // Older versions created it 0644.
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            Ok(f)
        })
        .with_context(|| format!("cannot open the log {}", log.display()))?;
    let exe = std::env::current_exe().context("cannot find the secrate program")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--store")
        .arg(&g.store_url)
        .arg("mount")
        .arg(mountpoint)
        .arg("--cache")
        .arg(cache_dir)
        .arg("--snapshot-interval")
        .arg(a.snapshot_interval.to_string())
        .arg("--cache-size")
        .arg(a.cache_size.to_string())
        .arg("--prune-interval")
        .arg(a.prune_interval.to_string())
        .arg("--daemon-child");
    if a.read_only {
        cmd.arg("--read-only");
    }
    if let Some(r) = &a.retention {
        cmd.arg("--retention").arg(r);
    }
    if a.allow_other {
        cmd.arg("--allow-other");
    }
    cmd.env_remove("SECRATE_PASSPHRASE")
        .env_remove("SECRATE_RECOVERY_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(logf);
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the background process")?;
    {
        let mut stdin = child
            .stdin
            .take()
            .context("no pipe to the background process")?;
        // Closing the pipe (dropping `stdin`) ends the secret.
        stdin
            .write_all(&secret.handover())
            .context("cannot hand over the passphrase")?;
    }
    let out = child
        .stdout
        .take()
        .context("no pipe from the background process")?;
    let mut said = String::new();
    for line in BufReader::new(out).lines() {
        let line = line.unwrap_or_default();
        if line == "ready" {
            outln!(
                "mounted at {} (cache {}, log {})",
                mountpoint.display(),
                cache_dir.display(),
                log.display()
            )?;
            return Ok(0);
        }
        said.push_str(&line);
    }
    let status = child.wait().context("the background process vanished")?;
    if said.trim().is_empty() {
        bail!(
            "the background process exited ({status}) before mounting; see {}",
            log.display()
        );
    }
    bail!("{}", said.trim().trim_start_matches("secrate: "));
}

/// `mount.log` is rotated at this size (`secrate::log::rotate_at`): about
/// 100,000 lines, years of a quiet mount's.
const LOG_LIMIT: u64 = 8 << 20;

/// The background copy: read the secret, serve, report readiness on stdout.
fn run_child(
    _g: &Globals,
    a: Args,
    mountpoint: PathBuf,
    cache_dir: PathBuf,
    store: secrate::store::Store,
) -> anyhow::Result<i32> {
    let secret = Secret::read_handover(&mut std::io::stdin().lock())
        .context("cannot read the passphrase from the mount command")?;
    // `spawn_child` made stderr this file.
    secrate::log::rotate_at(cache_dir.join("mount.log"), LOG_LIMIT);
    // The mount command may be gone (interrupted): never a panic.
    let report = |msg: &str| {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{msg}");
        let _ = out.flush();
    };
    let result = Repository::open(store, &secret)
        .map_err(anyhow::Error::from)
        .and_then(|repo| {
            let opts = options(&a, mountpoint, cache_dir)?;
            serve(Arc::new(repo), opts, &mut || {
                report("ready");
                // Nobody reads our stdout any more.
                if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                    use std::os::fd::AsRawFd;
                    unsafe { libc::dup2(null.as_raw_fd(), 1) };
                }
            })
            .map_err(anyhow::Error::from)
        });
    match result {
        Ok(()) => Ok(0),
        Err(e) => {
            report(&format!("secrate: {e}"));
            Err(e)
        }
    }
}

#[derive(clap::Args)]
pub struct UmountArgs {
    mountpoint: PathBuf,
}

#[derive(clap::Args)]
pub struct SnapshotArgs {
    mountpoint: PathBuf,
    /// Return once sealed, without waiting for the upload.
    #[arg(long)]
    no_wait: bool,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    mountpoint: PathBuf,
    #[arg(long)]
    json: bool,
    /// After showing them, forget the outbox problems shown and delete the
    /// damaged items they kept in the cache (`damaged/`).
    #[arg(long)]
    clear_problems: bool,
}

/// A one-line progress display on a terminal.
struct Line {
    tty: bool,
}

impl Line {
    fn new(quiet: bool) -> Line {
        Line {
            tty: !quiet && std::io::stderr().is_terminal(),
        }
    }

    fn show(&self, ev: &Event) {
        if let Event::Progress {
            pending_objects,
            pending_bytes,
            error,
            phase,
        } = ev
        {
            if self.tty {
                let err = error
                    .as_deref()
                    .map(|e| format!(" (retrying: {e})"))
                    .unwrap_or_default();
                err!(
                    "\r\x1b[K{phase}: {}, {} left{err}",
                    count(*pending_objects, "object"),
                    bytes(*pending_bytes)
                );
            } else if let Some(e) = error {
                errln!("warning: upload failed, retrying: {e}");
            }
        }
    }

    fn end(&self) {
        if self.tty {
            err!("\r\x1b[K");
        }
    }
}

pub fn umount(g: &Globals, a: UmountArgs) -> anyhow::Result<i32> {
    let line = Line::new(g.quiet);
    let cache = control::cache_dir_of(&a.mountpoint).ok();
    // A read-only mount uploads nothing: what its cache holds that is not
    // in the store stays there (a writable mount of that cache had died).
    let mut read_only_dirty = None;
    if cache.is_some() {
        let _ = control::call(&a.mountpoint, &Request::Status, &mut |ev| {
            if let Event::Status { status } = ev {
                let flag = |k: &str| status.get(k).and_then(|v| v.as_bool());
                if flag("read_only") == Some(true) {
                    let waiting = status.get("pending_objects").and_then(|v| v.as_u64());
                    read_only_dirty = Some(
                        flag("dirty").unwrap_or(false)
                            || waiting.unwrap_or(0) > 0
                            || flag("last_snapshot_uploaded") == Some(false),
                    );
                }
            }
        });
    }
    let r = control::call(&a.mountpoint, &Request::Umount, &mut |ev| line.show(ev));
    line.end();
    r?;
    // Everything is stored; also wait for the process to let go of its
    // cache, so that a mount right after this one finds it free.
    if let Some(dir) = cache {
        if !secrate::mount::wait_cache_free(&dir, std::time::Duration::from_secs(30)) {
            errln!(
                "warning: the secrate process that served {} has not exited yet",
                a.mountpoint.display()
            );
        }
    }
    let m = a.mountpoint.display();
    match read_only_dirty {
        None => outln!("unmounted {m}: everything is in the store")?,
        Some(false) => outln!("unmounted {m} (read-only)")?,
        Some(true) => outln!(
            "unmounted {m} (read-only): its cache still holds changes that are not in the store; a writable mount of that cache uploads them"
        )?,
    }
    Ok(0)
}

pub fn snapshot(g: &Globals, a: SnapshotArgs) -> anyhow::Result<i32> {
    // Not a mount: say only that (a warning that it cannot be synced
    // would come first).
    control::cache_dir_of(&a.mountpoint)?;
    sync_mount(&a.mountpoint);
    let line = Line::new(g.quiet);
    let mut sealed = None;
    let r = control::call(
        &a.mountpoint,
        &Request::Snapshot { wait: !a.no_wait },
        &mut |ev| {
            if let Event::Sealed { id } = ev {
                sealed = Some(id.clone());
            }
            line.show(ev)
        },
    );
    line.end();
    r?;
    let status = || mount_status(&a.mountpoint);
    match sealed.flatten() {
        Some(id) if a.no_wait => outln!("snapshot {} sealed", &id[..8])?,
        Some(id) => outln!("snapshot {} sealed and uploaded", &id[..8])?,
        // A new mount where nothing was done seals nothing, and there is
        // no "last snapshot" to speak of.
        None if status()
            .and_then(|st| st.get("last_snapshot").map(|v| v.is_null()))
            .unwrap_or(false) =>
        {
            outln!("nothing to snapshot: nothing changed in this mount, which has no snapshot yet")?
        }
        // Waited for: the mount answered only once all was uploaded.
        None if !a.no_wait => {
            outln!("nothing changed since the last snapshot; everything is uploaded")?
        }
        // Not waited for: an earlier snapshot's upload may still be under
        // way (`--no-wait` twice in a row); say what the mount says.
        None => match status().and_then(|st| waiting_upload(&st)) {
            Some((0, _)) => {
                outln!("nothing changed since the last snapshot; everything is uploaded")?
            }
            Some((n, b)) => outln!(
                "nothing changed since the last snapshot; {} ({}) still {} for upload",
                count(n, "object"),
                bytes(b),
                agree(n, "waits", "wait")
            )?,
            None => outln!("nothing changed since the last snapshot")?,
        },
    }
    Ok(0)
}

/// The mount's status, as `secrate status` gets it; `None` if it did not
/// answer.
fn mount_status(mountpoint: &std::path::Path) -> Option<serde_json::Value> {
    let mut st = None;
    control::call(mountpoint, &Request::Status, &mut |ev| {
        if let Event::Status { status } = ev {
            st = Some(status.clone());
        }
    })
    .ok()?;
    st
}

/// Objects and bytes a mount has still to upload, counting a last
/// snapshot not yet uploaded as one at least; `None` if it did not say.
fn waiting_upload(st: &serde_json::Value) -> Option<(u64, u64)> {
    let n = st.get("pending_objects")?.as_u64()?;
    let b = st.get("pending_bytes")?.as_u64()?;
    let uploaded = st.get("last_snapshot_uploaded")?.as_bool()?;
    Some((if uploaded { n } else { n.max(1) }, b))
}

/// Hands the kernel's dirty pages for the mount to secrate: with the
/// writeback cache, data written to files that are still open (or through
/// mmap) may sit in the page cache for half a minute, and the snapshot
/// must hold everything written before it was asked for.
fn sync_mount(mountpoint: &std::path::Path) {
    let r = std::fs::File::open(mountpoint).and_then(|d| {
        use std::os::fd::AsRawFd;
        if unsafe { libc::syncfs(d.as_raw_fd()) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    });
    if let Err(e) = r {
        errln!(
            "warning: cannot sync {} ({e}): data still in the page cache of open files may miss this snapshot",
            mountpoint.display()
        );
    }
}

pub fn status(_g: &Globals, a: StatusArgs) -> anyhow::Result<i32> {
    let mut st = None;
    control::call(&a.mountpoint, &Request::Status, &mut |ev| {
        if let Event::Status { status } = ev {
            st = Some(status.clone());
        }
    })?;
    let st = st.context("the mount sent no status")?;
    show_status(&st, a.json)?;
    if a.clear_problems {
        // Only what was shown: a problem reported since stays.
        let seen: Vec<String> = st
            .get("outbox_problems")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect();
        let mut cleared = None;
        control::call(&a.mountpoint, &Request::ClearProblems { seen }, &mut |ev| {
            if let Event::Cleared { problems, items } = ev {
                cleared = Some((*problems, *items));
            }
        })?;
        let (problems, items) = cleared.context("the mount did not say what it cleared")?;
        errln!("outbox problems cleared: {problems}; damaged items deleted: {items}");
    }
    Ok(0)
}

fn show_status(st: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(st)?)?;
        return Ok(());
    }
    let s = |k: &str| {
        st.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("-")
            .to_string()
    };
    let n = |k: &str| st.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let b = |k: &str| st.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    outln!(
        "store:           {} ({})",
        s("store"),
        if b("store_reachable") {
            "reachable"
        } else {
            "unreachable"
        }
    )?;
    outln!(
        "cache:           {} ({})",
        s("cache_dir"),
        bytes(n("cache_bytes"))
    )?;
    outln!(
        "waiting upload:  {}, {}",
        count(n("pending_objects"), "object"),
        bytes(n("pending_bytes"))
    )?;
    if b("read_only") {
        outln!("mode:            read-only (uploads nothing, seals no snapshot)")?;
    }
    match s("last_snapshot").get(..8) {
        Some(id) => outln!(
            "last snapshot:   {id} {} ({})",
            s("last_snapshot_time"),
            if b("last_snapshot_uploaded") {
                "uploaded"
            } else {
                "not yet uploaded"
            }
        )?,
        None => outln!("last snapshot:   none yet")?,
    }
    outln!(
        "unsealed changes: {}",
        if b("dirty") { "yes" } else { "no" }
    )?;
    if let Some(problems) = st.get("outbox_problems").and_then(|v| v.as_array()) {
        for p in problems.iter().filter_map(|p| p.as_str()) {
            outln!("OUTBOX PROBLEM:  {p}")?;
        }
    }
    if let Some(p) = st.get("last_prune").filter(|v| !v.is_null()) {
        let pn = |k: &str| p.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        outln!(
            "last prune:      {} ({} packs removed, {} repacked; store {} -> {})",
            p.get("at").and_then(|v| v.as_str()).unwrap_or("-"),
            pn("packs_deleted"),
            pn("packs_repacked"),
            bytes(pn("bytes_before")),
            bytes(pn("bytes_after"))
        )?;
    }
    if st.get("prune_error").is_some_and(|v| !v.is_null()) {
        outln!("PRUNE FAILED:    {} (tried again later)", s("prune_error"))?;
    }
    if st.get("last_error").is_some_and(|v| !v.is_null()) {
        outln!(
            "last error:      {} (at {})",
            s("last_error"),
            s("last_error_at")
        )?;
    }
    Ok(())
}

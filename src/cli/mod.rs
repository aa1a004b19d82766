//! The command line: parse arguments, run one command, print, exit.
//!
//! The only place that prints for the user or asks for a passphrase. Each
//! command lives in its own file and returns an exit code; errors become one
//! sentence on stderr and a non-zero exit.

/// `println!` for what a command reports: a stdout that fails (a full
/// disk) is an error the command returns (one sentence, exit 1), never a
/// panic; a pipe whose reader is gone ends it with exit 1 and no sentence.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
            .map_err(|e| secrate::Error::io("standard output", e))
    }};
}

/// `eprintln!` that never panics: when stderr fails (a hung-up terminal)
/// the message is lost, and the exit code still tells.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `eprint!` that never panics (see `errln!`).
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

mod backup;
mod check;
mod forget;
mod format;
mod init;
mod key;
mod mount;
mod progress;
mod read;
mod repair;
mod restore;
mod secret;
mod snapshots;
mod stats;
mod sync;
mod unlock;

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use secrate::repo::Repository;
use secrate::store::{default_store_url, EcParams, Store};

#[derive(Parser)]
#[command(
    name = "secrate",
    version,
    about = "A filesystem with its whole history inside it: encrypted, deduplicated snapshots on any object store."
)]
pub struct Cli {
    /// Store URL: file:///path, s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix (default: file://$XDG_DATA_HOME/secrate/store).
    /// Give it several times (or comma-separated, also in $SECRATE_STORE)
    /// for replicas, or K+M stores with --ec; see docs/DURABILITY.md.
    #[arg(
        long,
        global = true,
        env = "SECRATE_STORE",
        value_name = "URL",
        value_delimiter = ','
    )]
    store: Vec<String>,

    /// Erasure-code objects over the stores: K data + M parity shards, one
    /// per store (K+M stores; chosen at init, recorded in the stores).
    #[arg(long, global = true, env = "SECRATE_EC", value_name = "K+M")]
    ec: Option<String>,

    /// Read the passphrase from this file (else $SECRATE_PASSPHRASE, else a prompt).
    #[arg(long, global = true, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,

    /// Unlock with the recovery key in this file (or $SECRATE_RECOVERY_KEY).
    #[arg(long, global = true, value_name = "FILE")]
    recovery_key_file: Option<PathBuf>,

    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a repository in the store.
    Init(init::Args),
    /// Record a directory as a new snapshot (batch mode, no mount).
    Backup(backup::Args),
    /// List snapshots.
    Snapshots(snapshots::Args),
    /// List the paths in a snapshot.
    Ls(read::LsArgs),
    /// Write a file from a snapshot to standard output.
    Cat(read::CatArgs),
    /// What changed between two snapshots, read from their trees alone.
    Diff(read::DiffArgs),
    /// Restore a snapshot, or a path of it, into a directory.
    Restore(restore::Args),
    /// Verify that every snapshot's data is in the store and intact.
    Check(check::Args),
    /// Manage keys: list, add (also write-only), remove, passwd, recovery.
    Key(key::Args),
    /// Forget snapshots by id or by a retention policy (--prune to remove their data).
    Forget(forget::ForgetArgs),
    /// Remove data that no snapshot references.
    Prune(forget::PruneArgs),
    /// Put back lost data from mount caches and source folders; make the index forget what is gone.
    Repair(repair::Args),
    /// Mount the repository's live tree (with .history/) at a directory.
    Mount(mount::Args),
    /// Seal a last snapshot, upload everything, unmount.
    Umount(mount::UmountArgs),
    /// Seal a snapshot of a mount now and wait for its upload.
    Snapshot(mount::SnapshotArgs),
    /// What a mount is doing: uploads waiting, last snapshot, store reachable.
    Status(mount::StatusArgs),
    /// Sizes: per store, logical vs unique vs stored, dedup and redundancy.
    Stats(stats::Args),
    /// Copy or rebuild what a replica or shard store misses from the others.
    Sync(sync::Args),
    /// Remove the writer lock of a writer that is gone (a mount that stopped without unmounting).
    Unlock(unlock::Args),
}

/// What every command needs to reach the repository.
pub struct Globals {
    /// The store URLs as given, comma-separated.
    pub store_url: String,
    pub ec: Option<EcParams>,
    pub passphrase_file: Option<PathBuf>,
    pub recovery_key_file: Option<PathBuf>,
    pub quiet: bool,
}

impl Globals {
    pub fn store_urls(&self) -> Vec<String> {
        self.store_url.split(',').map(str::to_string).collect()
    }

    pub fn open_store(&self, create: bool) -> anyhow::Result<Store> {
        let store = Store::open_many(&self.store_urls(), self.ec, create)?;
        for (url, why) in store.unread() {
            errln!("warning: the store {url} is not read ({why}); reads use the other stores");
        }
        Ok(store)
    }

    /// Open and unlock the repository.
    pub fn open_repo(&self) -> anyhow::Result<Arc<Repository>> {
        let store = self.open_store(false)?;
        // Fail on a missing repository before asking for a passphrase.
        Repository::read_config(&store)?;
        let secret = secret::for_open(self)?;
        let repo = Repository::open(store, &secret)?;
        for problem in repo.load_index()? {
            errln!("warning: {problem}");
        }
        Ok(Arc::new(repo))
    }

    /// Open for reading (ls, cat, restore): packs that are gone are dropped
    /// from the index, and what an unreadable index delta
    /// listed is found again from the packs' own headers, in memory only
    /// (`secrate check` reports the damage; the next writer re-indexes).
    pub fn open_repo_for_reading(&self) -> anyhow::Result<Arc<Repository>> {
        let repo = self.open_repo()?;
        // Blobs are looked for only where they are (a replayed old index
        // may list packs that are gone, shadowing the blobs' new places).
        for id in repo.forget_missing_packs()? {
            errln!(
                "warning: the index lists {} but the store does not hold it (run `secrate check`)",
                secrate::repo::pack::pack_name(&id)
            );
        }
        if !repo.load_index()?.is_empty() {
            let (found, bad) = repo.find_unindexed_packs()?;
            for e in bad {
                errln!("warning: {e}");
            }
            repo.add_to_index(&found);
        }
        Ok(repo)
    }
}

pub fn run() -> i32 {
    let cli = Cli::parse();
    let ec = match cli.ec.as_deref().map(EcParams::parse).transpose() {
        Ok(ec) => ec,
        Err(e) => {
            errln!("secrate: {e}");
            return 2;
        }
    };
    let stores: Vec<String> = cli
        .store
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let g = Globals {
        store_url: if stores.is_empty() {
            default_store_url()
        } else {
            stores.join(",")
        },
        ec,
        passphrase_file: cli.passphrase_file,
        recovery_key_file: cli.recovery_key_file,
        quiet: cli.quiet,
    };
    let r = match cli.command {
        Command::Init(a) => init::run(&g, a),
        Command::Backup(a) => backup::run(&g, a),
        Command::Snapshots(a) => snapshots::run(&g, a),
        Command::Ls(a) => read::ls(&g, a),
        Command::Cat(a) => read::cat(&g, a),
        Command::Diff(a) => read::diff(&g, a),
        Command::Restore(a) => restore::run(&g, a),
        Command::Check(a) => check::run(&g, a),
        Command::Key(a) => key::run(&g, a),
        Command::Forget(a) => forget::forget(&g, a),
        Command::Prune(a) => forget::prune(&g, a),
        Command::Repair(a) => repair::run(&g, a),
        Command::Mount(a) => mount::mount(&g, a),
        Command::Umount(a) => mount::umount(&g, a),
        Command::Snapshot(a) => mount::snapshot(&g, a),
        Command::Status(a) => mount::status(&g, a),
        Command::Stats(a) => stats::run(&g, a),
        Command::Sync(a) => sync::run(&g, a),
        Command::Unlock(a) => unlock::run(&g, a),
    };
    match r {
        Ok(code) => code,
        // `secrate ls latest | head`: the reader had what it wanted and
        // left. Not worth a sentence on the terminal; still not a success.
        Err(e) if stdout_reader_gone(&e) => 1,
        Err(e) => {
            // Not `eprintln!`, which panics when stderr fails (a mount's
            // terminal hung up): the exit code is what counts then.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "secrate: {}", one_sentence(&e));
            1
        }
    }
}

/// Did a write to standard output fail because its reader is gone (EPIPE)?
/// Ours name it; `ls` and `diff` also flush their buffered stdout with a
/// bare `?`, which gives an io::Error with no context (any other pipe we
/// write, such as the passphrase's to the mount process, has context).
fn stdout_reader_gone(e: &anyhow::Error) -> bool {
    let broken = |s: &std::io::Error| s.kind() == std::io::ErrorKind::BrokenPipe;
    match e.downcast_ref::<secrate::Error>() {
        Some(secrate::Error::Io { path, source }) => {
            path.as_os_str() == "standard output" && broken(source)
        }
        Some(_) => false,
        None => e.chain().count() == 1 && e.downcast_ref::<std::io::Error>().is_some_and(broken),
    }
}

/// Our library errors already read as one sentence; others get their chain.
fn one_sentence(e: &anyhow::Error) -> String {
    if e.downcast_ref::<secrate::Error>().is_some() {
        return e.to_string();
    }
    let mut s = e.to_string();
    for c in e.chain().skip(1) {
        s.push_str(": ");
        s.push_str(&c.to_string());
    }
    s
}

/// Raise the soft limit of open files to the hard one. `backup` and
/// `restore` walk trees by directory handles, one open directory per level
/// on each thread (ops/backup.rs, ops/restore.rs say why): the usual soft
/// limit of 1,024 would refuse a tree about that deep. The hard limit is
/// ours to take; if it cannot be had, the levels past the limit are
/// reported as errors. A program's choice, so not made in the library.
pub(crate) fn raise_open_files_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

//! `secrate backup` through the real binary: `--one-file-system` over a
//! real mount, and a backup that cannot read everything (run as `nobody`)
//! marking its snapshot `partial`. Both need root (to mount, to switch
//! users); without it they say so and pass.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

fn is_root() -> bool {
    secrate::fsmeta::is_root()
}

/// A tmpfs mounted for the test; unmounted when dropped, also when the
/// test fails.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mode: u32) -> Tmpfs {
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size=1m,mode={mode:o}"))
            .arg("secrate-test")
            .arg(at)
            .output()
            .expect("run mount");
        assert!(o.status.success(), "mount: {}", stderr(&o));
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// With `-x`, a directory on another filesystem inside the source is
/// saved as an empty directory with its own mode; without it, its entries
/// are saved too. Before, there was no such option: a backup of `/` walked
/// `/proc` and `/sys`.
#[test]
fn one_file_system_saves_a_mount_point_empty() {
    if !is_root() {
        eprintln!("one_file_system_saves_a_mount_point_empty: needs root to mount, skipped");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("mnt")).unwrap();
    fs::write(src.join("a"), "on the source's filesystem").unwrap();
    let _mounted = Tmpfs::mount(&src.join("mnt"), 0o710);
    fs::create_dir(src.join("mnt").join("sub")).unwrap();
    fs::write(src.join("mnt").join("sub").join("inside"), "another fs").unwrap();
    let s = Secrate::new(&format!("file://{}/store", work.path().display()));
    s.init();
    let source = src.to_str().unwrap();

    s.ok(&["backup", "-q", "-x", source]);
    let out = work.path().join("out-x");
    s.ok(&["restore", "latest", out.to_str().unwrap()]);
    assert_eq!(
        fs::read(out.join("a")).unwrap(),
        b"on the source's filesystem"
    );
    let mnt = out.join("mnt");
    assert!(mnt.is_dir());
    assert_eq!(fs::read_dir(&mnt).unwrap().count(), 0);
    assert_eq!(
        fs::metadata(&mnt).unwrap().permissions().mode() & 0o7777,
        0o710
    );

    s.ok(&["backup", "-q", "--one-file-system", source]);
    s.ok(&["backup", "-q", source]);
    let out = work.path().join("out-all");
    s.ok(&["restore", "latest", out.to_str().unwrap()]);
    assert_eq!(
        fs::read(out.join("mnt").join("sub").join("inside")).unwrap(),
        b"another fs"
    );
    let help = s.ok(&["backup", "--help"]);
    assert!(help.contains("--one-file-system"), "{help}");
}

/// The tags of every snapshot, oldest first, from `snapshots --json`.
fn tags(s: &Secrate) -> Vec<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["snapshots", "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|snap| {
            snap["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

/// A work directory whose source `src` holds `open`, which anyone may
/// read, and `secret`, which only root may; a repository `s` in it that
/// `nobody` may write, with `home` as nobody's home.
fn source_with_a_secret() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Secrate,
    std::path::PathBuf,
) {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    fs::set_permissions(w, fs::Permissions::from_mode(0o755)).unwrap();
    let src = w.join("src");
    fs::create_dir(&src).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(src.join("open"), "anyone may read this").unwrap();
    fs::set_permissions(src.join("open"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(src.join("secret"), "only root reads this").unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    let home = w.join("home");
    fs::create_dir(&home).unwrap();
    let s = Secrate::new(&format!("file://{}/store", w.display()));
    s.init();
    let chown = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(w.join("store"))
        .arg(&home)
        .status()
        .unwrap();
    assert!(chown.success());
    (work, src, s, home)
}

/// `secrate backup -q SRC` run as `nobody`.
fn backup_as_nobody(s: &Secrate, src: &Path, home: &Path) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_secrate"))
        .args(["backup", "-q"])
        .arg(src)
        .env_remove("SECRATE_RECOVERY_KEY")
        .env("SECRATE_STORE", &s.store)
        .env("SECRATE_PASSPHRASE", PASSPHRASE)
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("USER", "nobody")
        .output()
        .unwrap()
}

/// `diff` with a `partial` snapshot on one side says so on stderr, naming
/// that side and what its `+` or `-` lines may mean (even with `-q`); with
/// two whole snapshots it says nothing of the kind. Before, the file the
/// partial backup could not read showed as added or removed, and nothing
/// told that it had been there all along.
#[test]
fn diff_says_which_side_is_partial() {
    if !is_root() {
        eprintln!("diff_says_which_side_is_partial: needs root to switch users, skipped");
        return;
    }
    let (_work, src, s, home) = source_with_a_secret();
    let o = backup_as_nobody(&s, &src, &home);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    s.ok(&["backup", "-q", src.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["snapshots", "--json"])).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["short_id"].as_str().unwrap())
        .collect();
    let (partial, whole) = (ids[0], ids[1]);

    let o = s.run(&["diff", partial, whole]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "+    /secret\n");
    let err = stderr(&o);
    let note = format!("secrate: note: the old snapshot {partial} is tagged `partial`: what its backup could not read is missing from it and shows here as added");
    assert!(err.contains(&note), "{err}");
    assert!(!err.contains("new snapshot"), "{err}");

    let o = s.run(&["-q", "diff", whole, partial]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "-    /secret\n");
    let err = stderr(&o);
    let note = format!("secrate: note: the new snapshot {partial} is tagged `partial`: what its backup could not read is missing from it and shows here as removed");
    assert!(err.contains(&note), "{err}");
    assert!(!err.contains("old snapshot"), "{err}");

    let o = s.run(&["diff", partial, partial]);
    let err = stderr(&o);
    assert!(
        err.contains("the old snapshot") && err.contains("the new snapshot"),
        "{err}"
    );
    let o = s.run(&["diff", whole, whole]);
    assert!(!stderr(&o).contains("partial"), "{}", stderr(&o));
}

/// A backup run as `nobody` over a source with a file only root can read
/// exits 3 and its snapshot is tagged `partial`, in the table and in the
/// JSON; the next backup (as root, which reads everything) takes it as its
/// parent for the file it holds, reads the other as new, and is not
/// tagged. Before, the snapshot did not say it was partial: only the exit
/// code and a sentence on stderr did.
#[test]
fn a_backup_that_could_not_read_everything_is_tagged_partial() {
    if !is_root() {
        eprintln!("a_backup_that_could_not_read_everything_is_tagged_partial: needs root to switch users, skipped");
        return;
    }
    let (work, src, s, home) = source_with_a_secret();
    let w = work.path();
    let o = backup_as_nobody(&s, &src, &home);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("secret"), "{err}");
    assert!(err.contains("tagged `partial`"), "{err}");
    let table = s.ok(&["snapshots"]);
    let row = table.lines().nth(1).unwrap();
    assert!(row.contains(" partial "), "{table}");
    assert!(table.lines().next().unwrap().contains("TAGS"), "{table}");
    assert_eq!(tags(&s), vec![vec!["partial".to_string()]]);

    let out = s.ok(&["backup", src.to_str().unwrap()]);
    assert!(out.contains("files 1 new, 0 changed, 1 unchanged"), "{out}");
    assert_eq!(tags(&s), vec![vec!["partial".to_string()], vec![]]);
    let table = s.ok(&["snapshots"]);
    let row = table.lines().nth(2).unwrap();
    assert!(!row.contains("partial"), "{table}");
    let restored = w.join("out");
    s.ok(&["restore", "latest", restored.to_str().unwrap()]);
    assert_eq!(
        fs::read(restored.join("secret")).unwrap(),
        b"only root reads this"
    );

    // The tag is the backup's to give.
    let o = s.run(&["backup", "--tag", "partial", src.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("kept for backups"), "{}", stderr(&o));
}

/// A tree deeper than the soft limit of open files: the walk holds one
/// directory open per level, so the backup raises its soft limit to the
/// hard one (as restore does) and saves every level. Without that, the
/// levels past the limit were errors (exit 3).
#[test]
fn a_tree_deeper_than_the_open_files_limit_is_saved_whole() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let mut deep = src.clone();
    for _ in 0..400 {
        deep.push("d");
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("bottom"), "400 levels down").unwrap();
    let s = Secrate::new(&format!("file://{}/store", work.path().display()));
    s.init();
    let o = Command::new("prlimit")
        .arg("--nofile=256:4096")
        .arg(env!("CARGO_BIN_EXE_secrate"))
        .args(["backup", "-q"])
        .arg(&src)
        .env_remove("SECRATE_RECOVERY_KEY")
        .env("SECRATE_STORE", &s.store)
        .env("SECRATE_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rel = deep.join("bottom");
    let rel = rel.strip_prefix(&src).unwrap().to_str().unwrap();
    let got = s.ok(&["cat", "latest", rel]);
    assert_eq!(got, "400 levels down");
}

/// A tree 3,000 levels deep of 255-byte names is backed up in memory
/// linear in its depth: each level of the walk holds its own name and a
/// link to its parent's, the full path is made only for a message. Before,
/// each level held its full path, d²·256/2 bytes in all: 1.1 GiB here
/// (559 MiB for 20,000 levels of one-letter names).
#[test]
fn a_deep_tree_of_long_names_is_backed_up_in_memory_linear_in_its_depth() {
    use std::os::fd::AsRawFd;
    const DEPTH: usize = 3000;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    // By handles: the path is far past PATH_MAX.
    let name = std::ffi::CString::new(vec![b'n'; 255]).unwrap();
    let mut dir = fs::File::open(&src).unwrap();
    for _ in 0..DEPTH {
        // SAFETY: a NUL-terminated name and a descriptor we own.
        unsafe {
            assert_eq!(libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755), 0);
            let fd = libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            );
            assert!(fd >= 0, "{}", std::io::Error::last_os_error());
            dir = <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd);
        }
    }
    drop(dir);
    let s = Secrate::new(&format!("file://{}/store", work.path().display()));
    s.init();
    let out = work.path().join("stdout");
    let mut backup = s.command();
    backup.args(["backup", "-q"]).arg(&src);
    let rss_mib = peak_rss_mib(backup, &out);
    let said = fs::read_to_string(&out).unwrap();
    assert!(said.contains(&format!("{} dirs", DEPTH + 1)), "{said}");
    // About 70 MiB now (a few KiB of stack per level over what any backup
    // takes); 1.1 GiB of paths before.
    assert!(
        rss_mib < 400,
        "backup: peak RSS {rss_mib} MiB for {DEPTH} levels"
    );
    // Restore walks the snapshot the same way: 3.4 GB before, when each
    // level held its full path (twice).
    let mut restore = s.command();
    restore
        .args(["restore", "-q", "latest"])
        .arg(work.path().join("out"));
    let rss_mib = peak_rss_mib(restore, &out);
    let said = fs::read_to_string(&out).unwrap();
    assert!(said.contains(&format!(" {DEPTH} dirs")), "{said}");
    assert!(
        rss_mib < 400,
        "restore: peak RSS {rss_mib} MiB for {DEPTH} levels"
    );
}

/// Run `cmd` (stdout to `out`), which must succeed; its peak RSS in MiB.
fn peak_rss_mib(mut cmd: std::process::Command, out: &std::path::Path) -> i64 {
    // Reaped by wait4 below, which gives its peak RSS.
    #[allow(clippy::zombie_processes)]
    let child = cmd.stdout(fs::File::create(out).unwrap()).spawn().unwrap();
    let mut status = 0;
    // SAFETY: plain wait4 on our own child, into locals.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?}: status {status:#x}"
    );
    // ru_maxrss is in KiB.
    usage.ru_maxrss / 1024
}

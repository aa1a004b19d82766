//! End-to-end tests of the batch commands (init, backup, snapshots, ls, cat,
//! restore, check) through the real binary, on `file://` and on the S3
//! server that scripts/test.sh starts.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;

/// Backup → restore is byte- and attribute-exact; a second backup and a
/// renamed copy add almost nothing; a 1 MiB edit in a 200 MB file adds
/// little; no name or content reaches the store in plaintext.
#[test]
fn round_trip_dedup_and_secrecy() {
    for store in stores("round-trip") {
        eprintln!("== {} store", store.label);
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        let secrets = make_tree(
            &src,
            &TreeSpec {
                small_files: 3000,
                big_file: 200_000_000,
                seed: 1,
            },
        );
        // The source directory's own xattrs: the snapshot carries them.
        secrate::fsmeta::set_xattr(&src, b"user.root", b"source").unwrap();
        let s = Secrate::new(&store.url);
        s.init();
        let out = s.ok(&["backup", src.to_str().unwrap()]);
        assert!(out.contains("saved"), "{out}");
        let first = store_size(&store.url);

        let dst = work.path().join("restored");
        s.ok(&["restore", "latest", dst.to_str().unwrap()]);
        assert_same_tree(&src, &dst);

        // Unchanged: nothing re-read, < 1 % added.
        let out = s.ok(&["backup", src.to_str().unwrap()]);
        assert!(out.contains(" 0 new, 0 changed"), "{out}");
        assert!(out.contains("read 0 B"), "{out}");
        let second = store_size(&store.url);
        assert!(
            second - first < first / 100,
            "unchanged backup added {} bytes",
            second - first
        );

        // 1 MiB changed in the middle of the 200 MB file: new are only the
        // chunks around the edit, each at most the chunker's maximum, i.e.
        // the edit and at most one maximum chunk on either side (what is
        // added depends on where the repository's secret gear seed puts
        // boundaries: 5.5 MB seen once), far from the file's 200 MB.
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = fs::OpenOptions::new()
                .write(true)
                .open(src.join("big.bin"))
                .unwrap();
            f.seek(SeekFrom::Start(100_000_000)).unwrap();
            f.write_all(&vec![0x5a; 1 << 20]).unwrap();
        }
        let out = s.ok(&["backup", src.to_str().unwrap()]);
        assert!(out.contains(" 0 new, 1 changed"), "{out}");
        let third = store_size(&store.url);
        let max_chunk = u64::from(secrate::crypto::ChunkerParams::DEFAULT.max);
        assert!(
            third - second < (1 << 20) + 2 * max_chunk,
            "1 MiB edit added {} bytes",
            third - second
        );

        // A copy under another name: < 1 % of the tree added.
        let copy = work.path().join("copy-of-src");
        let st = std::process::Command::new("cp")
            .args(["-a", src.to_str().unwrap(), copy.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(st.success());
        s.ok(&["backup", copy.to_str().unwrap()]);
        let fourth = store_size(&store.url);
        assert!(
            fourth - third < third / 100,
            "copy added {} bytes",
            fourth - third
        );

        // The latest snapshot restores the edited tree exactly.
        let dst2 = work.path().join("restored-2");
        s.ok(&["restore", "latest", dst2.to_str().unwrap()]);
        assert_same_tree(&copy, &dst2);

        // --path restores one subtree; cat and ls read without restoring.
        let sub = work.path().join("sub");
        s.ok(&[
            "restore",
            "latest",
            sub.to_str().unwrap(),
            "--path",
            "dir-03",
        ]);
        assert_same_tree(&copy.join("dir-03"), &sub);
        let cat = s
            .command()
            .args(["cat", "latest", "exec.sh"])
            .output()
            .unwrap();
        assert_eq!(cat.stdout, fs::read(src.join("exec.sh")).unwrap());
        let ls = s.ok(&["ls", "latest", "dir-01"]);
        assert!(
            ls.lines()
                .any(|l| l.starts_with("/dir-01/file-secret-name-")),
            "{ls}"
        );

        // Snapshots as JSON.
        let json: serde_json::Value =
            serde_json::from_str(&s.ok(&["snapshots", "--json"])).unwrap();
        let arr = json.as_array().unwrap();
        assert_eq!(arr.len(), 4);
        for snap in arr {
            assert_eq!(snap["id"].as_str().unwrap().len(), 64);
            assert!(snap["time"].as_str().unwrap().ends_with('Z'));
        }

        // Nothing readable in the store.
        let objects = store_objects(&store.url);
        assert!(objects.len() > 5);
        for (name, bytes) in &objects {
            for n in secrets.names.iter().chain(&secrets.contents) {
                assert!(
                    !contains(bytes, n),
                    "{} leaks {:?}",
                    name,
                    String::from_utf8_lossy(n)
                );
            }
            for leak in [
                src.to_str().unwrap().as_bytes(),
                b"file-secret-name".as_slice(),
                b"SECRATE-PLAINTEXT",
            ] {
                assert!(
                    !contains(bytes, leak),
                    "{name} leaks {:?}",
                    String::from_utf8_lossy(leak)
                );
            }
        }
        assert!(s.ok(&["check", "--read-data"]).contains("no errors"));
    }
}

#[test]
fn passphrase_recovery_key_and_errors() {
    for store in stores("keys") {
        let work = tempfile::tempdir().unwrap();
        let s = Secrate::new(&store.url);
        // No repository yet: one sentence, exit 1.
        let o = s.run(&["snapshots"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).starts_with("secrate: no repository at"),
            "{}",
            stderr(&o)
        );
        assert_eq!(stderr(&o).lines().count(), 1);

        let recovery = s.init();
        let o = s.run(&["init", "--kdf-work-factor", "10"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));

        let src = work.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f"), b"data").unwrap();
        s.ok(&["backup", "-q", src.to_str().unwrap()]);

        let mut wrong = Secrate::new(&store.url);
        wrong.envs = vec![("SECRATE_PASSPHRASE".into(), "not it".into())];
        let o = wrong.run(&["snapshots"]);
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(
            stderr(&o).trim(),
            format!(
                "secrate: wrong passphrase (or key) for the repository at {}",
                store.url.trim_end_matches('/')
            )
        );

        // The recovery key, from the environment and from a file.
        let mut rec = Secrate::new(&store.url);
        rec.envs = vec![("SECRATE_RECOVERY_KEY".into(), recovery.clone())];
        assert!(rec.ok(&["snapshots"]).contains("1 snapshot\n"));
        let keyfile = work.path().join("recovery.txt");
        fs::write(&keyfile, format!("{recovery}\n")).unwrap();
        let mut rec = Secrate::new(&store.url);
        rec.envs.clear();
        assert!(rec
            .ok(&[
                "snapshots",
                "--recovery-key-file",
                keyfile.to_str().unwrap()
            ])
            .contains("1 snapshot\n"));
        let mut bad = Secrate::new(&store.url);
        bad.envs = vec![(
            "SECRATE_RECOVERY_KEY".into(),
            "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ".into(),
        )];
        let o = bad.run(&["snapshots"]);
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));

        // A passphrase file; one every user can read works, with a warning.
        let pf = work.path().join("pass");
        fs::write(&pf, format!("{PASSPHRASE}\n")).unwrap();
        let mut viafile = Secrate::new(&store.url);
        viafile.envs.clear();
        let args = ["snapshots", "--passphrase-file", pf.to_str().unwrap()];
        for (mode, warned) in [(0o644, true), (0o640, false), (0o600, false)] {
            fs::set_permissions(&pf, fs::Permissions::from_mode(mode)).unwrap();
            let o = viafile.run(&args);
            assert!(o.status.success(), "{}", stderr(&o));
            assert!(String::from_utf8_lossy(&o.stdout).contains("1 snapshot\n"));
            let e = stderr(&o);
            assert_eq!(
                e.contains("can be read by every user"),
                warned,
                "{mode:o}: {e}"
            );
        }

        // Bad input: one sentence, non-zero.
        for args in [
            vec!["restore", "nothex", "/tmp/x"],
            vec!["restore", "ffffffff", "/tmp/x"],
            vec!["cat", "latest", "no/such/file"],
            vec!["backup", "/no/such/dir"],
        ] {
            let o = s.run(&args);
            assert_eq!(o.status.code(), Some(1), "{args:?}");
            let e = stderr(&o);
            assert_eq!(e.lines().count(), 1, "{args:?}: {e}");
            assert!(e.starts_with("secrate: "), "{args:?}: {e}");
        }
    }
}

#[test]
fn unreachable_store_and_bad_urls() {
    let s = Secrate::new("s3://bucket/prefix");
    let o = s
        .command()
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .args(["snapshots"])
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
    let e = stderr(&o);
    assert!(
        e.starts_with("secrate: store error at s3://bucket/prefix"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
    // A client that cannot be made (no Azure account given): the store
    // and what failed, no "on (connecting)".
    let mut c = Secrate::new("az://container/prefix").command();
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AZURE_")) {
        c.env_remove(k);
    }
    let o = c.args(["snapshots"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.starts_with("secrate: store error at az://container/prefix: cannot open it: "),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
    for url in ["file://relative", "ftp://x", "nonsense"] {
        let o = Secrate::new(url).run(&["snapshots"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains("cannot use store URL"),
            "{}",
            stderr(&o)
        );
    }
}

/// `init` into a directory that holds other things is refused in one
/// sentence, nothing written; an empty one is used, and `--if-missing` on
/// the repository made there succeeds. (Found in stop 29: `--store
/// file://$HOME` put `config`, `keys/`, `packs/` among the user's files.)
#[test]
fn init_refuses_a_directory_that_holds_other_things() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("home");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("notes.txt"), b"mine").unwrap();
    let s = Secrate::new(&format!("file://{}", dir.display()));
    let o = s.run(&["init"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("is not empty (notes.txt)"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes.txt"]);
    fs::remove_file(dir.join("notes.txt")).unwrap();
    s.init();
    assert_eq!(s.run(&["init", "--if-missing"]).status.code(), Some(0));
}

/// A flipped byte in a pack: `check --read-data` names the damaged file and
/// exits 1; every other file still restores.
#[test]
fn flipped_byte_names_the_damaged_file() {
    for store in stores("flip") {
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        fs::create_dir_all(src.join("d")).unwrap();
        let mut data = vec![0u8; 3 << 20];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut data);
        fs::write(src.join("d/victim.bin"), &data).unwrap();
        fs::write(src.join("other.txt"), b"unharmed").unwrap();
        let s = Secrate::new(&store.url);
        s.init();
        s.ok(&["backup", "-q", src.to_str().unwrap()]);
        assert!(s.ok(&["check", "--read-data"]).contains("no errors"));

        // The data pack is the big one; flip a byte inside its first blob.
        let st = open_store(&store.url);
        let packs = st.list("packs").unwrap();
        let big = packs.iter().max_by_key(|p| p.size).unwrap();
        let mut bytes = st.get(&big.name).unwrap().to_vec();
        bytes[1000] ^= 0x01;
        st.put(&big.name, bytes.into()).unwrap();

        let o = s.run(&["check", "--read-data"]);
        assert_eq!(o.status.code(), Some(1));
        let out = String::from_utf8_lossy(&o.stdout);
        let damaged: Vec<&str> = out.lines().filter(|l| l.starts_with("damaged:")).collect();
        assert_eq!(damaged.len(), 1, "{out}");
        assert!(damaged[0].contains("/d/victim.bin"), "{out}");
        assert!(!out.contains("other.txt"), "{out}");

        // The other file still restores; the damaged one is reported.
        let dst = work.path().join("dst");
        let o = s.run(&["restore", "latest", dst.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("victim.bin"), "{}", stderr(&o));
        // Not a plain "restored snapshot ..." line (it read as success).
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.starts_with("restored snapshot ") && out.contains(" partly: "),
            "{out}"
        );
        assert!(
            stderr(&o)
                .ends_with("secrate: 1 path was not restored fully (see the warning above)\n"),
            "{}",
            stderr(&o)
        );
        assert_eq!(fs::read(dst.join("other.txt")).unwrap(), b"unharmed");
        assert!(Path::new(&dst.join("d/victim.bin")).exists());
    }
}

/// A directory 1,800 levels deep (as deep as paths of PATH_MAX allow with
/// room to spare) backs up, checks, lists and restores. Each level is a
/// few stack frames of the recursive walks: backup aborted the process
/// ("has overflowed its stack") at 1,000 levels before they ran on deep
/// stacks.
#[test]
fn deep_directories_back_up_and_restore() {
    for store in stores("deep-dirs") {
        eprintln!("== {} store", store.label);
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        let mut leaf = src.clone();
        for _ in 0..1800 {
            leaf.push("d");
        }
        fs::create_dir_all(&leaf).unwrap();
        fs::write(leaf.join("leaf"), b"at the bottom\n").unwrap();
        let s = Secrate::new(&store.url);
        s.init();
        s.ok(&["backup", src.to_str().unwrap()]);
        let out = s.ok(&["check", "--read-data"]);
        assert!(out.contains("no errors"), "{out}");
        assert_eq!(s.ok(&["ls", "latest"]).lines().count(), 1801);
        // Restore holds a directory handle per level: under the usual
        // soft limit of open files (here 256, lower than the depth) it
        // raises its own to the hard one.
        let dst = work.path().join("restored");
        let mut restore = s.command();
        restore.args(["restore", "latest", dst.to_str().unwrap()]);
        // SAFETY: only setrlimit(2) between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut restore, || {
                let mut l = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                l.rlim_cur = l.rlim_cur.min(256);
                if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let o = restore.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_same_tree(&src, &dst);
    }
}

/// `/dev/full` for a child's stdout or stderr: every write fails (ENOSPC),
/// as it does to a closed pipe or a full disk.
fn dev_full() -> Option<fs::File> {
    let f = fs::OpenOptions::new().write(true).open("/dev/full").ok();
    if f.is_none() {
        eprintln!("SKIPPED: no /dev/full");
    }
    f
}

/// A stdout that fails (a full disk) gives one sentence and exit 1
/// (a reader that is gone: exit 1 and no sentence, see
/// `a_reader_that_left_the_pipe_gets_no_error_message`), and so does a
/// failing stderr; before, `println!` and `eprintln!` panicked (exit 101,
/// a backtrace), after the command had done its work.
#[test]
fn a_failing_stdout_or_stderr_is_one_sentence_not_a_panic() {
    let Some(full) = dev_full() else { return };
    let work = tempfile::tempdir().unwrap();
    let s = Secrate::new(&format!("file://{}/store", work.path().display()));
    s.init();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    s.ok(&["backup", "-q", src.to_str().unwrap()]);
    let dst = work.path().join("restored");
    let dst = dst.to_str().unwrap();
    for args in [
        vec!["snapshots"],
        vec!["snapshots", "--json"],
        vec!["key", "list"],
        vec!["stats"],
        vec!["check"],
        vec!["forget", "--keep-last", "5", "--dry-run"],
        vec!["prune", "--dry-run"],
        vec!["unlock"],
        vec!["restore", "-q", "latest", dst],
        vec!["backup", "-q", src.to_str().unwrap()],
    ] {
        let o = s
            .command()
            .args(&args)
            .stdout(full.try_clone().unwrap())
            .output()
            .unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{args:?}: {e}");
        assert!(e.starts_with("secrate: standard output: "), "{args:?}: {e}");
    }
    // A warning to a failing stderr: the error's exit code, no panic.
    let o = s
        .command()
        .args(["snapshot", "/no/such/mount"])
        .stderr(full.try_clone().unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
}

/// Bad values for `forget` change nothing: a policy of zeros
/// (`--keep-daily 0`) keeps no snapshot, and forgot every one, the newest
/// too; a bad `--max-unused` with `--prune` was refused only after the
/// snapshots were forgotten.
#[test]
fn forget_refuses_bad_values_before_it_forgets() {
    let work = tempfile::tempdir().unwrap();
    let s = Secrate::new(&format!("file://{}/store", work.path().display()));
    s.init();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..2 {
        fs::write(src.join("f"), format!("version {i}")).unwrap();
        s.ok(&["backup", "-q", src.to_str().unwrap()]);
    }
    for args in [
        vec!["forget", "--keep-daily", "0"],
        vec!["forget", "--keep-last", "0", "--keep-within", "0s"],
        vec![
            "forget",
            "--keep-last",
            "0",
            "--keep-hourly",
            "0",
            "--dry-run",
        ],
        vec![
            "forget",
            "--keep-last",
            "1",
            "--prune",
            "--max-unused",
            "500",
        ],
        vec![
            "forget",
            "--keep-last",
            "1",
            "--prune",
            "--max-unused",
            "NaN",
        ],
        vec!["prune", "--max-unused", "-1"],
    ] {
        let o = s.run(&args);
        let e = stderr(&o);
        assert!(!o.status.success(), "{args:?}: {e}");
        assert!(
            e.starts_with("secrate: ") || e.starts_with("error: "),
            "{args:?}: {e}"
        );
        assert!(!e.contains("panicked"), "{args:?}: {e}");
        let listed = s.ok(&["snapshots"]);
        assert!(listed.contains("2 snapshots"), "{args:?}: {listed}");
    }
    // A zero next to a rule that keeps something is fine.
    let out = s.ok(&["forget", "--keep-last", "1", "--keep-daily", "0"]);
    assert!(out.contains("removed 1 of 2"), "{out}");
}

/// `snapshot`, `status` and `umount` on a path that is not a secrate
/// mount: one sentence. (`snapshot` first warned that it could not sync
/// the path, then said it was no mount.)
#[test]
fn mount_commands_on_a_path_that_is_no_mount_say_one_sentence() {
    let work = tempfile::tempdir().unwrap();
    let s = Secrate::new(&format!("file://{}/store", work.path().display()));
    let dir = work.path().to_str().unwrap().to_string();
    for path in ["/no/such/mount", dir.as_str()] {
        for cmd in ["snapshot", "status", "umount"] {
            let o = s.run(&[cmd, path]);
            let e = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{cmd} {path}: {e}");
            assert_eq!(
                e.trim_end(),
                format!("secrate: {path} is not a secrate mount"),
                "{cmd} {path}"
            );
        }
    }
}

/// A cache directory or a `file://` store inside the mountpoint is
/// refused before anything starts: once mounted, its path leads into the
/// mount, and the process serving it waits on itself (the first write in
/// the mount hung for good, and the server's own threads with it, past
/// SIGKILL, until the FUSE connection was aborted).
#[test]
fn a_cache_or_store_inside_the_mountpoint_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let store = format!("file://{}/store", work.path().display());
    let inner_store = format!("file://{}/store", mnt.display());
    Secrate::new(&store).init();
    Secrate::new(&inner_store).init();
    let m = mnt.to_str().unwrap();
    let cache_in = mnt.join("sub/cache");
    // Through a symlink too: the place counts, not the spelling.
    let link = work.path().join("link");
    std::os::unix::fs::symlink(&mnt, &link).unwrap();
    let cache_via_link = link.join("cache");
    for (url, cache) in [
        (&store, cache_in.to_str().unwrap()),
        (&store, m),
        (&store, cache_via_link.to_str().unwrap()),
        (&inner_store, work.path().join("cache").to_str().unwrap()),
    ] {
        let o = Secrate::new(url).run(&["mount", m, "--cache", cache]);
        if o.status.success() {
            // Mounted (the old code): take it down before failing.
            let _ = std::process::Command::new("fusermount3")
                .args(["-uz", m])
                .status();
        }
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{url} {cache}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains("inside the mountpoint"), "{e}");
        assert!(!cache_in.exists());
    }
}

/// `ls`, `cat` and `restore --path` take and give paths as bytes: a name
/// that is not UTF-8 is listed as it is and reached by its own bytes.
/// (Stop 30: `cat` and `--path` took UTF-8 only, and `ls` printed such a
/// name with replacement characters, which named nothing.)
#[test]
fn names_that_are_not_utf8_are_listed_and_reached() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let (dir, file) = (OsStr::from_bytes(b"d\xffir"), OsStr::from_bytes(b"caf\xe9"));
    fs::create_dir_all(src.join(dir)).unwrap();
    fs::write(src.join(dir).join(file), b"latin-1 name").unwrap();
    let s = Secrate::new(&format!("file://{}", work.path().join("store").display()));
    s.init();
    s.ok(&["backup", "-q", src.to_str().unwrap()]);

    let o = s.run(&["ls", "latest"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<&[u8]> = o.stdout.split(|&b| b == b'\n').collect();
    assert!(lines.contains(&&b"/d\xffir/caf\xe9"[..]), "{:?}", o.stdout);

    let path = OsStr::from_bytes(b"d\xffir/caf\xe9");
    let o = s
        .command()
        .args(["cat", "latest"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, b"latin-1 name");

    let o = s
        .command()
        .args(["ls", "-l", "latest"])
        .arg(OsStr::from_bytes(b"/d\xffir"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        contains(&o.stdout, b" /d\xffir/caf\xe9\n"),
        "{:?}",
        o.stdout
    );

    let dst = work.path().join("restored");
    let o = s
        .command()
        .args(["restore", "-q", "latest"])
        .arg(&dst)
        .arg("--path")
        .arg(OsStr::from_bytes(b"d\xffir"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(dst.join(file)).unwrap(), b"latin-1 name");
}

/// `ls -l` shows the mtime a file has, also one past 2262 or before 1970.
/// Before, it went through nanoseconds in an i64, which saturate: a file
/// of the year 2400 was listed as of 2262-04-11T23:47:16Z (restore set the
/// right time).
#[test]
fn ls_long_shows_times_past_2262() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    for (name, secs) in [("future", 13_569_465_600i64), ("past", -2_000_000_000)] {
        let f = src.join(name);
        fs::write(&f, name).unwrap();
        let t = secrate::repo::tree::Timestamp { secs, nanos: 0 };
        secrate::fsmeta::set_times(&f, t).unwrap();
    }
    let s = Secrate::new(&format!("file://{}", work.path().join("store").display()));
    s.init();
    assert_eq!(
        s.run(&["backup", src.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let o = s.run(&["ls", "-l", "latest"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("2400-01-01T00:00:00Z /future"), "{out}");
    assert!(out.contains("1906-08-16T20:26:40Z /past"), "{out}");
}

/// A file rewritten in place with its size kept and its mtime put back
/// (`touch -r`, `exiftool -P`, rsync-like tools) is backed up again: the
/// ctime, which no program can set back, tells. (Before, kind, size, mtime
/// and inode were the same and every later backup kept the old content.)
#[test]
fn a_rewrite_with_its_mtime_put_back_is_backed_up() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let f = src.join("latest");
    fs::write(&f, "version 1").unwrap();
    let md = fs::symlink_metadata(&f).unwrap();
    let mtime = secrate::repo::tree::Timestamp {
        secs: md.mtime(),
        nanos: md.mtime_nsec() as u32,
    };
    let s = Secrate::new(&format!("file://{}", work.path().join("store").display()));
    s.init();
    s.ok(&["backup", "-q", src.to_str().unwrap()]);

    // Past one tick of the clock that stamps ctimes.
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&f, "version 2").unwrap();
    secrate::fsmeta::set_times(&f, mtime).unwrap();
    let now = fs::symlink_metadata(&f).unwrap();
    assert_eq!(
        (now.len(), now.mtime(), now.ino()),
        (md.len(), md.mtime(), md.ino())
    );
    assert_ne!(
        (now.ctime(), now.ctime_nsec()),
        (md.ctime(), md.ctime_nsec())
    );

    let out = s.ok(&["backup", src.to_str().unwrap()]);
    assert!(out.contains(" 0 new, 1 changed"), "{out}");
    let o = s.run(&["cat", "latest", "latest"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, b"version 2");
    // Nothing changed since: taken as unchanged, not read again.
    let out = s.ok(&["backup", src.to_str().unwrap()]);
    assert!(out.contains(" 0 new, 0 changed"), "{out}");
}

/// `secrate diff` between two backups names exactly what changed: a file
/// rewritten, a mode changed, a directory removed with what it held, a
/// symlink become a directory, a directory added; nothing for a snapshot
/// with itself; below a path only when given one; one sentence for a path
/// in neither snapshot.
#[test]
fn diff_names_exactly_what_changed() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    for d in ["a/b", "c", "same/deep"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    fs::write(src.join("a/f"), "one").unwrap();
    fs::write(src.join("a/b/g"), "two").unwrap();
    fs::write(src.join("c/h"), "three").unwrap();
    fs::write(src.join("same/deep/k"), "kept").unwrap();
    std::os::unix::fs::symlink("f", src.join("a/l")).unwrap();
    let s = Secrate::new(&format!("file://{}", work.path().join("store").display()));
    s.init();
    let src_arg = src.to_str().unwrap();
    s.ok(&["backup", "-q", src_arg]);
    fs::write(src.join("a/f"), "changed").unwrap();
    fs::set_permissions(src.join("c"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::remove_dir_all(src.join("a/b")).unwrap();
    fs::remove_file(src.join("a/l")).unwrap();
    fs::create_dir(src.join("a/l")).unwrap();
    fs::write(src.join("a/l/x"), "new").unwrap();
    fs::create_dir(src.join("a/new")).unwrap();
    s.ok(&["backup", "-q", src_arg]);
    let snaps = s.ok(&["snapshots"]);
    let first = snaps
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();

    let o = s.run(&["diff", first, "latest"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // `a`'s mtime changed with its entries; `c`'s mode.
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "U    /a/\n-    /a/b/\n-    /a/b/g\nM    /a/f\nT    /a/l/\n+    /a/l/x\n+    /a/new/\nU    /c/\n"
    );
    let err = stderr(&o);
    assert!(
        err.contains("2 added, 2 removed, 1 changed, 2 with other attributes, 1 of another kind"),
        "{err}"
    );
    assert_eq!(s.ok(&["diff", "latest", "latest"]), "");
    assert_eq!(
        s.ok(&["diff", "latest", first, "a/l"]),
        "T    /a/l\n-    /a/l/x\n"
    );
    assert_eq!(s.ok(&["diff", first, "latest", "same"]), "");
    let o = s.run(&["diff", first, "latest", "no/such"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("\"no/such\" is in neither snapshot"), "{err}");
}

/// A name with a newline (or `"`, `\`, another control character) is
/// shown quoted by `ls` and `diff`, with C escapes: each line is one path.
/// Before, the newline went out as it is and the rest of the name read as
/// a line of its own. A change of the source directory's own mode shows
/// as `U    /`; before, `diff` said nothing of it.
#[test]
fn ls_and_diff_quote_names_with_newlines_and_show_the_root() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("new\nline"), "one").unwrap();
    fs::write(src.join("q\"b\\"), "q").unwrap();
    fs::write(src.join("plain"), "p").unwrap();
    let s = Secrate::new(&format!("file://{}", work.path().join("store").display()));
    s.init();
    let src_arg = src.to_str().unwrap();
    s.ok(&["backup", "-q", src_arg]);
    assert_eq!(
        s.ok(&["ls", "latest"]),
        "\"/new\\nline\"\n/plain\n\"/q\\\"b\\\\\"\n"
    );
    let first = s
        .ok(&["snapshots"])
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    fs::write(src.join("new\nline"), "two!").unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o750)).unwrap();
    s.ok(&["backup", "-q", src_arg]);
    let o = s.run(&["diff", &first, "latest"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "U    /\nM    \"/new\\nline\"\n"
    );
    assert!(
        stderr(&o).contains("1 changed, 1 with other attributes"),
        "{}",
        stderr(&o)
    );
}

/// `secrate mount` on a directory that holds files, or with a cache
/// "directory" that is a file: one sentence, nothing mounted. Before, the
/// first mounted over the files (they looked lost: a file written into the
/// mountpoint after a mount had failed vanished under the next mount), and
/// the second said "File exists (os error 17)".
#[test]
fn a_mountpoint_with_files_or_a_cache_that_is_a_file_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let s = Secrate::new(&format!("file://{}/store", work.path().display()));
    s.init();
    let full = work.path().join("full");
    fs::create_dir_all(&full).unwrap();
    fs::write(full.join("mine.txt"), b"mine").unwrap();
    let empty = work.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let cache_file = work.path().join("cache-file");
    fs::write(&cache_file, b"not a directory").unwrap();
    let cache = work.path().join("cache");
    for (mnt, cache, says) in [
        (
            &full,
            &cache,
            "is not empty: a mount there would hide what it holds",
        ),
        (&empty, &cache_file, "is a file, not a directory"),
    ] {
        let m = mnt.to_str().unwrap();
        let o = s.run(&["mount", m, "--cache", cache.to_str().unwrap()]);
        if o.status.success() {
            // Mounted (the old code): take it down before failing.
            let _ = std::process::Command::new("fusermount3")
                .args(["-uz", m])
                .status();
        }
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{m}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains(says), "{e}");
    }
    assert_eq!(fs::read(full.join("mine.txt")).unwrap(), b"mine");
}

/// A mountpoint that holds only a `lost+found` directory (the root of a
/// filesystem of its own) is no mountpoint "with files": the mount goes
/// ahead, and unmounts. Before, it was refused as not empty.
#[test]
fn a_mountpoint_with_only_lost_and_found_is_mounted() {
    let work = tempfile::tempdir().unwrap();
    let s = Secrate::new(&format!("file://{}/store", work.path().display()));
    s.init();
    let mnt = work.path().join("fs-root");
    fs::create_dir_all(mnt.join("lost+found")).unwrap();
    let cache = work.path().join("cache");
    let _guard = MountGuard {
        mnt: mnt.clone(),
        cache: cache.clone(),
    };
    let (m, c) = (mnt.to_str().unwrap(), cache.to_str().unwrap());
    let o = s.run(&["mount", m, "--cache", c, "--snapshot-interval", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    s.ok(&["umount", m]);
    assert!(mnt.join("lost+found").is_dir());
}

/// A read-only mount of a repository with no snapshot yet holds nothing
/// the store lacks: `status` says no unsealed changes and `umount` says
/// nothing is left in the cache. Before, both said there were changes
/// ("its cache still holds changes that are not in the store").
#[test]
fn a_read_only_mount_of_an_empty_repository_holds_no_changes() {
    let work = tempfile::tempdir().unwrap();
    let s = Secrate::new(&format!("file://{}/store", work.path().display()));
    s.init();
    let mnt = work.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let cache = work.path().join("cache");
    let _guard = MountGuard {
        mnt: mnt.clone(),
        cache: cache.clone(),
    };
    let (m, c) = (mnt.to_str().unwrap(), cache.to_str().unwrap());
    let o = s.run(&["mount", "--read-only", m, "--cache", c]);
    assert!(o.status.success(), "{}", stderr(&o));
    let st = s.ok(&["status", m]);
    assert!(st.contains("unsealed changes: no\n"), "{st}");
    let out = s.ok(&["umount", m]);
    assert_eq!(out, format!("unmounted {m} (read-only)\n"));
}

/// A writable mount of a new repository where nothing is done has no
/// unsealed changes and its unmount seals nothing (it said "unsealed
/// changes: yes" and sealed an empty snapshot); the next mount, where a
/// file is made, seals it.
#[test]
fn a_writable_mount_where_nothing_was_done_seals_nothing() {
    if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: needs root and /dev/fuse");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let s = Secrate::new(&format!("file://{}/store", work.path().display()));
    s.init();
    let mnt = work.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let cache = work.path().join("cache");
    let _guard = MountGuard {
        mnt: mnt.clone(),
        cache: cache.clone(),
    };
    let (m, c) = (mnt.to_str().unwrap(), cache.to_str().unwrap());
    let mount = || s.ok(&["mount", m, "--cache", c, "--snapshot-interval", "0"]);
    mount();
    let st = s.ok(&["status", m]);
    assert!(st.contains("unsealed changes: no\n"), "{st}");
    for wait in [&["snapshot"][..], &["snapshot", "--no-wait"]] {
        let args = [wait, &[m]].concat();
        assert_eq!(
            s.ok(&args),
            "nothing to snapshot: nothing changed in this mount, which has no snapshot yet\n"
        );
    }
    s.ok(&["umount", m]);
    assert!(s.ok(&["snapshots"]).ends_with("\n0 snapshots\n"));

    mount();
    fs::write(mnt.join("f"), b"data").unwrap();
    let st = s.ok(&["status", m]);
    assert!(st.contains("unsealed changes: yes\n"), "{st}");
    s.ok(&["umount", m]);
    assert!(s.ok(&["snapshots"]).ends_with("\n1 snapshot\n"));
    assert_eq!(s.ok(&["cat", "latest", "f"]), "data");
}

/// A full disk under standard output (`> /dev/full`) is named as where
/// the write failed, and a full standard error does not crash `diff`.
/// Before, `ls`, `cat` and `diff` said only "No space left on device"
/// (their last flush had no context), and `diff 2>/dev/full` panicked
/// (exit 101) on its counts line.
#[test]
fn a_full_stdout_is_named_and_a_full_stderr_is_no_crash() {
    let work = tempfile::tempdir().unwrap();
    let s = Secrate::new(&format!("file://{}/store", work.path().display()));
    s.init();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "a few bytes").unwrap();
    s.ok(&["backup", "-q", src.to_str().unwrap()]);
    let full = || {
        fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    for args in [
        &["ls", "latest"][..],
        &["cat", "latest", "f"],
        &["diff", "latest", "latest", "-q"],
        &["snapshots"],
    ] {
        let o = s.command().args(args).stdout(full()).output().unwrap();
        let e = stderr(&o);
        if args[0] == "diff" {
            // Nothing to write: no error.
            assert_eq!(o.status.code(), Some(0), "{args:?}: {e}");
            continue;
        }
        assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
        assert_eq!(
            e, "secrate: standard output: No space left on device (os error 28)\n",
            "{args:?}"
        );
    }
    let o = s
        .command()
        .args(["diff", "latest", "latest"])
        .stderr(full())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
}

/// Unmounts (lazily) and kills what a test mounted, also when it fails.
struct MountGuard {
    mnt: std::path::PathBuf,
    cache: std::path::PathBuf,
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.mnt)
            .stderr(std::process::Stdio::null())
            .status();
        if let Some(pid) = mount_pid(&self.cache) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn mount_pid(cache: &Path) -> Option<i32> {
    fs::read_to_string(cache.join("lock"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn wait_gone(pid: i32) {
    let start = std::time::Instant::now();
    while unsafe { libc::kill(pid, 0) } == 0 && start.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// What a user meets around a killed mount (real FUSE; skipped without
/// root): `status` of a repository with no snapshot said `- - (uploaded)`;
/// `mount` on the dead mountpoint said "not a directory"; a read-only
/// mount of the killed mount's cache, which shows the changes no snapshot
/// holds, said on `umount` "everything is in the store". Now: "none yet",
/// how to clear the dead mount, and that the changes stay in the cache
/// (the writable mount of the cache then uploads them).
#[test]
fn a_killed_mount_then_a_read_only_one_say_what_is_true() {
    if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: needs root and /dev/fuse");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let s = Secrate::new(&format!("file://{}/store", work.path().display()));
    s.init();
    let mnt = work.path().join("mnt");
    let cache = work.path().join("cache");
    fs::create_dir_all(&mnt).unwrap();
    let _guard = MountGuard {
        mnt: mnt.clone(),
        cache: cache.clone(),
    };
    let (m, c) = (mnt.to_str().unwrap(), cache.to_str().unwrap());
    let mount = |extra: &[&str]| {
        let mut args = vec!["mount", m, "--cache", c, "--snapshot-interval", "0"];
        args.extend_from_slice(extra);
        s.run(&args)
    };
    let o = mount(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let st = s.ok(&["status", m]);
    assert!(st.contains("last snapshot:   none yet\n"), "{st}");
    {
        use std::io::Write;
        let mut f = fs::File::create(mnt.join("kept.txt")).unwrap();
        f.write_all(b"fsynced before the kill").unwrap();
        f.sync_all().unwrap();
    }
    let pid = mount_pid(&cache).unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_gone(pid);

    let o = mount(&[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("secrate process is gone"), "{e}");
    assert!(e.contains(&format!("fusermount3 -uz {m}")), "{e}");
    // A path inside the dead mount: the mount to clear is named, not the
    // path (`fusermount3 -uz` of it fails: no mount there).
    let inside = format!("{m}/sub");
    let o = s.run(&["mount", &inside, "--cache", &format!("{c}-2")]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert_eq!(
        e,
        format!(
            "secrate: {inside} is inside {m}, a mount whose secrate process is gone: unmount it with `fusermount3 -uz {m}`\n"
        )
    );
    let st = std::process::Command::new("fusermount3")
        .args(["-uz", m])
        .status()
        .unwrap();
    assert!(st.success());

    let o = mount(&["--read-only"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read(mnt.join("kept.txt")).unwrap(),
        b"fsynced before the kill"
    );
    let st = s.ok(&["status", m]);
    assert!(st.contains("mode:            read-only"), "{st}");
    let out = s.ok(&["umount", m]);
    assert!(!out.contains("everything is in the store"), "{out}");
    assert!(
        out.contains("(read-only): its cache still holds changes that are not in the store"),
        "{out}"
    );

    let o = mount(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = s.ok(&["umount", m]);
    assert!(out.contains("everything is in the store"), "{out}");
    assert_eq!(
        s.ok(&["cat", "latest", "kept.txt"]),
        "fsynced before the kill"
    );
}

/// `secrate ls latest | head`: once `head` has its lines and leaves, the
/// command stops with exit 1 and says nothing (the shell's own tools die
/// of SIGPIPE quietly). Before, every such pipe ended with "secrate:
/// standard output: Broken pipe (os error 32)" on the terminal.
#[test]
fn a_reader_that_left_the_pipe_gets_no_error_message() {
    let work = tempfile::tempdir().unwrap();
    let s = Secrate::new(&format!("file://{}/store", work.path().display()));
    s.init();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    s.ok(&["backup", "-q", src.to_str().unwrap()]);
    let listed = s.ok(&["snapshots"]);
    let first = listed
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    fs::write(src.join("f"), b"changed").unwrap();
    s.ok(&["backup", "-q", src.to_str().unwrap()]);
    for args in [
        vec!["ls", "latest"],
        vec!["cat", "latest", "f"],
        vec!["snapshots"],
        vec!["diff", first, "latest"],
        vec!["key", "list"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = s.command().args(&args).stdout(writer).output().unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
        assert_eq!(e, "", "{args:?}");
    }
}

/// `repair --cache DIR` with a folder that is no mount cache (the
/// mountpoint, say) is refused: before, repair found nothing in it and
/// went on to record as lost what the real cache still held ("nothing to
/// repair" when nothing was lost). A path that does not exist said "is
/// not a directory".
#[test]
fn repair_refuses_a_cache_that_is_no_mount_cache() {
    let work = tempfile::tempdir().unwrap();
    let s = Secrate::new(&format!("file://{}/store", work.path().display()));
    s.init();
    let plain = work.path().join("plain");
    fs::create_dir_all(&plain).unwrap();
    fs::write(plain.join("notes.txt"), b"x").unwrap();
    let missing = work.path().join("missing");
    for (dir, says) in [
        (&plain, "is not a secrate mount cache"),
        (&missing, "No such file or directory"),
    ] {
        let o = s.run(&["repair", "--cache", dir.to_str().unwrap()]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains(says), "{e}");
    }
    // A folder of sources is fine for --from.
    s.ok(&["repair", "--from", plain.to_str().unwrap()]);
}

/// `secrate snapshot --no-wait` twice in a row, while the first one's
/// upload cannot finish (the store's `packs/` is a file for a while): the
/// second said "nothing changed since the last snapshot; everything is
/// uploaded" with the snapshot still in the outbox. And a path inside the
/// mount given to `snapshot`, `status` or `umount` said only "is not a
/// secrate mount". Real FUSE; skipped without root.
#[test]
fn snapshot_no_wait_says_what_still_waits_for_upload() {
    if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: needs root and /dev/fuse");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let s = Secrate::new(&format!("file://{}", store.display()));
    s.init();
    let mnt = work.path().join("mnt");
    let cache = work.path().join("cache");
    fs::create_dir_all(&mnt).unwrap();
    let _guard = MountGuard {
        mnt: mnt.clone(),
        cache: cache.clone(),
    };
    let (m, c) = (mnt.to_str().unwrap(), cache.to_str().unwrap());
    s.ok(&["mount", m, "--cache", c, "--snapshot-interval", "0"]);
    // Uploads fail (and are retried) until `packs/` is back.
    let (packs, away) = (store.join("packs"), store.join("packs.away"));
    let had_packs = packs.exists();
    if had_packs {
        fs::rename(&packs, &away).unwrap();
    }
    fs::write(&packs, b"").unwrap();
    fs::write(mnt.join("new.txt"), b"data").unwrap();
    // A folder inside the mount is not the mount: say which one is.
    let inside = mnt.join("new.txt");
    for cmd in ["snapshot", "status", "umount"] {
        let o = s.run(&[cmd, inside.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(
            stderr(&o),
            format!(
                "secrate: {} is inside the secrate mount at {m}, not a mount itself: give {m}\n",
                inside.display()
            )
        );
    }
    let out = s.ok(&["snapshot", "--no-wait", m]);
    assert!(out.contains(" sealed"), "{out}");
    let out = s.ok(&["snapshot", "--no-wait", m]);
    assert!(!out.contains("everything is uploaded"), "{out}");
    assert!(
        out.contains(" for upload") && out.contains(" still wait"),
        "{out}"
    );
    fs::remove_file(&packs).unwrap();
    if had_packs {
        fs::rename(&away, &packs).unwrap();
    }
    let out = s.ok(&["snapshot", m]);
    assert!(out.contains("everything is uploaded"), "{out}");
    let out = s.ok(&["umount", m]);
    assert!(out.contains("everything is in the store"), "{out}");
    assert_eq!(s.ok(&["cat", "latest", "new.txt"]), "data");
}

/// `init` into a file, or under one: one sentence naming the file, exit 1
/// (was "File exists (os error 17)" / "Not a directory (os error 20)");
/// a read-only command there says the same (was "no repository").
#[test]
fn a_store_path_that_is_a_file_is_named() {
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("f");
    fs::write(&f, b"mine").unwrap();
    let want = format!(
        "secrate: {} is a file, not a directory (a file:// store is a directory)\n",
        f.display()
    );
    for dir in [f.clone(), f.join("sub")] {
        let s = Secrate::new(&format!("file://{}", dir.display()));
        for args in [&["init"][..], &["snapshots"]] {
            let o = s.run(args);
            assert_eq!(o.status.code(), Some(1), "{args:?} {}", dir.display());
            assert_eq!(stderr(&o), want, "{args:?} {}", dir.display());
        }
    }
    assert_eq!(fs::read(&f).unwrap(), b"mine");
}

/// A pack removed from a one-store repository: `check` counts in the
/// singular where the count is one ("1 damaged paths", "1 snapshots"),
/// and its log line says the pack is missing, not that "its blobs are read
/// from their other copies" (there is none here).
#[test]
fn check_of_a_missing_pack_says_only_what_is_known() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut data = vec![0u8; 100_000];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut data);
    fs::write(src.join("b"), &data).unwrap();
    let store = work.path().join("store");
    let s = Secrate::new(&format!("file://{}", store.display()));
    s.init();
    let out = s.ok(&["backup", src.to_str().unwrap()]);
    assert!(out.contains("; 1 dir; "), "{out}");
    assert!(s.ok(&["snapshots"]).ends_with("\n1 snapshot\n"));
    // The tree pack is the small one: the root cannot be read.
    let st = open_store(&format!("file://{}", store.display()));
    let packs = st.list("packs").unwrap();
    assert_eq!(packs.len(), 2, "{packs:?}");
    let small = packs.iter().min_by_key(|p| p.size).unwrap();
    st.delete(&small.name).unwrap();
    let o = s.run(&["check"]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.ends_with(
            "\ndamage found: 1 damaged path (1 distinct) and 1 damaged object; 1 snapshot, 1 tree, 2 packs\n"
        ),
        "{out}"
    );
    let e = stderr(&o);
    assert!(!e.contains("other copies"), "{e}");
    assert!(
        e.contains("is missing from the store (pruned by another writer, or lost)"),
        "{e}"
    );
}

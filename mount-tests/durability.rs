//! A whole store lost under a mount: two replicas, and erasure coding 2+1
//! over three stores (losing a data store, and a parity store), on
//! `file://` and on the S3 server scripts/test.sh starts.
//!
//! Each case writes a tree through a real mount (multi-MiB, empty and many
//! small files, two snapshots), unmounts, destroys one store, and then
//! requires: `restore` works; a mount on a fresh cache, given only one of
//! the remaining stores, shows the live tree and `.history` byte-exact and
//! accepts writes; while the store is gone (`file://`: its directory is
//! missing) the mount keeps the new data in its outbox, `secrate status`
//! names the store, and a `kill -9` of the mount loses none of it; once the directory is back (empty) the mount's uploads
//! resume by themselves; after the unmount `secrate sync` rebuilds the store
//! byte-exact and `check --read-data` finds every store complete. On S3 a
//! destroyed store is a wiped prefix: reachable and empty, so uploads go on.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;
use support::*;

/// A tree as a test expects it: relative path → file content, or `None`
/// for a directory.
type Tree = BTreeMap<String, Option<Vec<u8>>>;

fn read_tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            if rel == ".history" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
                out.insert(rel, None);
            } else {
                out.insert(rel, Some(fs::read(e.path()).unwrap()));
            }
        }
    }
    out
}

fn assert_tree(root: &Path, want: &Tree, what: &str) {
    let got = read_tree(root);
    let names = |t: &Tree| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&got), names(want), "{what}: the same entries");
    for (p, w) in want {
        assert!(got[p] == *w, "{what}: {p} differs");
    }
}

/// Write `tree` into `root` (directories first: BTreeMap order puts a
/// directory before what it holds).
fn write_tree(root: &Path, tree: &Tree) {
    for (p, c) in tree {
        match c {
            None => fs::create_dir_all(root.join(p)).unwrap(),
            Some(bytes) => fs::write(root.join(p), bytes).unwrap(),
        }
    }
}

/// Files of varied sizes: 5 MiB and 1 MiB + 123 pseudo-random, a 2 MiB
/// file that repeats its first MiB (dedup inside it), empty files, 250
/// small files of 0..4000 bytes in nested directories.
fn first_tree() -> Tree {
    let mut t = Tree::new();
    t.insert("big.bin".into(), Some(pseudo_random(1, 5 << 20)));
    t.insert("mid.bin".into(), Some(pseudo_random(2, (1 << 20) + 123)));
    let half = pseudo_random(3, 1 << 20);
    t.insert("twice.bin".into(), Some([half.clone(), half].concat()));
    t.insert("empty".into(), Some(Vec::new()));
    t.insert("empty-dir".into(), None);
    t.insert("small".into(), None);
    for d in 0..5 {
        t.insert(format!("small/d{d}"), None);
        t.insert(format!("small/d{d}/empty"), Some(Vec::new()));
        for f in 0..50 {
            let n = d * 50 + f;
            t.insert(
                format!("small/d{d}/f{f:02}"),
                Some(pseudo_random(100 + n as u64, (n * 157) % 4000)),
            );
        }
    }
    t
}

fn status(s: &Secrate, mnt: &Path) -> serde_json::Value {
    serde_json::from_str(&s.ok(&["status", mnt.to_str().unwrap(), "--json"])).unwrap()
}

/// The whole story for one store set: `ec` is `None` for replicas, `lost`
/// the store destroyed, `open_with` the one URL later runs are given.
fn lose_a_store_under_the_mount(set: &StoreSet, ec: Option<&str>, lost: usize, open_with: usize) {
    let label = format!(
        "{} {}, store {lost} lost",
        set.label,
        ec.unwrap_or("replicas")
    );
    eprintln!("== {label}");
    let clock = Clock::new();
    let work = tempfile::tempdir().unwrap();
    let s = Secrate::new(&set.urls.join(","));
    match ec {
        Some(p) => {
            s.ok(&["--ec", p, "init", "--kdf-work-factor", "10"]);
        }
        None => {
            s.init();
        }
    }

    // Two snapshots written through a mount.
    let v1 = first_tree();
    let mut v2 = v1.clone();
    v2.insert("small/d1/f07".into(), Some(b"changed in v2".to_vec()));
    v2.remove("mid.bin");
    v2.insert("added-in-v2.bin".into(), Some(pseudo_random(4, 700_001)));
    let mnt = work.path().join("mnt");
    let mut m = Mount::new(&s, &mnt, &work.path().join("c1"), &[]);
    write_tree(&m.mnt, &v1);
    m.snapshot();
    fs::write(m.path("small/d1/f07"), b"changed in v2").unwrap();
    fs::remove_file(m.path("mid.bin")).unwrap();
    fs::write(
        m.path("added-in-v2.bin"),
        v2["added-in-v2.bin"].as_ref().unwrap(),
    )
    .unwrap();
    m.snapshot();
    m.umount();
    clock.step("two snapshots through the mount");

    let before: Vec<_> = set.urls.iter().map(|u| raw_objects(u)).collect();
    for b in &before[1..] {
        assert!(
            b.keys().eq(before[0].keys()),
            "{label}: every store holds every object"
        );
    }
    destroy_store(&set.urls[lost]);
    let one = Secrate::new(&set.urls[open_with]);

    // Restore through the remaining stores.
    let out = work.path().join("restored");
    one.ok(&["restore", "-q", "latest", out.to_str().unwrap()]);
    assert_tree(
        &out,
        &v2,
        &format!("{label}: restore while a store is gone"),
    );
    clock.step("restore with the store gone");

    // A mount on a fresh cache, given one of the remaining stores.
    let mut m = Mount::new(&one, &mnt, &work.path().join("c2"), &[]);
    assert_tree(&m.mnt, &v2, &format!("{label}: the live tree"));
    let names = m.history();
    assert_eq!(names.len(), 2, "{label}: {names:?}");
    let h = m.path(".history");
    assert_tree(&h.join(&names[0]), &v1, &format!("{label}: .history v1"));
    assert_tree(&h.join(&names[1]), &v2, &format!("{label}: .history v2"));
    clock.step("mount on a fresh cache: live tree and .history");

    // Writes while the store is gone: fsync'd, then sealed.
    let mut v3 = v2.clone();
    let during = pseudo_random(5, 3 << 20);
    write_synced(&m.path("during-outage.bin"), &during);
    v3.insert("during-outage.bin".into(), Some(during));
    fs::write(m.path("small/d4/f49"), b"edited during the outage").unwrap();
    v3.insert(
        "small/d4/f49".into(),
        Some(b"edited during the outage".to_vec()),
    );
    fs::remove_file(m.path("twice.bin")).unwrap();
    v3.remove("twice.bin");
    one.ok(&["snapshot", "--no-wait", m.mnt.to_str().unwrap()]);
    assert_tree(&m.mnt, &v3, &format!("{label}: writes during the outage"));

    let gone = set.urls[lost].strip_prefix("file://");
    if let Some(dir) = gone {
        // The upload cannot reach every store: it waits in the outbox and
        // `status` says why, naming the store.
        let mut st = serde_json::Value::Null;
        poll_until(
            "status to show the failed upload",
            Duration::from_secs(120),
            || {
                st = status(&one, &m.mnt);
                st["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains(&set.urls[lost]))
            },
        );
        assert!(st["pending_objects"].as_u64().unwrap() > 0, "{st}");
        assert_eq!(st["last_snapshot_uploaded"], false, "{st}");
        let text = one.ok(&["status", m.mnt.to_str().unwrap()]);
        assert!(text.contains(&set.urls[lost]), "{label}: {text}");
        clock.step("status shows the store error, the outbox holds the data");
        // A crash while the store is gone loses nothing: kill -9, then the
        // same cache mounted again still holds the writes and the backlog.
        let pid = m.pid.expect("the mount's pid");
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        poll_until("the killed mount to exit", Duration::from_secs(30), || {
            !pid_alive(pid)
        });
        drop(m);
        m = Mount::new(&one, &mnt, &work.path().join("c2"), &[]);
        assert_tree(&m.mnt, &v3, &format!("{label}: after kill -9"));
        let st = status(&one, &m.mnt);
        assert!(st["pending_objects"].as_u64().unwrap() > 0, "{st}");
        clock.step("kill -9 and mount the same cache again");
        // The directory is back (empty): the mount finds it by itself.
        fs::create_dir_all(dir).unwrap();
    }
    poll_until("the outbox to empty", Duration::from_secs(240), || {
        let st = status(&one, &m.mnt);
        st["pending_objects"] == 0 && st["last_snapshot_uploaded"] == true
    });
    clock.step("uploads done");
    m.umount();
    if gone.is_some() {
        let log = m.log();
        assert!(
            log.contains("warning: upload:") && log.contains(&set.urls[lost]),
            "{label}: the log tells of the failed uploads:\n{log}"
        );
    }

    // Sync rebuilds the lost store: everything it held, byte-exact, and
    // what was written since.
    let o = one.run(&["check", "-q"]);
    assert_eq!(o.status.code(), Some(1), "{label}: a store is incomplete");
    let synced = one.ok(&["sync"]);
    assert!(
        synced.contains("every store holds every object"),
        "{synced}"
    );
    let after: Vec<_> = set.urls.iter().map(|u| raw_objects(u)).collect();
    for (i, a) in after.iter().enumerate() {
        assert!(
            a.keys().eq(after[0].keys()),
            "{label}: store {i} holds every object after sync"
        );
        for (name, bytes) in &before[i] {
            assert!(
                a.get(name) == Some(bytes),
                "{label}: store {i}: {name} is what it was before the loss"
            );
        }
    }
    assert!(
        after[0].len() > before[0].len(),
        "{label}: the outage's snapshot is stored"
    );
    if ec.is_none() {
        assert!(
            after.iter().all(|a| a == &after[0]),
            "{label}: replicas equal"
        );
    } else {
        // Shards are deterministic: losing the store again and rebuilding
        // gives the same bytes, also for what the mount wrote.
        destroy_store(&set.urls[lost]);
        one.ok(&["sync"]);
        assert!(
            raw_objects(&set.urls[lost]) == after[lost],
            "{label}: rebuilt byte-exact"
        );
    }
    let text = one.ok(&["check", "--read-data"]);
    for u in &set.urls {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("store {u}")) && l.contains(": complete,")),
            "{label}: {u} complete:\n{text}"
        );
    }
    assert!(text.contains("no errors"), "{label}:\n{text}");
    clock.step("sync and check --read-data");

    // The outage's writes are in the latest snapshot.
    let out = work.path().join("restored-after");
    one.ok(&["restore", "-q", "latest", out.to_str().unwrap()]);
    assert_tree(&out, &v3, &format!("{label}: restore after sync"));
}

#[test]
fn replicas_lose_the_first_store_under_the_mount() {
    if !fuse_ready("replicas_lose_the_first_store_under_the_mount") {
        return;
    }
    for set in store_sets("mount-dur-replicas", 2) {
        lose_a_store_under_the_mount(&set, None, 0, 1);
    }
}

#[test]
fn erasure_coding_2_1_lose_a_data_store_under_the_mount() {
    if !fuse_ready("erasure_coding_2_1_lose_a_data_store_under_the_mount") {
        return;
    }
    for set in store_sets("mount-dur-ec-data", 3) {
        lose_a_store_under_the_mount(&set, Some("2+1"), 0, 2);
    }
}

#[test]
fn erasure_coding_2_1_lose_the_parity_store_under_the_mount() {
    if !fuse_ready("erasure_coding_2_1_lose_the_parity_store_under_the_mount") {
        return;
    }
    for set in store_sets("mount-dur-ec-parity", 3) {
        lose_a_store_under_the_mount(&set, Some("2+1"), 2, 0);
    }
}

//! Several stores and keys, through the real binary on `file://`: a stale
//! replica given back must not bring back a removed key nor a forgotten
//! snapshot; `key list` and
//! `key remove` and keys of another repository; leaving a store out of a
//! set.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `key add` a full passphrase read from `file`; returns the new key's id.
fn add_passphrase(s: &Secrate, file: &Path, pass: &str) -> String {
    fs::write(file, format!("{pass}\n")).unwrap();
    let out = s.ok(&[
        "key",
        "add",
        "--new-passphrase-file",
        file.to_str().unwrap(),
        "--kdf-work-factor",
        "10",
    ]);
    out.split_whitespace()
        .last()
        .expect("key add prints the id")
        .to_string()
}

fn with_passphrase(store: &str, pass: &str) -> Secrate {
    let mut s = Secrate::new(store);
    s.envs = vec![("SECRATE_PASSPHRASE".into(), pass.into())];
    s
}

fn cp_a(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn a_stale_replica_does_not_bring_back_a_removed_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n);
    let url = |n: &str| format!("file://{}", path(n).display());
    let both = format!("{},{}", url("a"), url("b"));
    let s = Secrate::new(&both);
    s.init();
    let leaked = "a passphrase that leaked";
    let b_id = add_passphrase(&s, &path("pass-b"), leaked);
    let b_key = format!("keys/{b_id}");
    with_passphrase(&both, leaked).ok(&["snapshots"]);

    // Store b as it was then, put aside; the key removed (it leaked).
    cp_a(&path("b"), &path("b-old"));
    let out = s.ok(&["key", "remove", &b_id]);
    assert!(out.contains(&b_id), "{out}");
    assert!(!path("a").join(&b_key).exists());
    assert!(!path("b").join(&b_key).exists());

    // The older copy of store b comes back in its place.
    fs::remove_dir_all(path("b")).unwrap();
    fs::rename(path("b-old"), path("b")).unwrap();
    assert!(path("b").join(&b_key).exists());

    // The leaked passphrase opens nothing: the set given whole, or by the
    // stale store alone (its `stores` object names both).
    for given in [both.clone(), url("b")] {
        let o = with_passphrase(&given, leaked).run(&["snapshots"]);
        assert!(!o.status.success(), "{given}: {}", stdout(&o));
        assert!(stderr(&o).contains("was removed"), "{}", stderr(&o));
    }
    // `key list` does not list it; the passphrase in use still opens.
    let list = s.ok(&["key", "list"]);
    assert!(!list.contains(&b_id), "{list}");
    // `check` says the stale store still holds it.
    let o = s.run(&["check"]);
    assert!(stdout(&o).contains("a removed key"), "{}", stdout(&o));

    // `sync` does not spread it: it deletes it where it is left.
    let out = s.ok(&["sync"]);
    assert!(out.contains(&format!("deleted {b_key}")), "{out}");
    assert!(!path("a").join(&b_key).exists(), "{out}");
    assert!(!path("b").join(&b_key).exists(), "{out}");
    // The removal record is on both stores.
    let rec = format!("keys-removed/{b_id}");
    assert!(path("a").join(&rec).exists());
    assert!(path("b").join(&rec).exists());
    let o = with_passphrase(&both, leaked).run(&["snapshots"]);
    assert!(!o.status.success());
    s.ok(&["snapshots"]);
    s.ok(&["check"]);
}

/// The ids of the snapshots a `file://` store's directory holds.
fn snapshot_files(store: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(store.join("snapshots"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Three replicas; store c copied aside, a snapshot forgotten and pruned,
/// then the older copy of c given back (a disk restored from a backup, a
/// store that was swapped out during the forget). Before: `snapshots`
/// listed the forgotten snapshot again, `sync` spread it and its old data
/// to every store, `prune` kept it (the space the forget freed came
/// back) and it could be restored. Now its record keeps it forgotten and
/// `sync` deletes it from c.
#[test]
fn a_stale_replica_does_not_bring_back_a_forgotten_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n);
    let url = |n: &str| format!("file://{}", path(n).display());
    let all = format!("{},{},{}", url("a"), url("b"), url("c"));
    let s = Secrate::new(&all);
    s.init();
    let src = path("src");
    fs::create_dir_all(&src).unwrap();
    let src_s = src.to_str().unwrap();
    fs::write(src.join("f"), vec![1u8; 300_000]).unwrap();
    s.ok(&["backup", "-q", src_s]);
    let first = snapshot_files(&path("a"));
    assert_eq!(first.len(), 1);
    let old = first[0].clone();
    fs::write(src.join("f"), vec![2u8; 300_000]).unwrap();
    s.ok(&["backup", "-q", src_s]);
    let kept: Vec<String> = snapshot_files(&path("a"))
        .into_iter()
        .filter(|i| *i != old)
        .collect();
    assert_eq!(kept.len(), 1);

    cp_a(&path("c"), &path("c-old"));
    s.ok(&["forget", "--prune", &old]);
    for st in ["a", "b", "c"] {
        assert_eq!(snapshot_files(&path(st)), kept, "{st}");
    }
    fs::remove_dir_all(path("c")).unwrap();
    fs::rename(path("c-old"), path("c")).unwrap();
    assert!(snapshot_files(&path("c")).contains(&old));

    // Listed: only the kept snapshot, through the set or the stale store.
    let short = &old[..8];
    for given in [all.clone(), url("c")] {
        let out = Secrate::new(&given).ok(&["snapshots"]);
        assert!(!out.contains(short), "{given}: {out}");
        assert!(out.contains("1 snapshot\n"), "{given}: {out}");
    }
    let o = s.run(&["restore", &old, path("out").to_str().unwrap()]);
    assert!(!o.status.success(), "{}", stdout(&o));
    // `check` says what store c still holds, and is no damage.
    let o = s.run(&["check"]);
    let out = stdout(&o);
    assert!(out.contains("a forgotten snapshot"), "{out}");
    assert!(out.contains("the repository is intact"), "{out}");

    // `sync` does not spread it: it deletes it where it is left.
    let out = s.ok(&["sync"]);
    assert!(out.contains(&format!("deleted snapshots/{old}")), "{out}");
    for st in ["a", "b", "c"] {
        assert_eq!(snapshot_files(&path(st)), kept, "{st}: {out}");
        let rec = path(st).join("snapshots-forgotten").join(&old);
        assert!(rec.exists(), "{st}");
    }
    // `prune` frees again what the forget had freed (sync copied c's old
    // packs to a and b: nothing names them now).
    let out = s.ok(&["prune"]);
    assert!(out.contains("1 snapshot references"), "{out}");
    let out = s.ok(&["check"]);
    assert!(out.contains("no errors: 1 snapshot,"), "{out}");
    assert!(!out.contains(short), "{out}");
}

/// A forged forgotten record (garbage, or a real one copied under another
/// snapshot's name) written to one store by someone without the keys:
/// the snapshot is still listed, `sync` deletes it from no store, and
/// `check` reports the record.
#[test]
fn a_forged_forgotten_record_deletes_and_hides_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n);
    let url = |n: &str| format!("file://{}", path(n).display());
    let both = format!("{},{}", url("a"), url("b"));
    let s = Secrate::new(&both);
    s.init();
    let src = path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"kept").unwrap();
    s.ok(&["backup", "-q", src.to_str().unwrap()]);
    let id = snapshot_files(&path("a")).remove(0);
    // Store a loses the snapshot and holds a record for it instead.
    fs::remove_file(path("a/snapshots").join(&id)).unwrap();
    fs::create_dir_all(path("a/snapshots-forgotten")).unwrap();
    let mut forged = b"SECRATF\x01".to_vec();
    forged.extend_from_slice(&0i64.to_le_bytes());
    forged.extend_from_slice(&(id.len() as u16).to_le_bytes());
    forged.extend_from_slice(id.as_bytes());
    forged.extend_from_slice(&[0u8; 32]);
    fs::write(path("a/snapshots-forgotten").join(&id), &forged).unwrap();

    let out = s.ok(&["snapshots"]);
    assert!(out.contains(&id[..8]), "{out}");
    // `sync` checks the record (it needs the key for that), deletes
    // nothing and gives store a the snapshot back, but fails, naming it.
    let o = s.run(&["sync"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("not deleted"), "{}", stdout(&o));
    assert!(path("b/snapshots").join(&id).exists());
    assert!(path("a/snapshots").join(&id).exists());
    let o = s.run(&["check"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("snapshots-forgotten/{id}")),
        "{}",
        stdout(&o)
    );
    // Deleting the forged record (sync copied it as any object) is the
    // way out.
    for st in ["a", "b"] {
        let _ = fs::remove_file(path(st).join("snapshots-forgotten").join(&id));
    }
    s.ok(&["sync"]);
    s.ok(&["check"]);
}

#[test]
fn a_forged_removal_record_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = |n: &str| format!("file://{}", dir.path().join(n).display());
    let both = format!("{},{}", url("a"), url("b"));
    let s = Secrate::new(&both);
    s.init();
    let list = s.ok(&["key", "list"]);
    let mine = list
        .lines()
        .find(|l| l.starts_with('*'))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_string();
    // Someone with write access to store a writes a record for the key in
    // use (any bytes: they do not hold the keyring to make a real one).
    let rec_dir = dir.path().join("a/keys-removed");
    fs::create_dir_all(&rec_dir).unwrap();
    let mut forged = b"SECRATR\x01".to_vec();
    forged.extend_from_slice(&0i64.to_le_bytes());
    forged.extend_from_slice(&(mine.len() as u16).to_le_bytes());
    forged.extend_from_slice(mine.as_bytes());
    forged.extend_from_slice(&[0u8; 32]);
    fs::write(rec_dir.join(&mine), &forged).unwrap();
    // The key still opens and is listed (with its copy on store a gone
    // too, `sync` keeps it on b: sync_does_not_delete_keys_on_a_forged_removal_record).
    s.ok(&["snapshots"]);
    assert!(s.ok(&["key", "list"]).contains(&mine));
    s.ok(&["sync"]);
    s.ok(&["snapshots"]);
}

/// Store a damaged or hostile: it lost every key that reads and holds
/// records naming them (no keyring made them); only a write-only key is
/// left unnamed. `sync` must not delete the keys from store b on the
/// records' word. (Found by review: it did, and the repository could no
/// longer be read with any key.)
#[test]
fn sync_does_not_delete_keys_on_a_forged_removal_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n);
    let url = |n: &str| format!("file://{}", path(n).display());
    let both = format!("{},{}", url("a"), url("b"));
    let s = Secrate::new(&both);
    s.init();
    fs::write(path("wo"), "write only\n").unwrap();
    s.ok(&[
        "key",
        "add",
        "--write-only",
        "--new-passphrase-file",
        path("wo").to_str().unwrap(),
        "--kdf-work-factor",
        "10",
    ]);
    let list = s.ok(&["key", "list"]);
    let readers: Vec<String> = list
        .lines()
        .filter(|l| l.contains(" full "))
        .filter_map(|l| l.split_whitespace().find(|w| w.len() == 16))
        .map(str::to_string)
        .collect();
    assert_eq!(readers.len(), 2, "{list}");
    fs::create_dir_all(path("a/keys-removed")).unwrap();
    for id in &readers {
        fs::remove_file(path("a/keys").join(id)).unwrap();
        fs::write(path("a/keys-removed").join(id), b"forged").unwrap();
    }
    let o = s.run(&["sync"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(!stdout(&o).contains("deleted keys/"), "{}", stdout(&o));
    assert!(stdout(&o).contains("not deleted"), "{}", stdout(&o));
    for id in &readers {
        assert!(path("b/keys").join(id).exists(), "{id}");
    }
    s.ok(&["snapshots"]);
}

#[test]
fn keys_of_another_repository_are_marked_and_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let url = |n: &str| format!("file://{}", dir.path().join(n).display());
    let s = Secrate::new(&url("repo"));
    s.init();
    // Another repository under the same passphrase; its passphrase key
    // copied in under a name listed first (tried first).
    let other = Secrate::new(&url("other"));
    other.init();
    let theirs = other.ok(&["key", "list"]);
    let their_id = theirs
        .lines()
        .find(|l| l.starts_with('*'))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_string();
    let foreign = "0000000000000000";
    fs::copy(
        dir.path().join("other/keys").join(&their_id),
        dir.path().join("repo/keys").join(foreign),
    )
    .unwrap();
    let list = s.ok(&["key", "list"]);
    let line = list.lines().find(|l| l.contains(foreign)).unwrap();
    assert!(line.starts_with('!'), "{list}");
    assert!(list.contains("another repository"), "{list}");

    // Remove the recovery key: the passphrase in use is still left.
    let recovery = list
        .lines()
        .find(|l| l.contains("recovery"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    s.ok(&["key", "remove", &recovery]);
    // The key in use is the last one that reads this repository: the other
    // repository's key does not count as one left.
    let mine = list
        .lines()
        .find(|l| l.starts_with('*'))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_string();
    let o = s.run(&["key", "remove", &mine]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("last key that can read"),
        "{}",
        stderr(&o)
    );
    s.ok(&["snapshots"]);
}

#[test]
fn a_set_of_two_replicas_goes_back_to_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n);
    let url = |n: &str| format!("file://{}", path(n).display());
    let both = format!("{},{}", url("a"), url("b"));
    let s = Secrate::new(&both);
    s.init();
    let src = path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f.txt"), b"kept on one store").unwrap();
    s.ok(&["backup", "-q", src.to_str().unwrap()]);
    let by_a = Secrate::new(&url("a"));

    // Misuse: one clear sentence, nothing changed.
    let o = by_a.run(&["sync", "--leave-out", &url("elsewhere")]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is not one of this repository's stores"),
        "{}",
        stderr(&o)
    );
    let o = by_a.run(&["sync", "--leave-out", &url("a"), "--leave-out", &url("b")]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("keep at least one"), "{}", stderr(&o));

    // Store a misses a snapshot only b holds: a cannot be the one left.
    let snap = fs::read_dir(path("b/snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    fs::remove_file(path("a/snapshots").join(&snap)).unwrap();
    let o = by_a.run(&["sync", "--leave-out", &url("b")]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("run `secrate sync` first"),
        "{}",
        stderr(&o)
    );
    assert!(path("a/stores").exists() && path("b/stores").exists());

    // Dry run changes nothing; then the real thing.
    let out = by_a.ok(&["sync"]);
    assert!(out.contains("every store holds every object"), "{out}");
    let out = by_a.ok(&["sync", "--dry-run", "--leave-out", &url("b")]);
    assert!(out.contains("would be now on one store"), "{out}");
    assert!(path("a/stores").exists() && path("b/stores").exists());
    let out = by_a.ok(&["sync", "--leave-out", &url("b")]);
    assert!(out.contains("now on one store"), "{out}");
    assert!(!path("a/stores").exists());
    assert!(!path("b/stores").exists());

    // Store b gone for good: the one URL opens store a alone, which takes
    // backups (a set with a replica gone would refuse the writes).
    fs::remove_dir_all(path("b")).unwrap();
    let out = by_a.ok(&["sync"]);
    assert!(out.contains("is a single store"), "{out}");
    fs::write(src.join("g.txt"), b"after").unwrap();
    by_a.ok(&["backup", "-q", src.to_str().unwrap()]);
    by_a.ok(&["check"]);
    let list = by_a.ok(&["snapshots"]);
    assert!(list.contains("2 snapshots"), "{list}");
}

#[test]
fn three_replicas_go_to_two_and_erasure_coding_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = |n: &str| format!("file://{}", dir.path().join(n).display());
    let three = format!("{},{},{}", url("a"), url("b"), url("c"));
    Secrate::new(&three).init();
    let by_c = Secrate::new(&url("c"));
    let out = by_c.ok(&["sync", "--leave-out", &url("b")]);
    assert!(out.contains("now on 2 replicas"), "{out}");
    // Either store that stays names the two that stay.
    for n in ["a", "c"] {
        let st = open_store(&url(n)).read_layout().unwrap().unwrap();
        assert_eq!(st.urls, vec![url("a"), url("c")]);
    }
    Secrate::new(&url("a")).ok(&["snapshots"]);

    let ec = format!("{},{},{}", url("x"), url("y"), url("z"));
    let s = Secrate::new(&ec);
    s.ok(&["--ec", "2+1", "init", "--kdf-work-factor", "10"]);
    let o = Secrate::new(&url("x")).run(&["sync", "--leave-out", &url("z")]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("erasure-coded"), "{}", stderr(&o));
}

/// Someone who can write to the first store only puts back a removed key
/// there with garbage in place of its removal record: the good records on
/// the other stores still hold, and the leaked passphrase opens nothing.
/// (Before, only the first store's copy of a record was read. Found by
/// review.)
#[test]
fn garbage_under_a_removal_record_in_the_first_store_brings_no_key_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n);
    let url = |n: &str| format!("file://{}", path(n).display());
    let all = format!("{},{},{}", url("a"), url("b"), url("c"));
    let s = Secrate::new(&all);
    s.init();
    let leaked = "a passphrase that leaked";
    let id = add_passphrase(&s, &path("pass"), leaked);
    let key = format!("keys/{id}");
    let old = fs::read(path("a").join(&key)).unwrap();
    s.ok(&["key", "remove", &id]);
    fs::write(path("a").join(&key), &old).unwrap();
    let rec = path("a").join(format!("keys-removed/{id}"));
    let len = fs::metadata(&rec).unwrap().len() as usize;
    fs::write(&rec, vec![7u8; len]).unwrap();
    let o = with_passphrase(&all, leaked).run(&["snapshots"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stderr(&o).contains("was removed"), "{}", stderr(&o));
}

/// A set given with one URL misspelt (a directory that does not exist, or
/// an empty one): the read-only commands work from the other replica and
/// say so once on stderr, naming the store and why (they were silent);
/// `check` reports it and exits 1.
#[test]
fn a_misspelt_replica_is_named_once_by_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n);
    let url = |n: &str| format!("file://{}", path(n).display());
    let s = Secrate::new(&format!("{},{}", url("a"), url("b")));
    s.init();
    let src = path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"content").unwrap();
    s.ok(&["backup", src.to_str().unwrap()]);
    fs::create_dir(path("empty")).unwrap();
    for (typo, why) in [
        ("typo", "its directory does not exist"),
        ("empty", "it holds no copy of this repository's `config`"),
    ] {
        let s = Secrate::new(&format!("{},{}", url("a"), url(typo)));
        let dst = path(&format!("restored-{typo}"));
        for args in [
            &["snapshots"][..],
            &["ls", "latest"],
            &["cat", "latest", "f"],
            &["restore", "latest", dst.to_str().unwrap()],
        ] {
            let o = s.run(args);
            let e = stderr(&o);
            assert!(o.status.success(), "{args:?}: {e}");
            let warning = format!("warning: the store {} is not read ({why}", url(typo));
            assert!(e.starts_with(&warning), "{args:?}: {e}");
            assert_eq!(e.lines().count(), 1, "{args:?}: {e}");
        }
        assert_eq!(fs::read(dst.join("f")).unwrap(), b"content");
        let o = s.run(&["check"]);
        assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
        assert!(
            stdout(&o).contains(&format!("error: store {}", url(typo))),
            "{}",
            stdout(&o)
        );
    }
    // Both stores there: not a word.
    let o = s.run(&["snapshots"]);
    assert!(o.status.success());
    assert_eq!(stderr(&o), "");
    assert!(!path("typo").exists(), "a read made the misspelt store");
}

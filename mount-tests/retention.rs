//! The mount's own retention for its automatic snapshots
//! (`secrate mount --retention`), on `file://` and on the S3 server
//! scripts/test.sh starts: with `last=3` and a snapshot every second, after
//! six changes exactly the three newest automatic snapshots remain (the
//! newest always among them), a backup's snapshot is never touched, and
//! `.history` and `secrate snapshots` agree; with `none` every snapshot
//! stays. A mount with retention prunes by itself, and a file open in
//! `.history` reads on through that prune.
//!
//! Every change is one atomic operation (a symlink created), so each seal
//! holds exactly one more change and the expected snapshots are exact.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;
use support::*;

fn status(s: &Secrate, mnt: &Path) -> serde_json::Value {
    serde_json::from_str(&s.ok(&["status", mnt.to_str().unwrap(), "--json"])).unwrap()
}

/// Snapshots in the store: (id, origin), oldest first.
fn snapshots(s: &Secrate) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["snapshots", "--json"])).unwrap();
    let mut v: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["time_ns"].as_i64().unwrap(),
                x["id"].as_str().unwrap().to_string(),
                x["origin"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, id, o)| (id, o)).collect()
}

/// Make change `i` (one atomic operation) and wait until the automatic
/// snapshot holding it is uploaded; returns its id.
fn change_and_wait(s: &Secrate, m: &Mount, i: usize, prev: &str) -> String {
    std::os::unix::fs::symlink(format!("change {i}"), m.path(&format!("step-{i}"))).unwrap();
    let mut id = String::new();
    poll_until(
        &format!("the automatic snapshot of change {i}"),
        Duration::from_secs(60),
        || {
            let st = status(s, &m.mnt);
            id = st["last_snapshot"].as_str().unwrap_or("").to_string();
            id != prev && st["last_snapshot_uploaded"] == true && st["dirty"] == false
        },
    );
    id
}

/// The steps a snapshot directory holds.
fn steps(dir: &Path) -> Vec<usize> {
    let mut v: Vec<usize> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_prefix("step-").map(|k| k.parse().unwrap())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn mount_retention_keeps_what_the_policy_says() {
    if !fuse_ready("mount_retention_keeps_what_the_policy_says") {
        return;
    }
    let help = Secrate::new("file:///nonexistent").ok(&["mount", "--help"]);
    assert!(
        help.contains("within=1h,hourly=48,daily=30,weekly=52") && help.contains("none"),
        "mount --help names the default policy and `none`:\n{help}"
    );
    for store in stores("mount-retention") {
        eprintln!("== {} store", store.label);
        let work = tempfile::tempdir().unwrap();
        let s = Secrate::new(&store.url);
        s.init();
        let src = work.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("backed-up"), b"by secrate backup").unwrap();
        s.ok(&["backup", "-q", src.to_str().unwrap()]);
        let backup = snapshots(&s);
        assert_eq!(backup.len(), 1);

        let mnt = work.path().join("mnt");
        let cache = work.path().join("cache");
        let policy = ["--snapshot-interval", "1", "--retention", "last=3"];
        let mut m = Mount::new(&s, &mnt, &cache, &policy);
        let mut made = Vec::new();
        let mut prev = String::new();
        for i in 0..6 {
            prev = change_and_wait(&s, &m, i, &prev);
            made.push(prev.clone());
        }
        // Retention counts uploaded snapshots, so it settles a tick after
        // the last upload.
        let want: Vec<(String, String)> = backup
            .iter()
            .cloned()
            .chain(made[3..].iter().map(|id| (id.clone(), "mount".into())))
            .collect();
        poll_until(
            "retention to keep the three newest",
            Duration::from_secs(30),
            || snapshots(&s) == want,
        );
        // And stays there: nothing more goes, the newest never.
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(snapshots(&s), want, "{}", store.label);
        let names = m.history();
        assert_eq!(names.len(), 4, "{}: .history: {names:?}", store.label);
        let h = m.path(".history");
        assert_eq!(
            fs::read(h.join(&names[0]).join("backed-up")).unwrap(),
            b"by secrate backup"
        );
        assert_eq!(steps(&h.join(&names[1])), vec![0, 1, 2, 3]);
        assert_eq!(steps(&h.join(&names[2])), vec![0, 1, 2, 3, 4]);
        assert_eq!(steps(&h.join(&names[3])), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(m.latest(), names[3]);
        m.umount();
        assert!(
            m.log().contains("retention: forgot"),
            "the log says what retention did:\n{}",
            m.log()
        );
        assert_eq!(snapshots(&s), want, "{}: after the unmount", store.label);

        // `none`: every automatic snapshot stays.
        let policy = ["--snapshot-interval", "1", "--retention", "none"];
        let mut m = Mount::new(&s, &mnt, &cache, &policy);
        let mut all = want.clone();
        for i in 6..10 {
            prev = change_and_wait(&s, &m, i, &prev);
            all.push((prev.clone(), "mount".into()));
        }
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(snapshots(&s), all, "{}: none keeps all", store.label);
        assert_eq!(m.history().len(), 8);
        m.umount();
        assert_eq!(snapshots(&s), all, "{}: after the unmount", store.label);
        s.ok(&["check", "-q"]);
    }
}

/// Write `data` to `p` and make it durable.
fn put(p: &Path, data: &[u8]) {
    write_synced(p, data);
}

/// A mount with retention prunes by itself (`--prune-interval`): the data
/// only forgotten snapshots used leaves the store, while every byte the
/// live tree and `.history` show stays readable from the store (the
/// staged copies are evicted by a small `--cache-size`), a content whose
/// blobs were pruned can be written again, `check --read-data` is clean,
/// and a fresh cache sees the same tree. Before, a mount never pruned:
/// its store grew with every seal until it was unmounted and `secrate
/// prune` ran.
#[test]
fn a_mount_prunes_what_its_retention_forgot() {
    if !fuse_ready("a_mount_prunes_what_its_retention_forgot") {
        return;
    }
    const MIB: usize = 1 << 20;
    for store in stores("mount-prune") {
        eprintln!("== {} store", store.label);
        let work = tempfile::tempdir().unwrap();
        let s = Secrate::new(&store.url);
        s.init();
        let mnt = work.path().join("mnt");
        let opts = [
            "--snapshot-interval",
            "1",
            "--retention",
            "last=2",
            "--prune-interval",
            "1",
            "--cache-size",
            "1M",
        ];
        let mut m = Mount::new(&s, &mnt, &work.path().join("cache"), &opts);
        let keep = pseudo_random(1, 3 * MIB);
        put(&m.path("keep"), &keep);
        let version = |i: u64| pseudo_random(100 + i, 3 * MIB);
        let mut prev = String::new();
        for i in 0..5 {
            put(&m.path("churn"), &version(i));
            poll_until(
                &format!("the snapshot of version {i}"),
                Duration::from_secs(60),
                || {
                    let st = status(&s, &m.mnt);
                    let id = st["last_snapshot"].as_str().unwrap_or("").to_string();
                    let done =
                        id != prev && st["last_snapshot_uploaded"] == true && st["dirty"] == false;
                    if done {
                        prev = id;
                    }
                    done
                },
            );
        }
        // Without a prune the store holds `keep` and five versions (18
        // MiB); with it, `keep` and the two versions kept (9 MiB).
        let mut last = serde_json::Value::Null;
        poll_until(
            "a prune down to what is kept",
            Duration::from_secs(60),
            || {
                last = status(&s, &m.mnt)["last_prune"].clone();
                last["bytes_after"]
                    .as_u64()
                    .is_some_and(|b| b < (11 * MIB) as u64)
            },
        );
        eprintln!("  last prune: {last}");
        assert!(m.log().contains("prune: "), "{}", m.log());
        assert!(fs::read(m.path("keep")).unwrap() == keep);
        assert!(fs::read(m.path("churn")).unwrap() == version(4));
        let names = m.history();
        assert_eq!(names.len(), 2, "{names:?}");
        let h = m.path(".history");
        assert!(fs::read(h.join(&names[0]).join("churn")).unwrap() == version(3));
        assert!(fs::read(h.join(&names[1]).join("churn")).unwrap() == version(4));
        assert!(fs::read(h.join(&names[0]).join("keep")).unwrap() == keep);
        // `secrate prune` beside the mount says why not and what does.
        let o = s.run(&["prune"]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("prunes by itself"), "{}", stderr(&o));
        // A content whose blobs were pruned is stored again, not named.
        put(&m.path("again"), &version(0));
        m.snapshot();
        m.umount();
        s.ok(&["check", "--read-data"]);
        // What the store holds, counted by listing it: `keep`, two
        // versions, `again` (12 MiB), not the 21 MiB written.
        let stats: serde_json::Value = serde_json::from_str(&s.ok(&["stats", "--json"])).unwrap();
        let stored = stats["stored_bytes"].as_u64().unwrap();
        assert!(stored < (13 * MIB) as u64, "{stats}");

        let fresh = work.path().join("fresh");
        let mut m = Mount::new(&s, &mnt, &fresh, &[]);
        assert!(fs::read(m.path("keep")).unwrap() == keep);
        assert!(fs::read(m.path("churn")).unwrap() == version(4));
        assert!(fs::read(m.path("again")).unwrap() == version(0));
        m.umount();
    }
}

/// A prune that refuses (a backup's pack lost: the repository is damaged)
/// is said by `status` (`PRUNE FAILED`, `prune_error`) and stops nothing:
/// the mount seals, uploads and unmounts as before.
#[test]
fn a_mount_whose_prune_refuses_says_so_and_goes_on() {
    if !fuse_ready("a_mount_whose_prune_refuses_says_so_and_goes_on") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let s = file_repo(work.path());
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), pseudo_random(7, 300_000)).unwrap();
    s.ok(&["backup", "-q", src.to_str().unwrap()]);
    // The backup's biggest pack (its data) is lost.
    let packs = work.path().join("store/packs");
    let biggest = fs::read_dir(&packs)
        .unwrap()
        .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    fs::remove_file(&biggest).unwrap();
    let opts = [
        "--snapshot-interval",
        "1",
        "--retention",
        "last=1",
        "--prune-interval",
        "1",
    ];
    let mut m = Mount::in_dir(&s, work.path(), &opts);
    let mnt = m.mnt.to_str().unwrap().to_string();
    poll_until("the prune to fail", Duration::from_secs(30), || {
        status(&s, &m.mnt)["prune_error"].is_string()
    });
    let st = status(&s, &m.mnt);
    assert!(
        st["prune_error"].as_str().unwrap().contains("damaged"),
        "{st}"
    );
    let text = s.ok(&["status", &mnt]);
    assert!(text.contains("PRUNE FAILED"), "{text}");
    put(&m.path("after"), b"still works");
    m.snapshot();
    m.umount();
    assert!(m.log().contains("warning: prune"), "{}", m.log());
    let m = Mount::in_dir(&s, work.path(), &[]);
    assert_eq!(fs::read(m.path("after")).unwrap(), b"still works");
    drop(m);
}

/// Found by review: a file open in `.history` (a `cp` out of an old
/// snapshot) read EIO once retention forgot its snapshot and the mount
/// pruned, while it was still open. What the kernel still holds of
/// `.history` is kept until it lets go; the next prune takes it.
#[test]
fn a_file_open_in_history_reads_on_through_a_prune() {
    if !fuse_ready("a_file_open_in_history_reads_on_through_a_prune") {
        return;
    }
    use std::os::unix::fs::FileExt;
    const MIB: usize = 1 << 20;
    for store in stores("mount-prune-open") {
        eprintln!("== {} store", store.label);
        let work = tempfile::tempdir().unwrap();
        let s = Secrate::new(&store.url);
        s.init();
        let opts = [
            "--snapshot-interval",
            "1",
            "--retention",
            "last=1",
            "--prune-interval",
            "1",
            "--cache-size",
            "1M",
        ];
        let mnt = work.path().join("mnt");
        let mut m = Mount::new(&s, &mnt, &work.path().join("cache"), &opts);
        let old = pseudo_random(7, 3 * MIB);
        put(&m.path("big"), &old);
        poll_until("the first snapshot", Duration::from_secs(60), || {
            let st = status(&s, &m.mnt);
            st["last_snapshot_uploaded"] == true && st["dirty"] == false && m.history().len() == 1
        });
        let first = m.history()[0].clone();
        let open = fs::File::open(m.path(".history").join(&first).join("big")).unwrap();
        put(&m.path("big"), &pseudo_random(8, 3 * MIB));
        // Retention forgets the first snapshot, then the mount prunes.
        poll_until(
            "a prune after the first snapshot went",
            Duration::from_secs(60),
            || {
                let log = m.log();
                log.rfind("retention: forgot")
                    .is_some_and(|at| log[at..].contains(" prune: "))
            },
        );
        assert!(!m.history().contains(&first));
        let mut got = vec![0u8; old.len()];
        open.read_exact_at(&mut got, 0)
            .expect("the open file reads on after the prune");
        assert!(got == old);
        drop(open);
        m.umount();
        s.ok(&["check", "--read-data"]);
    }
}

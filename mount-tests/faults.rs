//! Store faults through the fault-injecting store layer (`SECRATE_FAULTS`,
//! src/store/faults.rs): with 20 % of store operations failing and added
//! latency every flush completes and nothing is lost; with the store
//! unreachable the mount keeps serving reads and accepting writes, `status`
//! shows the backlog and the error, and the upload resumes by itself when
//! the store returns.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::fs;
use std::time::{Duration, Instant};

use common::*;
use support::*;

fn data(i: usize) -> Vec<u8> {
    let mut v = vec![0u8; 50_000 + i * 37_000];
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for b in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    v
}

fn with_faults(s: &Secrate, faults: &str) -> Secrate {
    let mut f = same(s);
    f.envs.push(("SECRATE_FAULTS".into(), faults.into()));
    f
}

fn status(s: &Secrate, mnt: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&s.ok(&["status", mnt.to_str().unwrap(), "--json"])).unwrap()
}

#[test]
fn flaky_store_loses_nothing() {
    if !fuse_ready("flaky_store_loses_nothing") {
        return;
    }
    for store in stores("mount-flaky") {
        eprintln!("== {} store", store.label);
        let work = tempfile::tempdir().unwrap();
        let s = Secrate::new(&store.url);
        s.init();
        let flaky = with_faults(&s, "error_rate=0.2,latency_ms=20");

        // A batch backup through the same faults.
        let src = work.path().join("src");
        fs::create_dir_all(&src).unwrap();
        for i in 0..20 {
            fs::write(src.join(format!("b{i}")), data(100 + i)).unwrap();
        }
        flaky.ok(&["backup", "-q", src.to_str().unwrap()]);

        // Through the mount: two snapshots and the unmount, all flushed.
        let mut m = Mount::new(
            &flaky,
            &work.path().join("mnt"),
            &work.path().join("c1"),
            &[],
        );
        for i in 0..30 {
            fs::write(m.path(&format!("f{i}")), data(i)).unwrap();
        }
        m.snapshot();
        for i in 30..40 {
            fs::write(m.path(&format!("f{i}")), data(i)).unwrap();
        }
        fs::remove_file(m.path("f3")).unwrap();
        m.snapshot();
        m.umount();

        // Without faults: everything is there and intact.
        assert!(s.ok(&["check", "--read-data"]).contains("no errors"));
        let m = Mount::new(
            &s,
            &work.path().join("mnt"),
            &work.path().join("c2"),
            &["--read-only"],
        );
        for i in 0..40 {
            match fs::read(m.path(&format!("f{i}"))) {
                Ok(b) => assert!(i != 3 && b == data(i), "f{i}"),
                Err(e) => assert!(
                    i == 3 && e.kind() == std::io::ErrorKind::NotFound,
                    "f{i}: {e}"
                ),
            }
        }
        assert_eq!(m.history().len(), 3, "the backup and two snapshots");
        drop(m);
        let dst = work.path().join("dst");
        s.ok(&["restore", "latest", dst.to_str().unwrap()]);
        for i in 0..20 {
            assert!(
                fs::read(dst.join(format!("b{i}"))).unwrap() == data(100 + i),
                "b{i}"
            );
        }
    }
}

#[test]
fn store_down_then_back() {
    if !fuse_ready("store_down_then_back") {
        return;
    }
    let down_secs: u64 = std::env::var("SECRATE_DOWN_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    for store in stores("mount-down") {
        eprintln!("== {} store", store.label);
        let work = tempfile::tempdir().unwrap();
        let s = Secrate::new(&store.url);
        s.init();
        let down = work.path().join("store-is-down");
        let faulty = with_faults(&s, &format!("down_file={}", down.display()));
        let mut m = Mount::new(
            &faulty,
            &work.path().join("mnt"),
            &work.path().join("cache"),
            &[],
        );
        for i in 0..5 {
            fs::write(m.path(&format!("before{i}")), data(i)).unwrap();
        }
        m.snapshot();

        // The store goes away.
        fs::write(&down, b"").unwrap();
        let t = Instant::now();
        for i in 0..10 {
            fs::write(m.path(&format!("during{i}")), data(10 + i)).unwrap();
        }
        for i in 0..5 {
            assert!(fs::read(m.path(&format!("before{i}"))).unwrap() == data(i));
        }
        faulty.ok(&["snapshot", "--no-wait", m.mnt.to_str().unwrap()]);
        poll_until(
            "status to show the backlog and the error",
            Duration::from_secs(60),
            || {
                let st = status(&faulty, &m.mnt);
                st["pending_objects"].as_u64().unwrap_or(0) > 0 && !st["last_error"].is_null()
            },
        );
        let st = status(&faulty, &m.mnt);
        eprintln!(
            "store down: {} objects / {} bytes waiting; {}",
            st["pending_objects"], st["pending_bytes"], st["last_error"]
        );
        // Down for a while; the mount keeps working.
        while t.elapsed() < Duration::from_secs(down_secs) {
            fs::write(m.path("still-writable"), data(99)).unwrap();
            assert!(fs::read(m.path("during0")).unwrap() == data(10));
            std::thread::sleep(Duration::from_millis(500));
        }

        // Back: the upload resumes by itself.
        fs::remove_file(&down).unwrap();
        poll_until("the backlog to drain", Duration::from_secs(180), || {
            status(&faulty, &m.mnt)["pending_objects"].as_u64() == Some(0)
        });
        m.umount();

        let m = Mount::new(
            &s,
            &work.path().join("mnt"),
            &work.path().join("fresh"),
            &["--read-only"],
        );
        for i in 0..10 {
            assert!(
                fs::read(m.path(&format!("during{i}"))).unwrap() == data(10 + i),
                "during{i}"
            );
        }
        assert!(fs::read(m.path("still-writable")).unwrap() == data(99));
        drop(m);
        assert!(s.ok(&["check", "--read-data"]).contains("no errors"));
    }
}

/// The store really goes away: the test's own s3s-fs process is killed
/// (SIGKILL) and stays stopped for `SECRATE_OUTAGE_SECS` (60 in CI), then
/// starts again on the same port and root directory.
#[test]
fn s3_server_stopped_then_back() {
    if !fuse_ready("s3_server_stopped_then_back") {
        return;
    }
    let Some(bin) = S3Server::binary("s3_server_stopped_then_back") else {
        return;
    };
    let outage_secs: u64 = std::env::var("SECRATE_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let work = tempfile::tempdir().unwrap();
    let mut server = S3Server::start(&bin, work.path(), "outage");
    let mut s = Secrate::new("s3://outage/repo");
    s.envs.extend(server.envs());
    s.init();
    let mnt = work.path().join("mnt");
    let mut m = Mount::new(&s, &mnt, &work.path().join("cache"), &[]);
    for i in 0..6 {
        fs::write(m.path(&format!("before{i}")), data(i)).unwrap();
    }
    fs::create_dir(m.path("dir")).unwrap();
    fs::write(m.path("dir/moved"), data(40)).unwrap();
    fs::write(m.path("doomed"), data(41)).unwrap();
    m.snapshot();
    let f = fs::File::open(m.path("before0")).unwrap();
    f.sync_all().unwrap();
    drop(f);

    // The server dies.
    server.kill();
    let t = Instant::now();
    eprintln!("s3s-fs killed; down for {outage_secs} s");
    for i in 0..6 {
        assert!(
            fs::read(m.path(&format!("before{i}"))).unwrap() == data(i),
            "before{i}"
        );
    }
    for i in 0..8 {
        let p = m.path(&format!("during{i}"));
        fs::write(&p, data(10 + i)).unwrap();
        fs::File::open(&p).unwrap().sync_all().unwrap();
    }
    fs::rename(m.path("dir/moved"), m.path("renamed")).unwrap();
    fs::remove_file(m.path("doomed")).unwrap();
    fs::create_dir(m.path("made-during")).unwrap();
    let mnt_s = m.mnt.to_str().unwrap().to_string();
    s.ok(&["snapshot", "--no-wait", &mnt_s]);
    poll_until(
        "status to show the backlog and the store error",
        Duration::from_secs(90),
        || {
            let st = status(&s, &m.mnt);
            st["pending_objects"].as_u64().unwrap_or(0) > 0 && !st["last_error"].is_null()
        },
    );
    let st = status(&s, &m.mnt);
    eprintln!(
        "after {:.0} s down: {} objects / {} bytes waiting; last error: {}",
        t.elapsed().as_secs_f64(),
        st["pending_objects"],
        st["pending_bytes"],
        st["last_error"]
    );
    // Down for the whole outage; the mount keeps working all along.
    let mut round = 0;
    while t.elapsed() < Duration::from_secs(outage_secs) {
        let p = m.path(&format!("made-during/f{}", round % 5));
        fs::write(&p, data(20 + round % 5)).unwrap();
        fs::File::open(&p).unwrap().sync_all().unwrap();
        assert!(fs::read(m.path("during3")).unwrap() == data(13));
        assert!(fs::read(m.path("renamed")).unwrap() == data(40));
        round += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    let st = status(&s, &m.mnt);
    assert!(
        st["pending_objects"].as_u64().unwrap_or(0) > 0 && !st["last_error"].is_null(),
        "at the end of the outage status must still show the backlog and the error: {st}"
    );
    assert!(
        !server.running(),
        "the S3 server must stay stopped during the outage"
    );

    // The server is back: the backlog drains by itself.
    server.resume();
    let back = Instant::now();
    poll_until(
        "the backlog to drain by itself",
        Duration::from_secs(180),
        || status(&s, &m.mnt)["pending_objects"].as_u64() == Some(0),
    );
    eprintln!(
        "outage {:.0} s; backlog drained {:.1} s after the server came back",
        back.duration_since(t).as_secs_f64(),
        back.elapsed().as_secs_f64()
    );
    m.umount();

    let m = Mount::new(&s, &mnt, &work.path().join("fresh"), &["--read-only"]);
    for i in 0..6 {
        assert!(
            fs::read(m.path(&format!("before{i}"))).unwrap() == data(i),
            "before{i}"
        );
    }
    for i in 0..8 {
        assert!(
            fs::read(m.path(&format!("during{i}"))).unwrap() == data(10 + i),
            "during{i}"
        );
    }
    for k in 0..5.min(round) {
        assert!(
            fs::read(m.path(&format!("made-during/f{k}"))).unwrap() == data(20 + k),
            "made-during/f{k}"
        );
    }
    assert!(fs::read(m.path("renamed")).unwrap() == data(40));
    assert!(!m.path("dir/moved").exists() && !m.path("doomed").exists());
    assert_eq!(m.history().len(), 3, "two snapshots and the unmount's");
    drop(m);
    assert!(s.ok(&["check", "--read-data"]).contains("no errors"));
}

/// Is a thread of `pid` named `name` blocked in a futex wait (a lock)?
fn waiting_on_a_lock(pid: u32, name: &str) -> bool {
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    rd.flatten().any(|t| {
        fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name)
            && fs::read_to_string(t.path().join("syscall"))
                .is_ok_and(|s| s.split_whitespace().next() == Some("202"))
    })
}

/// A copy-up that waits for the store (here: reads of packs failing, ~20 s
/// of retries) must not stop the rest of the mount. It ran under the
/// barrier's read side; a seal queued for the write side then made every
/// other change (a create in another directory here) wait behind it, as
/// std's `RwLock` queues new readers behind a waiting writer (found by
/// review). The create must finish while the copy-up still waits.
#[test]
fn a_slow_copy_up_does_not_stop_other_changes() {
    if !fuse_ready("a_slow_copy_up_does_not_stop_other_changes") {
        return;
    }
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let store = &stores("mount-slow-copy-up")[0];
    let work = tempfile::tempdir().unwrap();
    let s = Secrate::new(&store.url);
    s.init();
    let down = work.path().join("packs-down");
    let faulty = with_faults(&s, &format!("down_file={},reads_of=packs", down.display()));
    let (mnt, cache) = (work.path().join("mnt"), work.path().join("cache"));
    let extra = [
        "--cache-size",
        "1M",
        "--snapshot-interval",
        "1",
        "--retention",
        "none",
    ];
    let mut m = Mount::new(&faulty, &mnt, &cache, &extra);
    let old = data(200);
    let big = pseudo_random(5, 6 << 20);
    write_synced(&m.path("big"), &big);
    fs::create_dir(m.path("other")).unwrap();
    m.snapshot();
    let staged = || staged_bytes(&cache);
    poll_until("big's copy to be evicted", Duration::from_secs(60), || {
        staged() < 1 << 20
    });
    let sealed = m.history().len();

    // A write into big: its copy-up cannot fetch a chunk.
    fs::write(&down, b"").unwrap();
    let wrote = Arc::new(AtomicBool::new(false));
    let writer = {
        let (p, wrote) = (m.path("big"), wrote.clone());
        std::thread::spawn(move || {
            let f = fs::OpenOptions::new().write(true).open(p).unwrap();
            let r = f.write_all_at(b"NEW", 10).and_then(|()| f.sync_all());
            wrote.store(true, Ordering::SeqCst);
            r
        })
    };
    let copying = || {
        fs::read_dir(cache.join("staged")).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        })
    };
    poll_until("the copy-up to start", Duration::from_secs(30), copying);

    // A seal (the seal thread's: `secrate snapshot` first syncs the mount,
    // and so waits for the write itself), queued behind the copy-up if the
    // copy-up holds the barrier.
    let pid = m.pid.expect("the mount's pid");
    fs::write(m.path("other/dirty"), b"something to seal").unwrap();
    poll_until("the seal to run or wait", Duration::from_secs(30), || {
        waiting_on_a_lock(pid, "secrate-seal") || m.history().len() > sealed
    });

    // Another change, elsewhere.
    let created = Arc::new(AtomicBool::new(false));
    let creator = {
        let (p, created, old) = (m.path("other/new"), created.clone(), old.clone());
        std::thread::spawn(move || {
            fs::write(p, &old).unwrap();
            created.store(true, Ordering::SeqCst);
        })
    };
    poll_until(
        "the create or the copy-up to finish",
        Duration::from_secs(120),
        || created.load(Ordering::SeqCst) || wrote.load(Ordering::SeqCst),
    );
    let copy_up_waiting = !wrote.load(Ordering::SeqCst) && copying();
    let created_first = created.load(Ordering::SeqCst);
    fs::remove_file(&down).unwrap();
    let write = writer.join().unwrap();
    creator.join().unwrap();
    assert!(
        created_first && copy_up_waiting,
        "the create waited for the copy-up (created: {created_first}, copy-up still \
         waiting then: {copy_up_waiting})"
    );

    // Nothing lost: big holds the write, or its old content if the write
    // gave up on the store first.
    let mut want = big.clone();
    if write.is_ok() {
        want[10..13].copy_from_slice(b"NEW");
    }
    assert!(fs::read(m.path("big")).unwrap() == want, "big differs");
    assert_eq!(fs::read(m.path("other/new")).unwrap(), old);
    m.umount();
}

//! Tampering: a flipped byte in every kind of stored object, truncated
//! objects, swapped names and a replayed old index. Each is detected and
//! reported naming the object; wrong bytes never reach a reader; nothing
//! panics.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// Every object of the store, to put back between trials.
fn save(url: &str) -> Vec<(String, Vec<u8>)> {
    store_objects(url)
}

fn put_back(url: &str, saved: &[(String, Vec<u8>)]) {
    let st = open_store(url);
    for dir in [
        "config",
        "keys",
        "index",
        "snapshots",
        "damage",
        "packs",
        "locks",
    ] {
        for o in st.list(dir).unwrap_or_default() {
            st.delete(&o.name).unwrap();
        }
    }
    if st.head("config").unwrap().is_some() {
        st.delete("config").unwrap();
    }
    for (name, bytes) in saved {
        st.put(name, bytes.clone().into()).unwrap();
    }
}

fn names(saved: &[(String, Vec<u8>)], prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = saved
        .iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .map(|(n, _)| n.clone())
        .collect();
    v.sort();
    v
}

fn mutate(url: &str, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
    let st = open_store(url);
    let mut b = st.get(name).unwrap().to_vec();
    f(&mut b);
    st.put(name, b.into()).unwrap();
}

/// What a trial checks after one object was tampered with.
struct Outcome {
    /// Commands and the object names their output must mention.
    what: String,
}

impl Outcome {
    fn no_panic(&self, o: &std::process::Output) {
        let err = stderr(o);
        assert!(
            !err.contains("panicked") && o.status.code().is_some(),
            "{}: secrate panicked or died: {err}",
            self.what
        );
    }

    /// `cat` of the big file: the exact bytes, or a failure whose output is
    /// a prefix of them; never different bytes.
    fn cat_never_lies(&self, s: &Secrate, path: &str, truth: &[u8]) {
        let o = s.run(&["cat", "latest", path]);
        self.no_panic(&o);
        if o.status.success() {
            assert!(
                o.stdout == truth,
                "{}: cat succeeded with wrong bytes",
                self.what
            );
        } else {
            assert!(
                truth.starts_with(&o.stdout),
                "{}: cat failed after writing bytes that are not the file's",
                self.what
            );
            let err = stderr(&o);
            assert!(
                err.lines().last().unwrap_or("").starts_with("secrate: "),
                "{}: no one-sentence error: {err}",
                self.what
            );
        }
    }

    /// `check` (with or without --read-data) exits 1 and names `object`.
    fn check_names(&self, s: &Secrate, read_data: bool, object: &str) {
        let args: &[&str] = if read_data {
            &["check", "--read-data"]
        } else {
            &["check"]
        };
        let o = s.run(args);
        self.no_panic(&o);
        let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
        assert_eq!(
            o.status.code(),
            Some(1),
            "{}: {args:?} said: {all}",
            self.what
        );
        assert!(
            all.contains(object),
            "{}: {args:?} does not name {object}: {all}",
            self.what
        );
    }

    /// Every command fails with one sentence naming `object`.
    fn all_fail_naming(&self, s: &Secrate, object: &str) {
        for args in [&["snapshots"][..], &["check"], &["ls", "latest"]] {
            let o = s.run(args);
            self.no_panic(&o);
            let err = stderr(&o);
            assert_ne!(
                o.status.code(),
                Some(0),
                "{}: {args:?} succeeded",
                self.what
            );
            let last = err.lines().last().unwrap_or("");
            assert!(
                last.starts_with("secrate: ") && last.contains(object),
                "{}: {args:?} does not name {object} in one sentence: {err}",
                self.what
            );
        }
    }
}

#[test]
fn tampered_objects_are_named_never_trusted() {
    for store in stores("tamper") {
        eprintln!("== {} store", store.label);
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        fs::create_dir_all(src.join("d")).unwrap();
        let mut big = vec![0u8; 3 << 20];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut big);
        fs::write(src.join("d/big.bin"), &big).unwrap();
        fs::write(src.join("a.txt"), b"first version\n").unwrap();
        let s = Secrate::new(&store.url);
        s.init();
        s.ok(&["backup", "-q", src.to_str().unwrap()]);
        fs::write(src.join("a.txt"), b"second version\n").unwrap();
        s.ok(&["backup", "-q", src.to_str().unwrap()]);
        assert!(s.ok(&["check", "--read-data"]).contains("no errors"));
        let saved = save(&store.url);
        let url = store.url.as_str();
        let flip = |i: usize| {
            move |b: &mut Vec<u8>| {
                let at = i.min(b.len() - 1);
                b[at] ^= 0x20
            }
        };
        let flip_back = |back: usize| {
            move |b: &mut Vec<u8>| {
                let n = b.len();
                b[n - back] ^= 0x20
            }
        };
        let truncate = |b: &mut Vec<u8>| b.truncate(b.len() - 7);

        // config: every command refuses, naming it.
        for (how, f) in [
            ("flip", Box::new(flip(20)) as Box<dyn FnOnce(&mut Vec<u8>)>),
            ("truncate", Box::new(truncate)),
        ] {
            put_back(url, &saved);
            mutate(url, "config", f);
            let t = Outcome {
                what: format!("config {how}"),
            };
            t.all_fail_naming(&s, "config");
        }

        // Key objects: with every way in damaged, one sentence naming one.
        put_back(url, &saved);
        for k in names(&saved, "keys/") {
            mutate(url, &k, flip_back(3));
        }
        Outcome {
            what: "every key object flipped".into(),
        }
        .all_fail_naming(&s, "keys/");

        // Snapshots: reported by name; the other one still lists and reads.
        for sn in names(&saved, "snapshots/") {
            for (how, f) in [
                ("flip", Box::new(flip(60)) as Box<dyn FnOnce(&mut Vec<u8>)>),
                ("truncate", Box::new(truncate)),
            ] {
                put_back(url, &saved);
                mutate(url, &sn, f);
                let t = Outcome {
                    what: format!("{sn} {how}"),
                };
                t.check_names(&s, false, &sn);
                let o = s.run(&["snapshots"]);
                t.no_panic(&o);
                assert!(stderr(&o).contains(&sn), "{}: {}", t.what, stderr(&o));
                t.cat_never_lies(&s, "d/big.bin", &big);
            }
        }

        // Index deltas: reported by name; reads still find every blob from
        // the packs' own headers.
        for ix in names(&saved, "index/") {
            for (how, f) in [
                ("flip", Box::new(flip(60)) as Box<dyn FnOnce(&mut Vec<u8>)>),
                ("truncate", Box::new(truncate)),
            ] {
                put_back(url, &saved);
                mutate(url, &ix, f);
                let t = Outcome {
                    what: format!("{ix} {how}"),
                };
                t.check_names(&s, false, &ix);
                let o = s.run(&["cat", "latest", "d/big.bin"]);
                t.no_panic(&o);
                assert!(
                    o.status.success() && o.stdout == big,
                    "{}: {}",
                    t.what,
                    stderr(&o)
                );
            }
        }

        // Packs: a byte flipped near the start (blob data), in the middle,
        // near the end (the encrypted header), and truncation. check names
        // the pack; a reader gets the right bytes or an error.
        for p in names(&saved, "packs/") {
            let size = saved.iter().find(|(n, _)| *n == p).unwrap().1.len();
            for (how, f) in [
                (
                    "flip at 20",
                    Box::new(flip(20)) as Box<dyn FnOnce(&mut Vec<u8>)>,
                ),
                ("flip in the middle", Box::new(flip(size / 2))),
                ("flip in the header", Box::new(flip_back(40))),
                ("truncate", Box::new(truncate)),
            ] {
                put_back(url, &saved);
                mutate(url, &p, f);
                let t = Outcome {
                    what: format!("{p} {how}"),
                };
                t.check_names(&s, true, &p);
                t.cat_never_lies(&s, "d/big.bin", &big);
                let o = s.run(&["cat", "latest", "a.txt"]);
                t.no_panic(&o);
                assert!(
                    !o.status.success() || o.stdout == b"second version\n",
                    "{}: a.txt read wrong",
                    t.what
                );
            }
        }

        // Swapped names: two packs, two snapshots.
        for prefix in ["packs/", "snapshots/"] {
            put_back(url, &saved);
            let v = names(&saved, prefix);
            let (a, b) = (&v[0], &v[1]);
            let get = |n: &str| saved.iter().find(|(m, _)| m == n).unwrap().1.clone();
            let st = open_store(url);
            st.put(a, get(b).into()).unwrap();
            st.put(b, get(a).into()).unwrap();
            let t = Outcome {
                what: format!("{a} and {b} swapped"),
            };
            t.check_names(&s, true, a);
            t.check_names(&s, true, b);
            t.cat_never_lies(&s, "d/big.bin", &big);
        }
        put_back(url, &saved);
        assert!(s.ok(&["check", "--read-data"]).contains("no errors"));
    }
}

/// A damage record (`damage/<id>`, written by `repair`) flipped, truncated
/// or moved to another name: `check` names it and exits 1, the loss it
/// recorded is still reported, readers never get wrong bytes, a backup still
/// works, and nothing panics.
#[test]
fn tampered_damage_record_is_named() {
    for store in stores("tamper-damage") {
        eprintln!("== {} store", store.label);
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        fs::create_dir_all(&src).unwrap();
        // Over the chunker's 8 MiB maximum: at least two chunks, whatever
        // the random content (3 MiB was one chunk now and then).
        let mut big = vec![0u8; 9 << 20];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut big);
        fs::write(src.join("big.bin"), &big).unwrap();
        let s = Secrate::new(&store.url);
        s.ok(&["init", "--kdf-work-factor", "10", "--pack-size", "1048576"]);
        s.ok(&["backup", "-q", src.to_str().unwrap()]);
        // Lose one data pack; repair records it.
        let url = store.url.as_str();
        let data_pack = {
            use secrate::repo::{Repository, Secret};
            let repo = Repository::open(
                open_store(url),
                &Secret::Passphrase(PASSPHRASE.to_string().into()),
            )
            .unwrap();
            repo.load_index().unwrap();
            let (_, snap) = repo.find_snapshot("latest").unwrap();
            let tree = repo.read_tree(&snap.root).unwrap();
            let chunk = tree.find(b"big.bin").unwrap().chunks()[1].id;
            let ix = repo.index();
            secrate::repo::pack::pack_name(&ix.get(&chunk).unwrap().0.id)
        };
        let st = open_store(url);
        st.delete(&data_pack).unwrap();
        let o = s.run(&["repair"]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let saved = save(url);
        let records = names(&saved, "damage/");
        assert_eq!(records.len(), 1, "{records:?}");
        let rec = &records[0];
        let o = s.run(&["check"]);
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            out.contains("recorded: ") && out.contains("no new damage"),
            "{out}"
        );

        let get = |n: &str| saved.iter().find(|(m, _)| m == n).unwrap().1.clone();
        let other = format!("damage/{}", "ab".repeat(32));
        for how in ["flip", "truncate", "moved"] {
            put_back(url, &saved);
            match how {
                "flip" => mutate(url, rec, |b| b[60] ^= 0x20),
                "truncate" => mutate(url, rec, |b| b.truncate(b.len() - 7)),
                _ => {
                    let st = open_store(url);
                    st.put(&other, get(rec).into()).unwrap();
                    st.delete(rec).unwrap();
                }
            }
            let named = if how == "moved" { &other } else { rec };
            let t = Outcome {
                what: format!("{rec} {how}"),
            };
            t.check_names(&s, false, named);
            let o = s.run(&["check"]);
            let out = String::from_utf8_lossy(&o.stdout).to_string();
            assert!(
                out.contains("damaged: ") && out.contains("big.bin"),
                "{how}: {out}"
            );
            let o = s.run(&["cat", "latest", "big.bin"]);
            t.no_panic(&o);
            assert!(
                !o.status.success() && big.starts_with(&o.stdout),
                "{how}: cat of a file with a lost chunk"
            );
            let o = s.run(&["backup", "-q", src.to_str().unwrap()]);
            t.no_panic(&o);
            assert!(o.status.success(), "{how}: {}", stderr(&o));
            let o = s.run(&["cat", "latest", "big.bin"]);
            assert!(
                o.status.success() && o.stdout == big,
                "{how}: backup did not heal"
            );
        }
    }
}

/// An old index delta replayed into the store after prune deleted the packs
/// it lists: check reports the missing packs, readers and writers look for
/// blobs only where they are, and a backup that needs the pruned content
/// again stores it again instead of trusting the stale index.
#[test]
fn replayed_old_index_is_not_trusted() {
    for store in stores("replay") {
        eprintln!("== {} store", store.label);
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        fs::create_dir_all(&src).unwrap();
        let mut v1 = vec![0u8; 2 << 20];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut v1);
        let mut v2 = vec![0u8; 2 << 20];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut v2);
        let s = Secrate::new(&store.url);
        s.init();
        fs::write(src.join("f.bin"), &v1).unwrap();
        s.ok(&["backup", "-q", src.to_str().unwrap()]);
        let old_index = save(&store.url)
            .into_iter()
            .filter(|(n, _)| n.starts_with("index/"))
            .collect::<Vec<_>>();
        fs::write(src.join("f.bin"), &v2).unwrap();
        s.ok(&["backup", "-q", src.to_str().unwrap()]);
        s.ok(&["forget", "--keep-last", "1", "--prune"]);

        // Replay the old deltas: they list packs prune deleted.
        let st = open_store(&store.url);
        for (n, b) in &old_index {
            st.put(n, b.clone().into()).unwrap();
        }
        let o = s.run(&["check"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stdout).contains("is missing"));
        let o = s.run(&["cat", "latest", "f.bin"]);
        assert!(o.status.success() && o.stdout == v2, "{}", stderr(&o));

        // v1 again: its blobs are gone from the store, though the replayed
        // index lists them; the backup must store them again.
        fs::write(src.join("f.bin"), &v1).unwrap();
        fs::write(src.join("touch"), b"new mtime for the dir").unwrap();
        let o = s.run(&["backup", "-q", src.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("does not hold it"), "{}", stderr(&o));
        let dst = work.path().join("dst");
        s.ok(&["restore", "latest", dst.to_str().unwrap()]);
        assert!(
            fs::read(dst.join("f.bin")).unwrap() == v1,
            "restored f.bin differs"
        );
        assert!(Path::new(&dst.join("touch")).exists());
    }
}

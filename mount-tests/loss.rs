//! Partial loss, the "durable" promise: delete 1 % of the pack objects at
//! random. `secrate check --read-data` names exactly the files (per
//! snapshot) that lost data and exits 1; every other file restores
//! byte-exact; a mount serves every other file and returns EIO for the
//! damaged ones only, in the live tree and in `.history`.
//!
//! The expected damage is computed independently of `check`: from the
//! index (which blobs the deleted packs held) and a walk of every
//! snapshot's trees (which files reference them).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::Path;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use common::*;
use secrate::crypto::{BlobKind, Id};
use secrate::repo::tree::Kind;
use secrate::repo::{Repository, Secret};
use support::*;

const FILES: usize = 240;

/// Content of file `i` in `version`: deterministic, incompressible.
fn content(i: usize, version: u32) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64((i as u64) << 8 | version as u64);
    let len = rng.gen_range(4_000..600_000);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

fn rel(i: usize) -> String {
    format!("d{}/f{i:03}.bin", i % 8)
}

/// Version of file `i` in backup `b` (0 or 1): every seventh file changed.
fn version(i: usize, b: u32) -> u32 {
    if b == 1 && i.is_multiple_of(7) {
        1
    } else {
        0
    }
}

fn open_repo(url: &str) -> Repository {
    let store = secrate::store::Store::open(url, false).unwrap();
    let r = Repository::open(store, &Secret::Passphrase(PASSPHRASE.to_string().into())).unwrap();
    assert!(r.load_index().unwrap().is_empty());
    r
}

/// Every file of a tree: path (from the snapshot root, with a leading /)
/// and the blob ids of its chunks.
fn walk(repo: &Repository, tree: &Id, prefix: &str, out: &mut BTreeMap<String, Vec<Id>>) {
    for e in repo.read_tree(tree).unwrap().entries {
        let path = format!("{prefix}/{}", String::from_utf8_lossy(&e.name));
        match e.kind {
            Kind::Dir => walk(repo, &e.subtree().unwrap(), &path, out),
            Kind::File => {
                out.insert(path, e.chunks().iter().map(|c| c.id).collect());
            }
            _ => {}
        }
    }
}

#[test]
fn lost_packs_damage_only_their_files() {
    if !fuse_ready("lost_packs_damage_only_their_files") {
        return;
    }
    for store in stores("mount-loss") {
        eprintln!("== {} store", store.label);
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        for d in 0..8 {
            fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        }
        let s = Secrate::new(&store.url);
        // Small packs, so that 1 % of them is a few packs.
        s.ok(&["init", "--kdf-work-factor", "10", "--pack-size", "1048576"]);
        for b in 0..2 {
            for i in 0..FILES {
                if b == 0 || version(i, 1) == 1 {
                    fs::write(src.join(rel(i)), content(i, version(i, b))).unwrap();
                }
            }
            s.ok(&["backup", "-q", src.to_str().unwrap()]);
        }
        assert!(s.ok(&["check", "--read-data"]).contains("no errors"));

        // Delete 1 % of the packs (at least two), data packs at random.
        let repo = open_repo(&store.url);
        let (snaps, _) = repo.snapshots().unwrap();
        assert_eq!(snaps.len(), 2);
        let (deleted, lost): (HashSet<Id>, HashSet<Id>) = {
            let ix = repo.index();
            let data: Vec<Id> = ix
                .packs()
                .iter()
                .filter(|p| p.kind == BlobKind::Data)
                .map(|p| p.id)
                .collect();
            let n = (ix.packs().len() / 100).max(2);
            let seed: u64 = rand::random();
            eprintln!(
                "{} packs ({} data); deleting {n} (seed {seed})",
                ix.packs().len(),
                data.len()
            );
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let deleted: HashSet<Id> = data.choose_multiple(&mut rng, n).copied().collect();
            let lost = ix
                .blobs()
                .filter(|(_, l)| deleted.contains(&ix.packs()[l.pack as usize].id))
                .map(|(id, _)| *id)
                .collect();
            (deleted, lost)
        };
        let st = open_store(&store.url);
        for id in &deleted {
            st.delete(&secrate::repo::pack::pack_name(id)).unwrap();
        }

        // Expected damage: (snapshot, path) of every file with a lost chunk.
        let mut expected = BTreeSet::new();
        let mut damaged_in: Vec<HashSet<String>> = Vec::new();
        for (id, snap) in &snaps {
            let mut files = BTreeMap::new();
            walk(&repo, &snap.root, "", &mut files);
            assert_eq!(files.len(), FILES);
            let mut here = HashSet::new();
            for (path, chunks) in files {
                if chunks.iter().any(|c| lost.contains(c)) {
                    expected.insert((id.short(), path.clone()));
                    here.insert(path);
                }
            }
            damaged_in.push(here);
        }
        eprintln!("{} damaged (snapshot, file) pairs expected", expected.len());
        assert!(!expected.is_empty());

        // check --read-data names exactly those.
        let o = s.run(&["check", "--read-data"]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        let mut named = BTreeSet::new();
        for l in out
            .lines()
            .filter_map(|l| l.strip_prefix("damaged: snapshot "))
        {
            let (short, rest) = l.split_once(' ').unwrap();
            let path = rest.split_once("): ").unwrap().1;
            let path = path.rsplit_once(": ").map(|(p, _)| p).unwrap_or(path);
            named.insert((short.to_string(), path.to_string()));
        }
        assert_eq!(named, expected, "check --read-data said:\n{out}");

        // Every other file restores byte-exact, snapshot by snapshot.
        for (b, (id, _)) in snaps.iter().enumerate() {
            let dst = work.path().join(format!("restore-{b}"));
            let o = s.run(&["restore", &id.to_hex(), dst.to_str().unwrap()]);
            let want = if damaged_in[b].is_empty() { 0 } else { 1 };
            assert_eq!(o.status.code(), Some(want), "{}", stderr(&o));
            for i in 0..FILES {
                let p = format!("/{}", rel(i));
                if !damaged_in[b].contains(&p) {
                    assert!(
                        fs::read(dst.join(rel(i))).unwrap() == content(i, version(i, b as u32)),
                        "snapshot {b}: {p} restored wrong"
                    );
                }
            }
        }

        // A mount on a fresh cache: the live tree is the latest snapshot,
        // .history holds both; damaged files give EIO, the rest is exact.
        let mut m = Mount::in_dir(&s, work.path(), &["--read-only"]);
        let hist = m.history();
        assert_eq!(hist.len(), 2, "{hist:?}");
        let views = [
            (m.path(&format!(".history/{}", hist[0])), 0usize),
            (m.path(&format!(".history/{}", hist[1])), 1),
            (m.path(""), 1),
        ];
        for (root, b) in &views {
            let (mut eio, mut good) = (0, 0);
            for i in 0..FILES {
                let p = format!("/{}", rel(i));
                match fs::read(root.join(rel(i))) {
                    Ok(bytes) => {
                        assert!(
                            !damaged_in[*b].contains(&p),
                            "{}: damaged {p} read without error",
                            root.display()
                        );
                        assert!(
                            bytes == content(i, version(i, *b as u32)),
                            "{}: {p} read wrong bytes",
                            root.display()
                        );
                        good += 1;
                    }
                    Err(e) => {
                        assert_eq!(
                            e.raw_os_error(),
                            Some(libc::EIO),
                            "{}: {p}: {e}",
                            root.display()
                        );
                        assert!(
                            damaged_in[*b].contains(&p),
                            "{}: {p} is intact but gave EIO",
                            root.display()
                        );
                        eio += 1;
                    }
                }
            }
            eprintln!("{}: {good} files exact, {eio} EIO", root.display());
        }
        m.umount();
        assert!(Path::new(&work.path().join("cache")).exists());
    }
}

/// Delete `n` data packs at random; returns how many packs there were.
fn delete_data_packs(url: &str, n: usize) -> usize {
    let repo = open_repo(url);
    let ix = repo.index();
    let mut data: Vec<Id> = ix
        .packs()
        .iter()
        .filter(|p| p.kind == BlobKind::Data)
        .map(|p| p.id)
        .collect();
    data.shuffle(&mut rand::thread_rng());
    let st = open_store(url);
    for id in data.iter().take(n) {
        st.delete(&secrate::repo::pack::pack_name(id)).unwrap();
    }
    ix.packs().len()
}

/// `secrate repair`: what a mount cache still holds goes back into the
/// store; what is found nowhere is named and forgotten by the index, and a
/// backup of the sources that still have it heals every snapshot.
#[test]
fn repair_puts_back_what_caches_and_sources_hold() {
    if !fuse_ready("repair_puts_back_what_caches_and_sources_hold") {
        return;
    }
    for store in stores("mount-repair") {
        eprintln!("== {} store", store.label);
        let work = tempfile::tempdir().unwrap();
        let s = Secrate::new(&store.url);
        s.ok(&["init", "--kdf-work-factor", "10", "--pack-size", "1048576"]);

        // Written through a mount: its cache keeps the uploaded files.
        let cache = work.path().join("cache");
        let mut m = Mount::new(&s, &work.path().join("mnt"), &cache, &[]);
        for i in 0..60 {
            fs::create_dir_all(m.path(&format!("d{}", i % 8))).unwrap();
            fs::write(m.path(&rel(i)), content(i, 0)).unwrap();
        }
        m.umount();
        delete_data_packs(&store.url, 3);
        assert_eq!(s.run(&["check", "--read-data"]).status.code(), Some(1));
        let out = s.ok(&["repair", "--cache", cache.to_str().unwrap()]);
        eprintln!("{out}");
        assert!(out.contains("0 files in snapshots still lost"), "{out}");
        assert!(s.ok(&["check", "--read-data"]).contains("no errors"));

        // Backed up, then lost with no copy anywhere but the source.
        let src = work.path().join("src");
        for i in 100..160 {
            fs::create_dir_all(src.join(format!("d{}", i % 8))).unwrap();
            fs::write(src.join(rel(i)), content(i, 0)).unwrap();
        }
        s.ok(&["backup", "-q", src.to_str().unwrap()]);
        delete_data_packs(&store.url, 3);
        let checked = s.run(&["check", "--read-data"]);
        assert_eq!(checked.status.code(), Some(1));
        let o = s.run(&["repair"]);
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        eprintln!("{out}");
        assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
        let lost: Vec<&str> = out.lines().filter(|l| l.starts_with("lost: ")).collect();
        assert!(!lost.is_empty(), "{out}");
        let check_out = String::from_utf8_lossy(&checked.stdout);
        for l in &lost {
            let path = l.rsplit(": ").next().unwrap();
            assert!(
                check_out.contains(path),
                "{path} lost but check did not name it"
            );
        }
        // The index forgot the lost blobs: the next backup re-reads the
        // files that need them; what the mount wrote comes back from its
        // cache (repair also looks for chunks snapshots reference and no
        // index lists); every snapshot is whole again.
        s.ok(&["backup", "-q", src.to_str().unwrap()]);
        let out = s.ok(&["repair", "--cache", cache.to_str().unwrap()]);
        eprintln!("{out}");
        assert!(s.ok(&["check", "--read-data"]).contains("no errors"));
        let dst = work.path().join("dst");
        s.ok(&["restore", "latest", dst.to_str().unwrap()]);
        for i in 100..160 {
            assert!(
                fs::read(dst.join(rel(i))).unwrap() == content(i, 0),
                "{}",
                rel(i)
            );
        }
    }
}

/// Chunk ids of every file of a snapshot's tree, with the all-zero id where
/// a range is marked lost.
fn files_of(repo: &Repository, root: &Id) -> BTreeMap<String, Vec<Id>> {
    let mut out = BTreeMap::new();
    walk(repo, root, "", &mut out);
    out
}

/// Delete the packs holding `ids`'s blobs plus `extra` more data packs at
/// random; returns every blob the deleted packs held.
fn delete_packs_holding(url: &str, ids: &[Id], extra: usize) -> HashSet<Id> {
    let repo = open_repo(url);
    let ix = repo.index();
    let mut packs: HashSet<Id> = ids.iter().map(|id| ix.get(id).unwrap().0.id).collect();
    let mut data: Vec<Id> = ix
        .packs()
        .iter()
        .filter(|p| p.kind == BlobKind::Data && !packs.contains(&p.id))
        .map(|p| p.id)
        .collect();
    data.shuffle(&mut rand::thread_rng());
    packs.extend(data.into_iter().take(extra));
    let st = open_store(url);
    for id in &packs {
        st.delete(&secrate::repo::pack::pack_name(id)).unwrap();
    }
    ix.blobs()
        .filter(|(_, l)| packs.contains(&ix.packs()[l.pack as usize].id))
        .map(|(id, _)| *id)
        .collect()
}

/// The newest snapshot's files, read independently of secrate's commands:
/// every chunk is indexed or the lost marker, and no chunk is a lost blob.
/// Returns the files with ranges marked lost.
fn assert_latest_references_nothing_lost(url: &str, lost: &HashSet<Id>) -> BTreeSet<String> {
    let repo = open_repo(url);
    let (snaps, _) = repo.snapshots().unwrap();
    let (id, latest) = snaps.last().unwrap();
    let ix = repo.index();
    let mut marked = BTreeSet::new();
    for (path, chunks) in files_of(&repo, &latest.root) {
        for c in &chunks {
            if *c == Id::LOST {
                marked.insert(path.clone());
            } else {
                // A lost chunk stored again since is indexed again: healed.
                assert!(
                    ix.contains(c),
                    "snapshot {}: {path} references chunk {} that no index lists{}",
                    id.short(),
                    c.short(),
                    if lost.contains(c) {
                        " (a lost chunk)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    marked
}

fn read_at(path: &Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(path)?;
    let mut buf = vec![0u8; len];
    let n = f.read_at(&mut buf, offset)?;
    buf.truncate(n);
    Ok(buf)
}

/// `repair` with nothing to salvage records the loss (`damage/`): a mount
/// marks the lost ranges of its files (EIO, on an existing and on a fresh
/// cache), its new snapshots reference no lost chunk, a rewritten file
/// heals, `check` tells recorded damage from new, and `backup` never
/// dedups against a lost chunk.
#[test]
fn repair_records_damage_and_new_snapshots_never_reference_it() {
    if !fuse_ready("repair_records_damage_and_new_snapshots_never_reference_it") {
        return;
    }
    for store in stores("mount-damage") {
        eprintln!("== {} store", store.label);
        let work = tempfile::tempdir().unwrap();
        let s = Secrate::new(&store.url);
        s.ok(&["init", "--kdf-work-factor", "10", "--pack-size", "1048576"]);
        // Over twice the chunker's maximum (8 MiB), so at least three
        // chunks whatever the repository's chunker key (5 MiB gave two
        // in one CI run).
        let big = pseudo_random(7, 17 << 20);
        let c1 = work.path().join("c1");
        let mnt = work.path().join("mnt");
        let mut m = Mount::new(&s, &mnt, &c1, &[]);
        for i in 0..48 {
            fs::create_dir_all(m.path(&format!("d{}", i % 8))).unwrap();
            fs::write(m.path(&rel(i)), content(i, 0)).unwrap();
        }
        fs::write(m.path("big.bin"), &big).unwrap();
        m.umount();
        // The cache keeps no copy of the files (as after eviction): it
        // cannot put the lost chunks back (that case is
        // repair_puts_back_what_caches_and_sources_hold), so the mount
        // below must mark them.
        for e in fs::read_dir(c1.join("staged")).unwrap() {
            fs::remove_file(e.unwrap().path()).unwrap();
        }

        // Lose the pack holding big.bin's second chunk and two more.
        let repo = open_repo(&store.url);
        let (snaps, _) = repo.snapshots().unwrap();
        let before = files_of(&repo, &snaps.last().unwrap().1.root);
        let big_chunks = repo
            .read_tree(&snaps.last().unwrap().1.root)
            .unwrap()
            .find(b"big.bin")
            .unwrap()
            .chunks()
            .to_vec();
        assert!(
            big_chunks.len() >= 3,
            "big.bin has {} chunks",
            big_chunks.len()
        );
        drop(repo);
        let lost = delete_packs_holding(&store.url, &[big_chunks[1].id], 2);
        let damaged: BTreeSet<String> = before
            .iter()
            .filter(|(_, c)| c.iter().any(|c| lost.contains(c)))
            .map(|(p, _)| p.clone())
            .collect();
        eprintln!("{} blobs lost; damaged: {damaged:?}", lost.len());
        assert!(damaged.contains("/big.bin"));

        // repair: nothing to salvage; it names the files and records the loss.
        let o = s.run(&["repair"]);
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert_eq!(o.status.code(), Some(1), "{out}{}", stderr(&o));
        let named: BTreeSet<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("lost: snapshot "))
            .map(|l| l.split_once(": ").unwrap().1.to_string())
            .collect();
        assert_eq!(named, damaged, "{out}");
        let records: Vec<String> = store_objects(&store.url)
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with("damage/"))
            .collect();
        assert_eq!(records.len(), 1, "one damage record: {records:?}");
        let repo = open_repo(&store.url);
        let (recorded, problems) = repo.lost_blobs().unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            recorded.keys().copied().collect::<HashSet<Id>>(),
            lost.iter()
                .filter(|id| !repo.index().contains(id))
                .copied()
                .collect(),
            "the record lists exactly the blobs lost"
        );
        drop(repo);
        // A second repair finds nothing new to record.
        let o = s.run(&["repair"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("0 newly recorded"),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );

        // check: the damage is known, not new, and still not "no errors".
        let o = s.run(&["check", "--read-data"]);
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert_eq!(o.status.code(), Some(1), "{out}");
        assert!(
            !out.contains("damaged: ") && out.contains("no new damage"),
            "{out}"
        );
        let rec_named: BTreeSet<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("recorded: snapshot "))
            .map(|l| {
                let p = l.split_once("): ").unwrap().1;
                p.rsplit_once(": ").map(|(p, _)| p).unwrap_or(p).to_string()
            })
            .collect();
        assert_eq!(rec_named, damaged, "{out}");

        // The existing cache: damaged files give EIO on their lost ranges,
        // the rest reads exact.
        let mut m = Mount::new(&s, &mnt, &c1, &[]);
        assert!(m.log().contains("damaged: /big.bin"), "{}", m.log());
        for i in 0..48 {
            let p = format!("/{}", rel(i));
            match fs::read(m.path(&rel(i))) {
                Ok(b) => assert!(!damaged.contains(&p) && b == content(i, 0), "{p}"),
                Err(e) => assert!(
                    damaged.contains(&p) && e.raw_os_error() == Some(libc::EIO),
                    "{p}: {e}"
                ),
            }
        }
        let c0 = big_chunks[0].len as usize;
        let bigp = m.path("big.bin");
        assert_eq!(fs::metadata(&bigp).unwrap().len(), big.len() as u64);
        if !lost.contains(&big_chunks[0].id) {
            // (A read that reaches into the lost chunk ends short or with
            // EIO: the kernel reads ahead in large requests.)
            assert!(
                read_at(&bigp, 0, 65536).unwrap() == big[..65536],
                "big.bin's first chunk"
            );
        }
        expect_errno(
            "big.bin's lost chunk",
            read_at(&bigp, c0 as u64 + 10, 4096),
            libc::EIO,
        );
        // Rewriting heals: one damaged file with new bytes, big.bin with
        // its old bytes (the same chunk ids, which heals old snapshots).
        let other = damaged.iter().find(|p| p.as_str() != "/big.bin").cloned();
        if let Some(p) = &other {
            fs::write(m.path(&p[1..]), b"rewritten after the loss").unwrap();
        }
        fs::write(&bigp, &big).unwrap();
        fs::write(m.path("new-after-repair"), content(300, 0)).unwrap();
        m.snapshot();
        assert!(fs::read(&bigp).unwrap() == big);
        m.umount();
        let marked = assert_latest_references_nothing_lost(&store.url, &lost);
        let mut want: BTreeSet<String> = damaged.clone();
        want.remove("/big.bin");
        if let Some(p) = &other {
            want.remove(p);
        }
        assert_eq!(marked, want, "files marked lost in the new snapshot");
        let repo = open_repo(&store.url);
        let (snaps, _) = repo.snapshots().unwrap();
        let now = files_of(&repo, &snaps.last().unwrap().1.root);
        for (p, chunks) in &now {
            if let Some(old) = before.get(p).filter(|_| want.contains(p)) {
                // Same length, markers exactly where chunks were lost.
                assert_eq!(chunks.len(), old.len(), "{p}");
                for (n, o) in chunks.iter().zip(old) {
                    assert_eq!(*n == Id::LOST, lost.contains(o), "{p}");
                }
            }
        }
        assert!(recorded_damage_healed(&repo, &big_chunks[1].id));
        drop(repo);
        // restore names the marked files as lost and exits 1; the rest and
        // the healed files restore exact.
        let dst = work.path().join("restore-marked");
        let o = s.run(&["restore", "latest", dst.to_str().unwrap()]);
        let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
        assert_eq!(
            o.status.code(),
            Some(if want.is_empty() { 0 } else { 1 }),
            "{said}"
        );
        for p in &want {
            assert!(
                said.lines()
                    .any(|l| l.contains(p.as_str()) && l.contains("recorded by `secrate repair`")),
                "restore does not name {p} as lost: {said}"
            );
        }
        assert!(fs::read(dst.join("big.bin")).unwrap() == big);

        // More loss, a second record; a fresh cache imports the newest
        // snapshot and marks what it references.
        let newest = now
            .iter()
            .filter(|(p, c)| !want.contains(*p) && p.starts_with("/d") && !c.is_empty())
            .map(|(_, c)| c[0])
            .next()
            .unwrap();
        let lost2 = delete_packs_holding(&store.url, &[newest], 1);
        let damaged2: BTreeSet<String> = now
            .iter()
            .filter(|(_, c)| c.iter().any(|c| lost2.contains(c)))
            .map(|(p, _)| p.clone())
            .collect();
        assert!(!damaged2.is_empty());
        assert_eq!(s.run(&["repair"]).status.code(), Some(1));
        let all_lost: HashSet<Id> = lost.union(&lost2).copied().collect();
        let mut m = Mount::new(&s, &mnt, &work.path().join("c2"), &[]);
        for p in &damaged2 {
            expect_errno(p, fs::read(m.path(&p[1..])), libc::EIO);
        }
        // The snapshot with markers, through .history: EIO for the marked
        // files, exact bytes for the others.
        let latest = m.path(&format!(".history/{}", m.latest()));
        for i in 0..48 {
            let p = format!("/{}", rel(i));
            let truth = if other.as_ref() == Some(&p) {
                b"rewritten after the loss".to_vec()
            } else {
                content(i, 0)
            };
            match fs::read(latest.join(rel(i))) {
                Ok(b) => assert!(
                    !want.contains(&p) && !damaged2.contains(&p) && b == truth,
                    ".history: {p}"
                ),
                Err(e) => assert!(
                    (want.contains(&p) || damaged2.contains(&p))
                        && e.raw_os_error() == Some(libc::EIO),
                    ".history: {p}: {e}"
                ),
            }
        }
        fs::write(m.path("new-on-fresh-cache"), content(301, 0)).unwrap();
        m.snapshot();
        m.umount();
        let marked = assert_latest_references_nothing_lost(&store.url, &all_lost);
        assert!(
            damaged2.iter().all(|p| marked.contains(p)),
            "{damaged2:?} not all marked: {marked:?}"
        );

        // backup after repair: files with the lost content are read and
        // stored again, never deduplicated against the lost chunks.
        let src = work.path().join("src");
        for i in 0..48 {
            fs::create_dir_all(src.join(format!("d{}", i % 8))).unwrap();
            fs::write(src.join(rel(i)), content(i, 0)).unwrap();
        }
        s.ok(&["backup", "-q", src.to_str().unwrap()]);
        let marked = assert_latest_references_nothing_lost(&store.url, &all_lost);
        assert!(marked.is_empty(), "{marked:?}");
        let dst = work.path().join("dst");
        s.ok(&["restore", "latest", dst.to_str().unwrap()]);
        for i in 0..48 {
            assert!(
                fs::read(dst.join(rel(i))).unwrap() == content(i, 0),
                "{}",
                rel(i)
            );
        }
        // The backup stored the lost d*/ chunks again: in the old snapshots
        // only ranges already marked, the rewritten file's old version and
        // nothing else is still lost; check reports no new damage.
        let o = s.run(&["check", "--read-data"]);
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(!out.contains("damaged: "), "{out}");
        assert!(
            o.status.code() == Some(0) || out.contains("no new damage"),
            "{out}"
        );
    }
}

/// Is `id` (recorded lost) indexed again?
fn recorded_damage_healed(repo: &Repository, id: &Id) -> bool {
    let (lost, _) = repo.lost_blobs().unwrap();
    !lost.contains_key(id) && repo.index().contains(id)
}

/// A pack deleted from the store with no damage record: the index forgets
/// it at mount start, and the cache's clean copy of a file whose chunks it
/// held is the only copy left. It must be stored again, never evicted
/// (found by review: eviction only asked whether the file was uploaded,
/// and every later seal reused the chunk list that pointed nowhere).
#[test]
fn a_copy_whose_pack_is_missing_is_stored_again_not_evicted() {
    if !fuse_ready("a_copy_whose_pack_is_missing_is_stored_again_not_evicted") {
        return;
    }
    for store in stores("mount-missing-pack") {
        eprintln!("== {} store", store.label);
        let work = tempfile::tempdir().unwrap();
        let s = Secrate::new(&store.url);
        s.ok(&["init", "--kdf-work-factor", "10", "--pack-size", "1048576"]);
        let data = pseudo_random(21, 3 << 20);
        let (mnt, cache) = (work.path().join("mnt"), work.path().join("cache"));
        let mut m = Mount::new(&s, &mnt, &cache, &[]);
        write_synced(&m.path("f"), &data);
        m.snapshot();
        m.umount();
        drop(m);

        let repo = open_repo(&store.url);
        let (snaps, _) = repo.snapshots().unwrap();
        let chunks: Vec<Id> = repo
            .read_tree(&snaps.last().unwrap().1.root)
            .unwrap()
            .find(b"f")
            .unwrap()
            .chunks()
            .iter()
            .map(|c| c.id)
            .collect();
        drop(repo);
        delete_packs_holding(&store.url, &chunks[..1], 0);

        // The same cache (it holds f's copy), a budget f does not fit in,
        // and uploads that evict down to it.
        let mut m = Mount::new(&s, &mnt, &cache, &["--cache-size", "1M"]);
        assert!(
            m.log()
                .contains("/f: chunks the store no longer holds are stored again"),
            "{}",
            m.log()
        );
        write_synced(&m.path("g"), &pseudo_random(22, 2 << 20));
        m.snapshot();
        write_synced(&m.path("h"), b"one more upload");
        m.snapshot();
        assert!(
            fs::read(m.path("f")).is_ok_and(|b| b == data),
            "f is not what was written\nmount.log:\n{}",
            m.log()
        );
        m.umount();
        // Every snapshot's files are whole again. The old index delta
        // still lists the deleted pack, a problem `check` reports until
        // repair drops it, finding every blob it held in the packs the
        // mount stored since.
        let out = s.ok(&["repair"]);
        assert!(out.contains("0 files in snapshots still lost"), "{out}");
        let o = s.run(&["check", "--read-data"]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        );
    }
}

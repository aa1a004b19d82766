//! Snapshots made the live tree: the whole import (`live::import`) and
//! the switch of a serving read-only mount's live tree by what changed
//! (`live::diff`), checked against the whole import it replaces.
use std::collections::HashMap;
use std::sync::Arc;

use crate::crypto::{BlobKind, Id};
use crate::flush::testing::{machine, mkfile, mkfile_in, Machine};
use crate::flush::SealOutcome;
use crate::live::data::Times;
use crate::live::diff::switch_snapshot;
use crate::live::import::import_snapshot;
use crate::live::{Body, LiveError, NewNode, ROOT};
use crate::repo::snapshot::{Origin, Snapshot};
use crate::repo::tree::{Content, Kind};
use crate::repo::writer::BlobWriter;

fn mkdir(m: &Machine, parent: u64, name: &[u8]) -> u64 {
    let dir = NewNode {
        kind: Kind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        rdev: 0,
        symlink: None,
    };
    m.live.create_node(parent, name, dir, false).unwrap().0
}

/// Every path of the live tree with its inode number, and what a
/// program sees of it: kind, mode, size, mtime, link count, content.
fn walk(m: &Machine) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), ROOT)];
    while let Some((path, dir)) = stack.pop() {
        for (name, ino, kind) in m.live.children(dir).unwrap() {
            let p = format!("{path}/{}", String::from_utf8_lossy(&name));
            let r = m.live.inode(ino).unwrap();
            let data = match (&r.body, kind) {
                (_, Kind::File) => m.live.read(ino, 0, 1 << 20, &*m.reader).unwrap().to_vec(),
                (Body::Symlink(target), _) => target.clone(),
                _ => Vec::new(),
            };
            let seen = format!(
                "{kind:?} {:o} {} {:?} {} {data:?}",
                r.mode, r.size, r.mtime, r.nlink
            );
            if kind == Kind::Dir {
                stack.push((p.clone(), ino));
            }
            out.push((p, ino, seen));
        }
    }
    out.sort();
    out
}

fn without_numbers(w: &[(String, u64, String)]) -> Vec<(String, String)> {
    w.iter().map(|(p, _, s)| (p.clone(), s.clone())).collect()
}

/// A writer's tree of 20 directories of 5 files, each with a
/// subdirectory of one file, and a file at the root; sealed and
/// uploaded.
fn twenty_dirs(w: &Machine) -> (SealOutcome, HashMap<String, u64>) {
    let mut inos = HashMap::new();
    for d in 0..20 {
        let dir = mkdir(w, ROOT, format!("d{d:02}").as_bytes());
        inos.insert(format!("d{d:02}"), dir);
        for f in 0..5 {
            let name = format!("f{f}");
            let ino = mkfile_in(w, dir, name.as_bytes(), format!("{d} {f}").as_bytes());
            inos.insert(format!("d{d:02}/{name}"), ino);
        }
        let deep = mkdir(w, dir, b"deep");
        mkfile_in(w, deep, b"x", format!("deep {d}").as_bytes());
    }
    inos.insert("top".into(), mkfile_in(w, ROOT, b"top", b"top one"));
    let s = w.flusher.seal().unwrap().unwrap();
    w.flusher.upload_pending().unwrap();
    (s, inos)
}

/// A switch reads the trees of what changed only, and everything that
/// did not change keeps its inode number (so the kernel keeps its
/// names, attributes and pages); a changed file gets a number never
/// used before, a file open at the switch reads what it opened, and
/// the result is what a whole import of the snapshot gives. (Before:
/// a switch imported the whole tree, 41 trees here, and every number
/// was new.)
#[test]
fn a_switch_changes_only_what_changed() {
    let repo = Arc::new(crate::repo::tests::test_init("memory://switch-diff"));
    let w = machine(&repo);
    let (s1, inos) = twenty_dirs(&w);
    let changed = inos["d03/f2"];
    w.live
        .write(changed, 0, b"changed, longer", Times::Now, &*w.reader)
        .unwrap();
    w.live
        .write(inos["top"], 0, b"top two", Times::Now, &*w.reader)
        .unwrap();
    mkfile_in(&w, inos["d05"], b"new", b"a new file");
    w.live.unlink(inos["d07"], b"f1").unwrap();
    let s2 = w.flusher.seal().unwrap().unwrap();
    w.flusher.upload_pending().unwrap();

    let m = machine(&repo);
    let whole = import_snapshot(&m.live, &m.reader, &s1.id, &s1.snapshot).unwrap();
    assert_eq!(whole.trees_read, 41);
    let before = walk(&m);
    let num = |w: &[(String, u64, String)], p: &str| {
        w.iter().find(|(q, _, _)| q == p).map(|(_, n, _)| *n)
    };
    let old_changed = num(&before, "/d03/f2").unwrap();
    m.live.open_file(old_changed);

    let i = switch_snapshot(&m.live, &m.reader, &s2.id, &s2.snapshot).unwrap();
    assert!(!i.whole);
    // The root, d03, d05 and d07, old and new: not the other 37.
    assert_eq!(i.trees_read, 8);
    assert_eq!(i.kept_open, 1);
    let after = walk(&m);
    let changed_paths = ["/d03/f2", "/top", "/d05/new", "/d07/f1"];
    let max_before = before.iter().map(|(_, n, _)| *n).max().unwrap();
    for (p, n, _) in &after {
        if changed_paths.contains(&p.as_str()) {
            assert!(*n > max_before, "{p} kept or reused a number");
        } else {
            assert_eq!(num(&before, p), Some(*n), "{p} changed its number");
        }
    }
    assert_eq!(num(&after, "/d07/f1"), None);
    let gone = num(&before, "/d07/f1").unwrap();
    assert!(matches!(m.live.inode(gone), Err(LiveError::NotFound)));
    // Exactly the changed names, and the directories they are in.
    let mut names: Vec<(u64, Vec<u8>)> = i.changed_names.clone();
    names.sort();
    let mut want = vec![
        (ROOT, b"top".to_vec()),
        (num(&before, "/d03").unwrap(), b"f2".to_vec()),
        (num(&before, "/d05").unwrap(), b"new".to_vec()),
        (num(&before, "/d07").unwrap(), b"f1".to_vec()),
    ];
    want.sort();
    assert_eq!(names, want);
    let mut dirs = i.changed_dirs.clone();
    dirs.sort();
    let mut want: Vec<u64> = ["/d03", "/d05", "/d07"]
        .iter()
        .map(|p| num(&before, p).unwrap())
        .chain([ROOT])
        .collect();
    want.sort();
    assert_eq!(dirs, want);

    // What a whole import of the new snapshot shows, and its totals.
    let fresh = machine(&repo);
    let full = import_snapshot(&fresh.live, &fresh.reader, &s2.id, &s2.snapshot).unwrap();
    assert_eq!(without_numbers(&after), without_numbers(&walk(&fresh)));
    assert_eq!((i.files, i.dirs), (full.files, full.dirs));
    assert_eq!(
        m.live
            .read_view()
            .unwrap()
            .tree_stats(&s2.snapshot.root)
            .unwrap(),
        fresh
            .live
            .read_view()
            .unwrap()
            .tree_stats(&s2.snapshot.root)
            .unwrap()
    );
    assert_eq!(
        m.live.state("last_snapshot").unwrap().as_deref(),
        Some(&s2.id.0[..])
    );

    // The open file reads what it opened, and goes when closed.
    assert_eq!(
        &m.live.read(old_changed, 0, 100, &*m.reader).unwrap()[..],
        b"3 2"
    );
    m.live.release_file(old_changed).unwrap();
    assert!(matches!(
        m.live.inode(old_changed),
        Err(LiveError::NotFound)
    ));

    // The same snapshot again: nothing to read below the root.
    let again = switch_snapshot(&m.live, &m.reader, &s2.id, &s2.snapshot).unwrap();
    assert_eq!((again.trees_read, again.changed_names.len()), (0, 0));
    assert_eq!(walk(&m), after);
}

/// A switch that fails halfway (a changed directory's tree is
/// nowhere) leaves the live tree as it was, numbers included; a
/// hard link among what changed makes the switch a whole import,
/// which links its names as the snapshot does.
#[test]
fn a_switch_is_all_or_nothing_and_falls_back_for_hard_links() {
    use crate::repo::writer::StoreSink;
    let repo = Arc::new(crate::repo::tests::test_init("memory://switch-fail"));
    let w = machine(&repo);
    let (s1, inos) = twenty_dirs(&w);
    let m = machine(&repo);
    import_snapshot(&m.live, &m.reader, &s1.id, &s1.snapshot).unwrap();
    let before = walk(&m);

    // s1's root with d05 (and top) changed, d05's new tree nowhere.
    let mut root = (*m.reader.read_tree(&s1.snapshot.root).unwrap()).clone();
    for e in root.entries.iter_mut() {
        if e.name == b"d05" {
            e.content = Content::Subtree(Id([7; 32]));
        }
        if e.name == b"top" {
            e.mode = 0o600;
        }
    }
    let bw = BlobWriter::new(repo.clone(), Arc::new(StoreSink(repo.clone())), 1);
    let root_id = bw.add(BlobKind::Tree, &root.encode()).unwrap();
    let (packs, _) = bw.finish().unwrap();
    repo.write_index(&packs).unwrap();
    let mut broken = s1.snapshot.clone();
    broken.root = root_id;
    broken.time_ns += 1;
    let err = switch_snapshot(&m.live, &m.reader, &Id([8; 32]), &broken);
    assert!(err.is_err());
    m.live.commit(true).unwrap();
    assert_eq!(walk(&m), before);
    assert_eq!(
        m.live.state("last_snapshot").unwrap().as_deref(),
        Some(&s1.id.0[..])
    );

    // A second name for d01/f1.
    w.live.link(inos["d01/f1"], inos["d09"], b"link").unwrap();
    let s2 = w.flusher.seal().unwrap().unwrap();
    w.flusher.upload_pending().unwrap();
    let i = switch_snapshot(&m.live, &m.reader, &s2.id, &s2.snapshot).unwrap();
    assert!(i.whole);
    let at = |dir: &[u8], name: &[u8]| {
        let d = m.live.lookup(ROOT, dir).unwrap().0;
        m.live.lookup(d, name).unwrap()
    };
    let ((f, fr), (l, _)) = (at(b"d01", b"f1"), at(b"d09", b"link"));
    assert_eq!((f, fr.nlink), (l, 2));
    let max_before = before.iter().map(|(_, n, _)| *n).max().unwrap();
    assert!(walk(&m).iter().all(|(_, n, _)| *n > max_before));
    let fresh = machine(&repo);
    import_snapshot(&fresh.live, &fresh.reader, &s2.id, &s2.snapshot).unwrap();
    assert_eq!(without_numbers(&walk(&m)), without_numbers(&walk(&fresh)));
}

#[derive(Clone, Debug)]
enum Op {
    /// Write (or create) file `f` of directory `d`.
    Write(usize, usize, u8),
    Unlink(usize, usize),
    /// A second name in another directory.
    Link(usize, usize, usize, usize),
    Rename(usize, usize, usize, usize),
    /// Make (or replace) a symlink.
    Symlink(usize, usize, u8),
    /// Empty directory `d` and remove it.
    RemoveDir(usize),
    /// Seal, upload, and switch the reader to the new snapshot.
    Switch,
}

const DIRS: [&[&[u8]]; 4] = [&[], &[b"a"], &[b"a", b"b"], &[b"c"]];
const FILES: [&[u8]; 3] = [b"f0", b"f1", b"f2"];

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0..4usize, 0..3usize, any::<u8>()).prop_map(|(d, f, b)| Op::Write(d, f, b)),
        1 => (0..4usize, 0..3usize).prop_map(|(d, f)| Op::Unlink(d, f)),
        1 => (0..4usize, 0..3usize, 0..4usize, 0..3usize)
            .prop_map(|(a, b, c, d)| Op::Link(a, b, c, d)),
        1 => (0..4usize, 0..3usize, 0..4usize, 0..3usize)
            .prop_map(|(a, b, c, d)| Op::Rename(a, b, c, d)),
        // Few names, so that symlinks are often replaced.
        2 => (0..2usize, any::<u8>()).prop_map(|(d, b)| Op::Symlink(d, 2, b)),
        1 => (2..4usize).prop_map(Op::RemoveDir),
        2 => Just(Op::Switch),
    ]
}

/// Directory `d` of `DIRS` in the writer's tree, made if missing.
fn dir_at(w: &Machine, d: usize) -> u64 {
    let mut at = ROOT;
    for name in DIRS[d] {
        at = match w.live.lookup(at, name) {
            Ok((ino, r)) if r.kind == Kind::Dir => ino,
            _ => mkdir(w, at, name),
        };
    }
    at
}

fn apply(w: &Machine, op: &Op) {
    // Refusals (a name that exists, or does not) are part of the game.
    match *op {
        Op::Write(d, f, b) => {
            let dir = dir_at(w, d);
            let ino = match w.live.lookup(dir, FILES[f]) {
                Ok((ino, r)) if r.kind == Kind::File => ino,
                Ok(_) => return,
                Err(_) => {
                    w.live
                        .create_node(dir, FILES[f], NewNode::test_file(), false)
                        .unwrap()
                        .0
                }
            };
            let data = vec![b; 1 + b as usize % 7];
            w.live.write(ino, 0, &data, Times::Now, &*w.reader).unwrap();
        }
        Op::Unlink(d, f) => {
            let _ = w.live.unlink(dir_at(w, d), FILES[f]);
        }
        Op::Link(d, f, d2, f2) => {
            if let Ok((ino, _)) = w.live.lookup(dir_at(w, d), FILES[f]) {
                let _ = w.live.link(ino, dir_at(w, d2), FILES[f2]);
            }
        }
        Op::Rename(d, f, d2, f2) => {
            let (a, b) = (dir_at(w, d), dir_at(w, d2));
            let _ = w.live.rename(a, FILES[f], b, FILES[f2], false, false);
        }
        Op::Symlink(d, f, b) => {
            let target = [b'a' + b % 26];
            let node = NewNode {
                kind: Kind::Symlink,
                mode: 0o777,
                uid: 0,
                gid: 0,
                rdev: 0,
                symlink: Some(&target),
            };
            // A symlink there is replaced (symlinks change no other way).
            let dir = dir_at(w, d);
            if w.live
                .lookup(dir, FILES[f])
                .is_ok_and(|(_, r)| r.kind == Kind::Symlink)
            {
                w.live.unlink(dir, FILES[f]).unwrap();
            }
            let _ = w.live.create_node(dir, FILES[f], node, false);
        }
        Op::RemoveDir(d) => {
            let dir = dir_at(w, d);
            for f in FILES {
                let _ = w.live.unlink(dir, f);
            }
            // a/b is in a; c at the root.
            let parent = dir_at(w, if d == 2 { 1 } else { 0 });
            let _ = w.live.rmdir(parent, DIRS[d][DIRS[d].len() - 1]);
        }
        Op::Switch => {}
    }
}

/// Each inode number of a walk: the paths naming it and what they show
/// (directories: only the paths, their attributes may change).
fn by_number(w: &[(String, u64, String)]) -> HashMap<u64, Vec<(String, String)>> {
    let mut m: HashMap<u64, Vec<(String, String)>> = HashMap::new();
    for (p, n, seen) in w {
        let seen = if seen.starts_with("Dir") {
            String::new()
        } else {
            seen.clone()
        };
        m.entry(*n).or_default().push((p.clone(), seen));
    }
    m
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// Whatever changed between snapshots (files written, removed,
    /// linked, renamed, made symlinks, directories removed), a switch
    /// leaves the live tree as a whole import of the new snapshot
    /// would, each file in the parents table of each directory naming
    /// it, and a number that stays names what it named.
    #[test]
    fn a_switch_gives_what_a_whole_import_gives(ops in proptest::collection::vec(op(), 1..40)) {
        static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let case = CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let repo = Arc::new(crate::repo::tests::test_init(&format!("memory://switch-prop-{case}")));
        let w = machine(&repo);
        mkfile_in(&w, ROOT, b"start", b"start");
        let s0 = w.flusher.seal().unwrap().unwrap();
        w.flusher.upload_pending().unwrap();
        let m = machine(&repo);
        import_snapshot(&m.live, &m.reader, &s0.id, &s0.snapshot).unwrap();
        for op in ops.iter().chain([&Op::Switch]) {
            apply(&w, op);
            if !matches!(op, Op::Switch) {
                continue;
            }
            let Some(s) = w.flusher.seal().unwrap() else { continue };
            w.flusher.upload_pending().unwrap();
            let before = walk(&m);
            let i = switch_snapshot(&m.live, &m.reader, &s.id, &s.snapshot).unwrap();
            let after = walk(&m);
            let fresh = machine(&repo);
            import_snapshot(&fresh.live, &fresh.reader, &s.id, &s.snapshot).unwrap();
            proptest::prop_assert_eq!(without_numbers(&after), without_numbers(&walk(&fresh)));
            let (old, new) = (by_number(&before), by_number(&after));
            for (n, names) in &new {
                if let Some(was) = old.get(n) {
                    proptest::prop_assert_eq!(was, names, "number {} (whole: {})", n, i.whole);
                }
            }
            for (p, n, seen) in &after {
                if seen.starts_with("Dir") {
                    continue;
                }
                let mut named_in: Vec<u64> = after
                    .iter()
                    .filter(|(_, k, _)| k == n)
                    .map(|(q, _, _)| {
                        let dir = &q[..q.rfind('/').unwrap_or(0)];
                        after.iter().find(|(d, _, _)| d == dir).map_or(ROOT, |(_, k, _)| *k)
                    })
                    .collect();
                named_in.sort();
                named_in.dedup();
                let rec = m.live.inode(*n).unwrap();
                let mut parents = m.live.tx(|tx| tx.parents_of(*n, &rec)).unwrap();
                parents.sort();
                proptest::prop_assert_eq!(&parents, &named_in, "{}", p);
            }
        }
    }
}

/// Import links the names of each content of a hard-link identity,
/// whichever content came first (as restore does: before, only the
/// first name's content was linked, and the names of another content
/// became separate files).
#[test]
fn import_links_each_content_of_one_identity() {
    use crate::repo::tree::tests::file;
    use crate::repo::tree::{ChunkRef, Tree};
    use crate::repo::writer::StoreSink;
    let repo = Arc::new(crate::repo::tests::test_init("memory://import-links"));
    let w = BlobWriter::new(repo.clone(), Arc::new(StoreSink(repo.clone())), 1);
    let entry = |name: &str, data: &[u8]| {
        let id = w.add(BlobKind::Data, data).unwrap();
        let len = data.len() as u32;
        let mut e = file(name, vec![ChunkRef { id, len }]);
        (e.dev, e.inode, e.links) = (0, 17, 2);
        e
    };
    let tree = Tree {
        entries: vec![
            entry("a-z", b"z's data"),
            entry("b-y", b"y's other data"),
            entry("c-y", b"y's other data"),
            entry("d-z", b"z's data"),
        ],
    };
    let root = w.add(BlobKind::Tree, &tree.encode()).unwrap();
    let (packs, _) = w.finish().unwrap();
    repo.write_index(&packs).unwrap();
    let snap = Snapshot::test(1, Origin::Backup, root);
    let id = repo.write_snapshot(&snap).unwrap();
    let m = machine(&repo);
    import_snapshot(&m.live, &m.reader, &id, &snap).unwrap();
    let ino = |n: &[u8]| m.live.lookup(ROOT, n).unwrap().0;
    assert_eq!(ino(b"a-z"), ino(b"d-z"));
    assert_eq!(ino(b"b-y"), ino(b"c-y"));
    assert_ne!(ino(b"a-z"), ino(b"b-y"));
    assert_eq!(m.live.lookup(ROOT, b"b-y").unwrap().1.nlink, 2);
}

/// An import into a live tree that serves (a read-only mount moving to
/// a newer snapshot): a file open before keeps its record and reads
/// its old content until closed, then goes; new inodes get numbers
/// never used before; and an import that fails halfway leaves the live
/// tree as it was, not cleared. (Stop 28.)
#[test]
fn an_import_keeps_open_files_and_is_all_or_nothing() {
    let repo = Arc::new(crate::repo::tests::test_init("memory://import-open"));
    let writer = machine(&repo);
    let a = mkfile(&writer, b"a", b"one");
    let s1 = writer.flusher.seal().unwrap().unwrap();
    writer
        .live
        .write(a, 0, b"two, longer", Times::Now, &*writer.reader)
        .unwrap();
    mkfile(&writer, b"b", b"bee");
    let s2 = writer.flusher.seal().unwrap().unwrap();
    writer.flusher.upload_pending().unwrap();

    let m = machine(&repo);
    import_snapshot(&m.live, &m.reader, &s1.id, &s1.snapshot).unwrap();
    let (old_a, _) = m.live.lookup(ROOT, b"a").unwrap();
    m.live.open_file(old_a);
    let i = import_snapshot(&m.live, &m.reader, &s2.id, &s2.snapshot).unwrap();
    assert_eq!((i.kept_open, i.old_root_names), (1, vec![b"a".to_vec()]));
    let (new_a, _) = m.live.lookup(ROOT, b"a").unwrap();
    assert!(
        new_a > old_a,
        "inode numbers went back: {new_a} after {old_a}"
    );
    assert_eq!(
        &m.live.read(new_a, 0, 100, &*m.reader).unwrap()[..],
        b"two, longer"
    );
    assert_eq!(&m.live.read(old_a, 0, 100, &*m.reader).unwrap()[..], b"one");
    // A second import keeps it again.
    import_snapshot(&m.live, &m.reader, &s2.id, &s2.snapshot).unwrap();
    assert_eq!(&m.live.read(old_a, 0, 100, &*m.reader).unwrap()[..], b"one");
    m.live.release_file(old_a).unwrap();
    assert!(matches!(m.live.inode(old_a), Err(LiveError::NotFound)));

    // A snapshot whose root tree is nowhere: the import fails after it
    // began to replace the tree.
    let broken = Snapshot::test(s2.snapshot.time_ns + 1, Origin::Backup, Id([7; 32]));
    assert!(import_snapshot(&m.live, &m.reader, &Id([8; 32]), &broken).is_err());
    m.live.commit(true).unwrap();
    let names: Vec<Vec<u8>> = m
        .live
        .children(ROOT)
        .unwrap()
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    assert_eq!(names, [b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(
        m.live.state("last_snapshot").unwrap().as_deref(),
        Some(&s2.id.0[..])
    );
}

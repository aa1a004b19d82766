//! Helpers shared by the integration tests (tests/) and the mount tests
//! (mount-tests/): run the real `secrate` binary against a real store, make
//! test trees, compare trees byte- and attribute-exact, look inside stores.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rand::{Rng, RngCore, SeedableRng};

pub const PASSPHRASE: &str = "correct horse battery staple";

/// A store the tests can use: a fresh `file://` directory, or a fresh
/// prefix on the S3 server scripts/test.sh started.
pub struct TestStore {
    pub url: String,
    pub label: &'static str,
    _dir: Option<tempfile::TempDir>,
}

/// Every store kind available in this run: `file://` always, `s3://` when
/// scripts/test.sh provides a server (SECRATE_TEST_S3_URL).
pub fn stores(test: &str) -> Vec<TestStore> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut v = vec![TestStore {
        url: format!("file://{}/store", dir.path().display()),
        label: "file",
        _dir: Some(dir),
    }];
    match std::env::var("SECRATE_TEST_S3_URL") {
        Ok(base) => v.push(TestStore {
            url: format!("{base}/{test}-{}", hex::encode(rand::random::<[u8; 4]>())),
            label: "s3",
            _dir: None,
        }),
        Err(_) => eprintln!("note: SECRATE_TEST_S3_URL is not set, so {test} runs on file:// only (scripts/test.sh sets it)"),
    }
    v
}

/// `n` separate stores of one kind, for replicas and erasure coding.
pub struct StoreSet {
    pub label: &'static str,
    pub urls: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

/// `n` fresh `file://` stores, and `n` fresh prefixes on the S3 server when
/// scripts/test.sh provides one (SECRATE_TEST_S3_URL).
pub fn store_sets(test: &str, n: usize) -> Vec<StoreSet> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut v = vec![StoreSet {
        label: "file",
        urls: (0..n)
            .map(|i| format!("file://{}/store-{i}", dir.path().display()))
            .collect(),
        _dir: Some(dir),
    }];
    match std::env::var("SECRATE_TEST_S3_URL") {
        Ok(base) => {
            let tag = hex::encode(rand::random::<[u8; 4]>());
            v.push(StoreSet {
                label: "s3",
                urls: (0..n).map(|i| format!("{base}/{test}-{tag}/store-{i}")).collect(),
                _dir: None,
            })
        }
        Err(_) => eprintln!("note: SECRATE_TEST_S3_URL is not set, so {test} runs on file:// only (scripts/test.sh sets it)"),
    }
    v
}

/// Every object of one store of a set (locks left out: they are
/// transient), raw, read straight from that store; empty if it is gone.
pub fn raw_objects(url: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    use secrate::store::Backend;
    let Ok(b) = Backend::open(url, false) else {
        return Default::default();
    };
    b.list_all()
        .expect("list")
        .into_iter()
        .filter(|o| !o.name.starts_with("locks/"))
        .map(|o| {
            let bytes = b.get(&o.name).expect("get").to_vec();
            (o.name, bytes)
        })
        .collect()
}

/// Lose a whole store: the directory for file:// (the store is gone), every
/// object for s3:// (the bucket prefix is wiped: reachable but empty).
pub fn destroy_store(url: &str) {
    use secrate::store::Backend;
    if let Some(path) = url.strip_prefix("file://") {
        fs::remove_dir_all(path).expect("remove store");
        return;
    }
    let b = Backend::open(url, false).expect("open");
    for o in b.list_all().expect("list") {
        b.delete(&o.name).expect("delete");
    }
    assert!(b.list_all().unwrap().is_empty());
}

/// The `secrate` binary with a store and passphrase in its environment.
pub struct Secrate {
    pub store: String,
    pub envs: Vec<(String, String)>,
}

impl Secrate {
    pub fn new(store: &str) -> Secrate {
        Secrate {
            store: store.to_string(),
            envs: vec![("SECRATE_PASSPHRASE".into(), PASSPHRASE.into())],
        }
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_secrate"));
        c.env_remove("SECRATE_RECOVERY_KEY")
            .env_remove("SECRATE_PASSPHRASE")
            .env("SECRATE_STORE", &self.store);
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run secrate")
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "secrate {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `init` with a cheap KDF; returns the recovery key.
    pub fn init(&self) -> String {
        let out = self.ok(&["init", "--kdf-work-factor", "10"]);
        out.lines()
            .map(str::trim)
            .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
            .expect("init prints a recovery key")
            .to_string()
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Open a store URL with the library, to look at raw objects.
pub fn open_store(url: &str) -> secrate::store::Store {
    secrate::store::Store::open(url, false).expect("open store")
}

/// Total bytes of every object in the store.
pub fn store_size(url: &str) -> u64 {
    let s = open_store(url);
    [
        "config",
        "keys",
        "packs",
        "index",
        "snapshots",
        "damage",
        "locks",
    ]
    .iter()
    .flat_map(|d| s.list(d).unwrap_or_default())
    .map(|o| o.size)
    .sum()
}

/// Every object's name and bytes.
pub fn store_objects(url: &str) -> Vec<(String, Vec<u8>)> {
    let s = open_store(url);
    let mut names: Vec<String> = ["keys", "packs", "index", "snapshots", "damage", "locks"]
        .iter()
        .flat_map(|d| s.list(d).unwrap_or_default())
        .map(|o| o.name)
        .collect();
    names.push("config".into());
    names
        .into_iter()
        .filter_map(|n| s.get(&n).ok().map(|b| (n, b.to_vec())))
        .collect()
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// What a generated tree holds that must never appear in the store.
pub struct Secrets {
    pub names: Vec<Vec<u8>>,
    pub contents: Vec<Vec<u8>>,
}

pub struct TreeSpec {
    pub small_files: usize,
    pub big_file: usize,
    pub seed: u64,
}

fn write(path: &Path, data: &[u8]) {
    let mut f = fs::File::create(path).expect("create");
    f.write_all(data).expect("write");
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid)).expect("lchown");
    }
}

fn set_mtime(p: &Path, secs: i64, nanos: u32) {
    secrate::fsmeta::set_times(p, secrate::repo::tree::Timestamp { secs, nanos })
        .expect("set mtime");
}

/// A tree with every kind of thing a backup must keep: thousands of small
/// files, one big file, empty files and dirs, symlinks, hard links, unicode
/// and odd names (spaces, newlines), modes, owners, mtimes, xattrs.
pub fn make_tree(root: &Path, spec: &TreeSpec) -> Secrets {
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut contents: Vec<Vec<u8>> = Vec::new();
    fs::create_dir_all(root).unwrap();
    for d in 0..20 {
        let dir = root
            .join(format!("dir-{d:02}"))
            .join(format!("nested-{}", d % 3));
        fs::create_dir_all(&dir).unwrap();
    }
    for i in 0..spec.small_files {
        let dir = root.join(format!("dir-{:02}", i % 20));
        let dir = if i % 3 == 0 {
            dir.join(format!("nested-{}", (i / 20) % 3))
        } else {
            dir
        };
        let marker = format!("SECRATE-PLAINTEXT-{i:06}-{}", rng.gen::<u32>());
        let mut data = marker.clone().into_bytes();
        let extra = rng.gen_range(0..4000);
        data.extend((0..extra).map(|_| b"abcdefghij \n"[rng.gen_range(0..12)]));
        let name = format!("file-secret-name-{i:05}.txt");
        write(&dir.join(&name), &data);
        if i % 500 == 0 {
            names.push(name.into_bytes());
            contents.push(marker.into_bytes());
        }
    }
    // One big file of random data (incompressible), with a marker inside.
    let mut big = vec![0u8; spec.big_file];
    rng.fill_bytes(&mut big);
    let marker = b"SECRATE-BIG-FILE-MARKER-0123456789";
    if big.len() > 4096 {
        big[4096..4096 + marker.len()].copy_from_slice(marker);
        contents.push(marker.to_vec());
    }
    write(&root.join("big.bin"), &big);
    // Empty files and directories.
    write(&root.join("empty"), b"");
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::create_dir_all(root.join("dir-00/empty-nested")).unwrap();
    // Odd names.
    let odd: Vec<&[u8]> = vec![
        "with space.txt".as_bytes(),
        "new\nline".as_bytes(),
        "ünïcödé-名前.txt".as_bytes(),
        b"-leading-dash",
        b"\xff\xfe not utf-8",
        b"tab\tname",
    ];
    for n in &odd {
        write(&root.join(OsStr::from_bytes(n)), b"odd name content\n");
    }
    names.push("ünïcödé-名前".as_bytes().to_vec());
    // Symlinks: relative, absolute, dangling, to a directory.
    std::os::unix::fs::symlink("big.bin", root.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("link-abs")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("link-dangling")).unwrap();
    std::os::unix::fs::symlink("dir-01", root.join("link-dir")).unwrap();
    // Hard links, within and across directories.
    write(&root.join("hard-a"), b"hard linked content\n");
    fs::hard_link(root.join("hard-a"), root.join("hard-b")).unwrap();
    fs::hard_link(root.join("hard-a"), root.join("dir-02/hard-c")).unwrap();
    // A fifo.
    secrate::fsmeta::mknod(&root.join("fifo"), libc::S_IFIFO | 0o640, 0).unwrap();
    // Modes and owners.
    write(&root.join("exec.sh"), b"#!/bin/sh\necho hi\n");
    fs::set_permissions(root.join("exec.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    write(&root.join("private"), b"private\n");
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o600)).unwrap();
    write(&root.join("setuid"), b"x");
    fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir_all(root.join("sticky")).unwrap();
    fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    write(&root.join("owned"), b"owned by someone else\n");
    lchown(&root.join("owned"), 1234, 5678);
    lchown(&root.join("link-rel"), 4321, 8765);
    // Extended attributes (where the filesystem has them).
    let _ = secrate::fsmeta::set_xattr(&root.join("exec.sh"), b"user.note", b"xattr value");
    let _ = secrate::fsmeta::set_xattr(&root.join("dir-03"), b"user.dir", b"on a directory");
    let _ = secrate::fsmeta::set_xattr(&root.join("empty"), b"user.binary", &[0, 1, 2, 255]);
    // Odd mtimes, set last on files; directories after their contents.
    set_mtime(&root.join("exec.sh"), 1_000_000_000, 123_456_789);
    set_mtime(&root.join("empty"), 0, 0);
    set_mtime(&root.join("link-dangling"), 1_234_567_890, 5);
    for d in fs::read_dir(root).unwrap().flatten() {
        if d.file_type().unwrap().is_dir() {
            set_mtime(
                &d.path(),
                1_500_000_000 + rng.gen_range(0..1000),
                rng.gen_range(0..1_000_000_000),
            );
        }
    }
    set_mtime(root, 1_600_000_000, 42);
    Secrets { names, contents }
}

/// Everything about one path that a restore must reproduce.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Attrs {
    pub kind: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub content: Option<[u8; 32]>,
    pub target: Option<Vec<u8>>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub rdev: u64,
}

/// Map of relative path → attributes, plus hard-link groups (sets of paths
/// sharing an inode), for a whole tree.
pub fn describe(root: &Path) -> (HashMap<PathBuf, Attrs>, Vec<Vec<PathBuf>>) {
    describe_opts(root, true)
}

/// As `describe`; `dir_mtimes` false skips directory mtimes (a live
/// filesystem changes them as files are added).
pub fn describe_opts(
    root: &Path,
    dir_mtimes: bool,
) -> (HashMap<PathBuf, Attrs>, Vec<Vec<PathBuf>>) {
    let mut out = HashMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    fn walk(
        root: &Path,
        rel: &Path,
        dir_mtimes: bool,
        out: &mut HashMap<PathBuf, Attrs>,
        inodes: &mut HashMap<(u64, u64), Vec<PathBuf>>,
    ) {
        let p = root.join(rel);
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let kind = md.mode() & libc::S_IFMT;
        let is_dir = kind == libc::S_IFDIR;
        let content = (kind == libc::S_IFREG).then(|| {
            *blake3::hash(&fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
                .as_bytes()
        });
        let target = (kind == libc::S_IFLNK)
            .then(|| fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec());
        let mut xattrs = secrate::fsmeta::list_xattrs(&p).unwrap_or_default();
        xattrs.retain(|(k, _)| k.starts_with(b"user."));
        if kind == libc::S_IFREG && md.nlink() > 1 {
            inodes
                .entry((md.dev(), md.ino()))
                .or_default()
                .push(rel.to_path_buf());
        }
        out.insert(
            rel.to_path_buf(),
            Attrs {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: if is_dir { 0 } else { md.size() },
                mtime: if is_dir && !dir_mtimes {
                    (0, 0)
                } else {
                    (md.mtime(), md.mtime_nsec())
                },
                content,
                target,
                xattrs,
                rdev: md.rdev(),
            },
        );
        if is_dir {
            let mut names: Vec<_> = fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                if rel.as_os_str().is_empty() && n == ".history" {
                    continue;
                }
                walk(root, &rel.join(n), dir_mtimes, out, inodes);
            }
        }
    }
    walk(root, Path::new(""), dir_mtimes, &mut out, &mut inodes);
    let mut groups: Vec<Vec<PathBuf>> = inodes
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    groups.sort();
    (out, groups)
}

/// Assert two trees are byte- and attribute-exact copies.
pub fn assert_same_tree(a: &Path, b: &Path) {
    assert_same_tree_opts(a, b, true)
}

pub fn assert_same_tree_opts(a: &Path, b: &Path, dir_mtimes: bool) {
    let (da, ga) = describe_opts(a, dir_mtimes);
    let (db, gb) = describe_opts(b, dir_mtimes);
    let mut diffs = Vec::new();
    for (p, x) in &da {
        match db.get(p) {
            None => diffs.push(format!("{}: missing in {}", p.display(), b.display())),
            Some(y) if x != y => diffs.push(format!("{}:\n  {x:?}\n  {y:?}", p.display())),
            _ => {}
        }
    }
    for p in db.keys() {
        if !da.contains_key(p) {
            diffs.push(format!("{}: only in {}", p.display(), b.display()));
        }
    }
    if ga != gb {
        diffs.push(format!("hard links differ: {ga:?} vs {gb:?}"));
    }
    diffs.sort();
    assert!(
        diffs.is_empty(),
        "{} and {} differ in {} places:\n{}",
        a.display(),
        b.display(),
        diffs.len(),
        diffs
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

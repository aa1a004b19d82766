//! Writes the seed corpus, `seeds/<target>/*.bin`: a few small, valid
//! encodings of what each target decodes, made with secrate's own encoders
//! and the fixed keys of `src/lib.rs`.
//!
//!     cd fuzz && cargo run --example make_seeds
//!
//! The age ciphertexts and pack keys among them are random, so a new run
//! rewrites those files with different (equally valid) bytes.

use std::fs;
use std::path::Path;

use secrate::crypto::{age_encrypt, BlobKind, ChunkerParams, Id, NONCE_LEN};
use secrate::flush::outbox::{Item, ItemKind};
use secrate::live::record::{Body, Inode};
use secrate::repo::config::{Config, DEFAULT_PACK_TARGET};
use secrate::repo::index::encode_delta;
use secrate::repo::keys::{encode_keyring, KeyKind, KeyObject};
use secrate::repo::removal::{ForgottenSet, Removal, Removed};
use secrate::repo::lock::LockInfo;
use secrate::repo::pack::{blob_ad, encode_blob_body, header_range, PackBuilder, PackInfo};
use secrate::repo::snapshot::{Origin, RootMeta, Snapshot};
use secrate::repo::tree::{ChunkRef, Content, Entry, Kind, Timestamp, Tree};
use secrate::repo::{index, lock, sealed, snapshot};
use secrate::store::ec::{self, EcParams};
use secrate_fuzz::{keys, pack_key, REPO_ID};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(format!("{name}.bin")), bytes).unwrap();
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn entry(name: &str, kind: Kind, content: Content) -> Entry {
    let size = match &content {
        Content::Chunks(c) => c.iter().map(|r| r.len as u64).sum(),
        Content::Symlink(t) => t.len() as u64,
        _ => 0,
    };
    Entry {
        name: name.as_bytes().to_vec(),
        kind,
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        mtime: Timestamp {
            secs: 1_700_000_000,
            nanos: 5,
        },
        ctime: Some(Timestamp {
            secs: 1_700_000_001,
            nanos: 6,
        }),
        size,
        dev: 3,
        inode: 4,
        links: 1,
        rdev: 0,
        xattrs: Vec::new(),
        content,
    }
}

fn sample_tree() -> Tree {
    let mut file = entry(
        "file",
        Kind::File,
        Content::Chunks(vec![
            ChunkRef {
                id: Id([1; 32]),
                len: 700,
            },
            ChunkRef {
                id: Id([2; 32]),
                len: 12,
            },
        ]),
    );
    file.xattrs = vec![(b"user.k".to_vec(), b"value".to_vec())];
    let mut dev = entry("tty", Kind::CharDevice, Content::None);
    dev.rdev = 0x0501;
    Tree {
        entries: vec![
            entry("dir", Kind::Dir, Content::Subtree(Id([3; 32]))),
            file,
            entry("link", Kind::Symlink, Content::Symlink(b"../dir".to_vec())),
            entry("pipe", Kind::Fifo, Content::None),
            dev,
        ],
    }
}

fn sample_snapshot() -> Snapshot {
    Snapshot {
        time_ns: 1_700_000_000_123_456_789,
        host: "host".into(),
        user: "user".into(),
        source: "/home/user".into(),
        origin: Origin::Backup,
        root: Id([4; 32]),
        root_meta: RootMeta {
            mode: 0o755,
            uid: 1000,
            gid: 1000,
            mtime: Timestamp { secs: 1, nanos: 2 },
            xattrs: Vec::new(),
        },
        parent: Some(Id([5; 32])),
        files: 10,
        dirs: 2,
        bytes: 12345,
        added_bytes: 678,
        tags: vec!["daily".into(), "é".into()],
    }
}

fn sample_lock() -> LockInfo {
    LockInfo {
        host: "host".into(),
        pid: 4242,
        since_ns: 1_700_000_000_000_000_000,
        refreshed_ns: 1_700_000_060_000_000_000,
        token: [9; 16],
        purpose: "backup".into(),
        outbox: String::new(),
        boot: String::new(),
    }
}

fn sample_inodes() -> Vec<(&'static str, Inode)> {
    let base = Inode {
        kind: Kind::Dir,
        mode: 0o755,
        uid: 1000,
        gid: 1000,
        size: 0,
        atime: Timestamp { secs: 1, nanos: 1 },
        mtime: Timestamp { secs: 2, nanos: 2 },
        ctime: Timestamp { secs: 3, nanos: 3 },
        nlink: 2,
        rdev: 0,
        origin_dev: 7,
        origin_ino: 8,
        parent: 1,
        gen: 3,
        xattrs: vec![(b"user.a".to_vec(), b"b".to_vec())],
        body: Body::Dir {
            tree: Some(Id([6; 32])),
        },
    };
    let file = Inode {
        kind: Kind::File,
        size: 712,
        nlink: 1,
        xattrs: Vec::new(),
        body: Body::File {
            staged: true,
            chunks: Some(vec![ChunkRef {
                id: Id([1; 32]),
                len: 712,
            }]),
            sealed_gen: 2,
        },
        ..base.clone()
    };
    let dirty = Inode {
        body: Body::File {
            staged: true,
            chunks: None,
            sealed_gen: 0,
        },
        ..file.clone()
    };
    let link = Inode {
        kind: Kind::Symlink,
        body: Body::Symlink(b"target".to_vec()),
        ..file.clone()
    };
    let fifo = Inode {
        kind: Kind::Fifo,
        body: Body::Special,
        ..file.clone()
    };
    vec![
        ("dir", base),
        ("file", file),
        ("dirty", dirty),
        ("symlink", link),
        ("fifo", fifo),
    ]
}

fn sample_items() -> Vec<(&'static str, Item)> {
    vec![
        (
            "pack",
            Item {
                kind: ItemKind::Pack,
                gen: 1,
                name: format!("data/{}", Id([1; 32]).to_hex()),
                size: 16 << 20,
            },
        ),
        (
            "snapshot",
            Item {
                kind: ItemKind::Snapshot,
                gen: 2,
                name: snapshot::snapshot_name(&Id([2; 32])),
                size: 300,
            },
        ),
    ]
}

/// A small pack of `kind` with the fixed keyring (random pack key).
fn build_pack(kind: BlobKind, blobs: &[&[u8]]) -> (Vec<u8>, PackInfo) {
    let keys = keys();
    let mut b = PackBuilder::new(kind, 4096);
    for raw in blobs {
        b.add(keys.blob_id(kind, raw), raw);
    }
    b.finish(keys)
}

/// A blob sealed with the fixed pack key, as the `open_blob` target reads it.
fn sealed_blob(kind: BlobKind, raw: &[u8]) -> Vec<u8> {
    let id = keys().blob_id(kind, raw);
    let mut out = vec![kind as u8];
    out.extend_from_slice(&id.0);
    pack_key().seal_with_nonce(&[1; NONCE_LEN], &blob_ad(kind, &id), &mut out, |o| {
        encode_blob_body(raw, o)
    });
    out
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let keys = keys();
    let w = |target: &str, name: &str, bytes: &[u8]| write(&dir, target, name, bytes);

    let config = Config {
        repo_id: REPO_ID,
        created: 1_700_000_000_000_000_000,
        chunker: ChunkerParams::DEFAULT,
        pack_target: DEFAULT_PACK_TARGET,
    };
    w("config", "default", &config.encode());

    let keyring = encode_keyring(keys);
    let write_only = encode_keyring(&keys.write_only());
    w("keyring", "full", &keyring);
    w("keyring", "write-only", &write_only);

    let key_object = KeyObject {
        kind: KeyKind::Recovery,
        created: 1_700_000_000_000_000_000,
        write_only: false,
        sealed: age_encrypt(keys.meta_recipient(), &keyring),
    };
    w("key_object", "recovery", &key_object.encode());
    let removal = Removal::new(keys, Removed::Key, "00112233aabbccdd", 1_700_000_000);
    w("key_removal", "record", &removal.encode());
    let forgotten = Removal::new(keys, Removed::Snapshot, &"ab".repeat(32), 1_700_000_000);
    w("key_removal", "snapshot", &forgotten.encode());
    let set = ForgottenSet::new(keys, &[Id([1; 32]), Id([2; 32])], 1_700_000_000);
    w("key_removal", "set", &set.encode());

    let lz4_raw: Vec<u8> = b"secrate ".repeat(40);
    let mut stored = Vec::new();
    encode_blob_body(b"hello, world", &mut stored);
    let mut lz4 = Vec::new();
    encode_blob_body(&lz4_raw, &mut lz4);
    assert_eq!(lz4[0], 1, "compressible input is stored as LZ4");
    w("blob_body", "stored", &stored);
    w("blob_body", "lz4", &lz4);

    let tree = sample_tree().encode();
    let empty_tree = Tree::default().encode();
    for t in ["tree", "tree_roundtrip"] {
        w(t, "five-kinds", &tree);
        w(t, "empty", &empty_tree);
    }

    let (data_pack, data_info) = build_pack(BlobKind::Data, &[b"hello, world", &lz4_raw]);
    let (tree_pack, tree_info) = build_pack(BlobKind::Tree, &[&tree]);
    for (name, pack) in [("data", &data_pack), ("tree", &tree_pack)] {
        w("pack_file", name, pack);
        let size = pack.len() as u64;
        let range = header_range(pack, size).unwrap();
        let header = &pack[range.start as usize..range.end as usize];
        let plain = secrate::crypto::age_decrypt(keys.meta_identity(), header).unwrap();
        w(
            "pack_header",
            name,
            &cat(&[&size.to_le_bytes(), &range.start.to_le_bytes(), &plain]),
        );
    }
    let delta = encode_delta(&[data_info, tree_info]);
    w("index_delta", "two-packs", &delta);
    w("index_delta", "empty", &encode_delta(&[]));
    let damage = secrate::repo::damage::DamageRecord::new([
        (BlobKind::Data, Id([7; 32])),
        (BlobKind::Tree, Id([9; 32])),
    ]);
    w("damage_record", "two-blobs", &damage.encode());

    let snap = sample_snapshot().encode();
    let lock_info = sample_lock().encode();
    w("snapshot", "sample", &snap);
    let mut with_xattrs = sample_snapshot();
    with_xattrs.root_meta.xattrs = vec![(b"user.k".to_vec(), b"v".to_vec())];
    w("snapshot", "root-xattrs", &with_xattrs.encode());
    w("lock_info", "sample", &lock_info);

    w(
        "sealed_open",
        "index",
        &sealed::seal(keys, index::MAGIC, index::VERSION, &delta),
    );
    w(
        "sealed_open",
        "snapshot",
        &sealed::seal(keys, snapshot::MAGIC, snapshot::VERSION, &snap),
    );
    w(
        "sealed_open",
        "lock",
        &sealed::seal(keys, lock::MAGIC, lock::VERSION, &lock_info),
    );

    w(
        "open_blob",
        "data-stored",
        &sealed_blob(BlobKind::Data, b"hello, world"),
    );
    w(
        "open_blob",
        "data-lz4",
        &sealed_blob(BlobKind::Data, &lz4_raw),
    );
    w("open_blob", "tree", &sealed_blob(BlobKind::Tree, &tree));

    let inodes = sample_inodes();
    for (name, i) in &inodes {
        w("inode_record", name, &i.encode());
    }
    let items = sample_items();
    for (name, i) in &items {
        w("outbox_item", name, &i.encode());
    }

    w(
        "age_decrypt",
        "short",
        &age_encrypt(keys.meta_recipient(), b"a pack key, 32 bytes long......."),
    );
    w(
        "age_decrypt",
        "empty",
        &age_encrypt(keys.meta_recipient(), b""),
    );

    let rt = |which: u8, name: &str, bytes: &[u8]| w("roundtrip", name, &cat(&[&[which], bytes]));
    rt(0, "snapshot", &snap);
    rt(1, "lock", &lock_info);
    rt(2, "item", &items[0].1.encode());
    rt(3, "inode", &inodes[1].1.encode());
    rt(4, "config", &config.encode());
    rt(5, "key-object", &key_object.encode());
    rt(6, "index-delta", &delta);

    ec_seeds(&w);

    check(&dir);
    println!("seeds written to {}", dir.display());
}

/// `ec_shards` inputs: K, M, then each shard as a u16 LE length and its
/// bytes.
fn ec_input(p: EcParams, shards: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![p.k, p.m];
    for s in shards {
        out.extend_from_slice(&(s.len() as u16).to_le_bytes());
        out.extend_from_slice(s);
    }
    out
}

/// One object's shards as written (version 2), as an old repository holds
/// them (version 1), and of two versions of one object mixed.
fn ec_seeds(w: &dyn Fn(&str, &str, &[u8])) {
    let p = EcParams { k: 2, m: 1 };
    let a: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    let mut b = a.clone();
    b[150] ^= 1;
    let v2 = ec::encode(p, &a).unwrap();
    let v1 = ec::encode_as(p, &a, 1).unwrap();
    let other = ec::encode(p, &b).unwrap();
    w("ec_shards", "v2", &ec_input(p, &[&v2[0], &v2[1], &v2[2]]));
    w("ec_shards", "v1", &ec_input(p, &[&v1[0], &v1[1], &v1[2]]));
    w(
        "ec_shards",
        "v1-v2",
        &ec_input(p, &[&v1[0], &v2[1], &v1[2]]),
    );
    w(
        "ec_shards",
        "two-versions",
        &ec_input(p, &[&other[0], &v2[1], &v2[2]]),
    );
    let p = EcParams { k: 3, m: 2 };
    let s = ec::encode(p, b"hello, world").unwrap();
    let all: Vec<&[u8]> = s.iter().map(|x| &x[..]).collect();
    w("ec_shards", "3+2", &ec_input(p, &all));
}

/// Every seed decodes: the fuzzers start past the first check.
fn check(dir: &Path) {
    use secrate::crypto::age_decrypt;
    use secrate::repo::keys::decode_keyring;
    use secrate::repo::pack::{decode_blob_body, open_blob};
    let keys = keys();
    for entry in fs::read_dir(dir).unwrap() {
        let target_dir = entry.unwrap().path();
        let target = target_dir.file_name().unwrap().to_str().unwrap().to_owned();
        for seed in fs::read_dir(&target_dir).unwrap() {
            let path = seed.unwrap().path();
            let b = fs::read(&path).unwrap();
            let ok = match target.as_str() {
                "config" => Config::decode(&b).is_ok(),
                "key_object" => KeyObject::decode(&b).is_ok(),
                "key_removal" => {
                    Removal::decode(Removed::Key, &b).is_ok()
                        || Removal::decode(Removed::Snapshot, &b).is_ok()
                        || ForgottenSet::decode(&b).is_ok()
                }
                "keyring" => decode_keyring(&b).is_ok(),
                "blob_body" => decode_blob_body(&b).is_ok(),
                "pack_header" => {
                    let size = u64::from_le_bytes(b[..8].try_into().unwrap());
                    let start = u64::from_le_bytes(b[8..16].try_into().unwrap());
                    secrate::repo::pack::decode_header(&b[16..], Id([0; 32]), size, start).is_ok()
                }
                "pack_file" => {
                    let r = header_range(&b, b.len() as u64).unwrap();
                    let header = &b[r.start as usize..r.end as usize];
                    age_decrypt(keys.meta_identity(), header).is_ok()
                }
                "index_delta" => secrate::repo::index::decode_delta(&b).is_ok(),
                "damage_record" => secrate::repo::damage::DamageRecord::decode(&b).is_ok(),
                "tree" | "tree_roundtrip" => Tree::decode(&b).is_ok(),
                "snapshot" => Snapshot::decode(&b).is_ok(),
                "lock_info" => LockInfo::decode(&b).is_ok(),
                "sealed_open" => [index::MAGIC, snapshot::MAGIC, lock::MAGIC]
                    .iter()
                    .any(|m| sealed::open(keys, m, 1, &b).is_ok()),
                "open_blob" => {
                    let kind = BlobKind::from_u8(b[0]).unwrap();
                    let id = Id(b[1..33].try_into().unwrap());
                    open_blob(keys, pack_key(), kind, &id, &b[33..]).is_ok()
                }
                "inode_record" => Inode::decode(&b).is_ok(),
                "outbox_item" => Item::decode(&b).is_ok(),
                "age_decrypt" => age_decrypt(keys.meta_identity(), &b).is_ok(),
                "roundtrip" => !b.is_empty(),
                "ec_shards" => {
                    let n = u16::from_le_bytes([b[2], b[3]]) as usize;
                    ec::verify(&b[4..4 + n]).is_ok()
                }
                t => panic!("seeds for unknown target {t}"),
            };
            assert!(ok, "seed {} does not decode", path.display());
        }
    }
}

//! The repository on a store: the one place that knows the format.
//!
//! Objects: `config` (plaintext, checksummed), `keys/<id>` (the keyring,
//! age-encrypted per passphrase or recovery key), `keys-removed/<id>` (a
//! removed key, tagged with the keyring), `packs/<2 hex>/<id>`
//! (sealed blobs), `index/<id>` (where each blob is), `snapshots/<id>`,
//! `damage/<id>` (blobs `repair` found lost for good), and `locks/writer`.
//! Packs, index deltas, snapshots and damage records are named by the BLAKE3
//! hash of their bytes and are never modified; every whole-object read
//! checks the name (a ranged read of one blob is checked by its AEAD tag and
//! keyed id instead). A blob stored in several packs is read from its
//! other copies when the first is missing or fails to verify (`read_blob`),
//! never when the store merely fails.
//!
//! Write order keeps the store consistent at every instant: packs first, then
//! the index deltas that list them, then the snapshot that needs them.
//! docs/FORMAT.md describes every byte.

pub mod codec;
pub mod config;
pub mod damage;
pub mod index;
pub mod keys;
pub mod lock;
pub mod pack;
pub mod removal;
pub mod sealed;
pub mod snapshot;
pub mod tree;
pub mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use bytes::Bytes;
use zeroize::Zeroizing;

use crate::crypto::{
    age_decrypt, age_encrypt, parse_identity, passphrase_identity, passphrase_recipient, AgeError,
    BlobKind, ChunkerParams, Id, Keyring, PackKey,
};
use crate::error::{Error, Result};
use crate::store::{ObjectInfo, Store};

use self::config::Config;
use self::damage::{damage_name, DamageRecord};
use self::index::{decode_delta, encode_delta, index_name, BlobLoc, Index, PackMeta};
use self::keys::{
    decode_keyring, encode_keyring, removal_name, removed_key_name, KeyKind, KeyObject, REMOVED_DIR,
};
use self::lock::WriterLock;
use self::pack::{pack_id_from_name, pack_name, PackBlob, PackInfo};
use self::removal::{ForgottenSet, Removal, Removed};
use self::snapshot::{snapshot_name, Snapshot};
use self::tree::Tree;

/// Snapshots with their ids, oldest first.
pub type SnapshotList = Vec<(Id, Snapshot)>;

/// The forgotten set records read.
#[derive(Default)]
struct ForgottenSets {
    /// The sets that hold, by name.
    held: Vec<(String, Arc<ForgottenSet>)>,
    /// Sets that do not hold, with why.
    bad: Vec<Error>,
}

impl ForgottenSets {
    /// Every snapshot a set that holds names.
    fn ids(&self) -> HashSet<Id> {
        self.held
            .iter()
            .flat_map(|(_, set)| set.ids.iter().copied())
            .collect()
    }
}

/// What `Repository::list_snapshots` found.
#[derive(Debug, Default)]
pub struct SnapshotListing {
    /// The snapshots there are.
    pub ids: Vec<Id>,
    /// Listed, but `forget` deleted them (their record checks): a store
    /// still holds an old copy. Not snapshots.
    pub forgotten: Vec<Id>,
    /// Records of listed snapshots that do not check (damaged, forged):
    /// ignored, their snapshots are in `ids`.
    pub bad_records: Vec<Error>,
}

/// What unlocks a repository.
pub enum Secret {
    Passphrase(Zeroizing<String>),
    /// An age X25519 identity (`AGE-SECRET-KEY-1…`), from `init`'s recovery key.
    RecoveryKey(Zeroizing<String>),
}

impl Secret {
    /// The secret as a mount hands it to its background copy (through a
    /// pipe): its kind on a line, then its bytes, exactly, up to the end.
    pub fn handover(&self) -> Zeroizing<Vec<u8>> {
        let (kind, value) = match self {
            Secret::Passphrase(p) => ("passphrase", p),
            Secret::RecoveryKey(k) => ("recovery", k),
        };
        let mut out = Zeroizing::new(Vec::with_capacity(kind.len() + 1 + value.len()));
        out.extend_from_slice(kind.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(value.as_bytes());
        out
    }

    /// Read what `handover` wrote, to the end of `r`.
    pub fn read_handover(r: &mut dyn std::io::Read) -> std::io::Result<Secret> {
        let mut all = Zeroizing::new(String::new());
        r.read_to_string(&mut all)?;
        let (kind, value) = all.split_once('\n').ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "no secret was handed over")
        })?;
        let value = Zeroizing::new(value.to_string());
        Ok(match kind {
            "recovery" => Secret::RecoveryKey(value),
            _ => Secret::Passphrase(value),
        })
    }
}

pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub pack_target: u32,
    /// scrypt work factor for the passphrase key (`N = 2^log_n`).
    pub kdf_log_n: u8,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::DEFAULT,
            pack_target: config::DEFAULT_PACK_TARGET,
            kdf_log_n: DEFAULT_KDF_LOG_N,
        }
    }
}

/// 2^18 scrypt: about a second and 256 MiB here, once per command.
pub const DEFAULT_KDF_LOG_N: u8 = 18;

pub struct Repository {
    store: Store,
    config: Config,
    keys: Arc<Keyring>,
    /// The key object that unlocked this repository (`keys/<id>`).
    key_name: String,
    /// Key objects the secret opened that hold another repository's
    /// keyring (found while unlocking; others are not known).
    foreign_keys: Vec<String>,
    index: RwLock<Index>,
    loaded_deltas: Mutex<HashSet<String>>,
    pack_keys: Mutex<HashMap<Id, PackKey>>,
    /// Packs the index lists that a read found gone from the store (pruned
    /// by another writer since the index was loaded, or lost): their copies
    /// are read last.
    gone_packs: Mutex<HashSet<Id>>,
    /// When `reload_index_since` last began to load new index deltas.
    index_reloaded: Mutex<Option<std::time::Instant>>,
    /// Snapshots whose forgotten record was read and checked: records are
    /// never changed, so each is read once (a mount lists often).
    forgotten: Mutex<HashSet<Id>>,
    /// Forgotten set records read, by name (content-addressed: each is
    /// read once): the ids of one that holds, or why its bytes do not (a
    /// read that failed is not kept). Only the sets last listed.
    forgotten_sets: Mutex<HashMap<String, std::result::Result<Arc<ForgottenSet>, String>>>,
}

/// `reload_index_since` lists the index at most this often.
const INDEX_RELOAD_GAP: std::time::Duration = std::time::Duration::from_secs(1);

fn now_secs() -> i64 {
    lock::now_ns() / 1_000_000_000
}

impl Repository {
    /// Create a repository. Returns it and the recovery key, which exists
    /// nowhere else once the caller has shown it.
    pub fn init(
        store: Store,
        passphrase: &str,
        opts: InitOptions,
    ) -> Result<(Repository, Zeroizing<String>)> {
        if !opts.chunker.is_valid() {
            return Err(Error::Invalid(
                "chunk sizes must be even, min ≤ avg ≤ max, within fastcdc's limits".into(),
            ));
        }
        if store.head(config::NAME)?.is_some() {
            return Err(Error::RepositoryExists {
                url: store.url().into(),
            });
        }
        let repo_id: [u8; 16] = crate::crypto::random_bytes();
        let keys = Keyring::generate(repo_id, opts.chunker);
        let config = Config {
            repo_id,
            created: now_secs(),
            chunker: opts.chunker,
            pack_target: opts.pack_target,
        };
        let recovery = age::x25519::Identity::generate();
        let recovery_text = crate::crypto::identity_to_string(&recovery);
        let plain = encode_keyring(&keys);
        let pass = passphrase_recipient(passphrase, opts.kdf_log_n);
        let pass_id = write_key(
            &store,
            KeyKind::Passphrase,
            false,
            age_encrypt(&pass, &plain),
        )?;
        write_key(
            &store,
            KeyKind::Recovery,
            false,
            age_encrypt(&recovery.to_public(), &plain),
        )?;
        if !store.put_new(config::NAME, Bytes::from(config.encode()))? {
            return Err(Error::RepositoryExists {
                url: store.url().into(),
            });
        }
        Ok((
            Repository::from_parts(store, config, keys, format!("keys/{pass_id}")),
            recovery_text,
        ))
    }

    fn from_parts(store: Store, config: Config, keys: Keyring, key_name: String) -> Repository {
        Repository {
            store,
            config,
            keys: Arc::new(keys),
            key_name,
            foreign_keys: Vec::new(),
            index: RwLock::new(Index::new()),
            loaded_deltas: Mutex::new(HashSet::new()),
            pack_keys: Mutex::new(HashMap::new()),
            gone_packs: Mutex::new(HashSet::new()),
            index_reloaded: Mutex::new(None),
            forgotten: Mutex::new(HashSet::new()),
            forgotten_sets: Mutex::new(HashMap::new()),
        }
    }

    /// Read the config.
    pub fn read_config(store: &Store) -> Result<Config> {
        let bytes = match store.get(config::NAME) {
            Ok(b) => b,
            Err(Error::Missing { .. }) => {
                return Err(Error::NoRepository {
                    url: store.url().into(),
                })
            }
            Err(e) => return Err(e),
        };
        Config::decode(&bytes).map_err(|e| Error::corrupt(config::NAME, e.0))
    }

    /// Open and unlock a repository.
    pub fn open(store: Store, secret: &Secret) -> Result<Repository> {
        let config = Repository::read_config(&store)?;
        let (keys, key_name, foreign) = unlock(&store, secret, &config.repo_id)?;
        if keys.repo_id != config.repo_id || keys.chunker != config.chunker {
            return Err(Error::corrupt(
                config::NAME,
                "it does not match the keyring (tampered, or keys from another repository)",
            ));
        }
        let mut repo = Repository::from_parts(store, config, keys, key_name);
        repo.foreign_keys = foreign;
        Ok(repo)
    }

    /// Key objects that the secret used to unlock opened but that hold the
    /// keyring of another repository. Any other key is known only to its
    /// own secret.
    pub fn foreign_keys(&self) -> &[String] {
        &self.foreign_keys
    }

    /// The key objects (`keys/<id>`) that a removal record made with this
    /// keyring names: removed, whatever store still holds them.
    pub fn removed_keys(&self) -> Result<HashSet<String>> {
        let mut out = HashSet::new();
        for rec in self.store.list_names(REMOVED_DIR)? {
            if let Some(key) = removed_key_name(&rec) {
                if removal_holds(&self.store, &key, &self.keys) {
                    out.insert(key);
                }
            }
        }
        Ok(out)
    }

    /// Remove the key object `name` for good: its removal record goes to
    /// every store first, then the object is deleted. A store that missed
    /// the delete (down, or an older copy given back later) may still hold
    /// it; the record keeps it from opening the repository and `sync` from
    /// spreading it.
    pub fn retire_key(&self, name: &str) -> Result<()> {
        let id = name.trim_start_matches("keys/");
        let rec = Removal::new(&self.keys, Removed::Key, id, now_secs());
        self.store
            .put_new(&removal_name(name), Bytes::from(rec.encode()))?;
        self.store.delete(name)
    }

    /// The key object this repository was unlocked with.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn url(&self) -> &str {
        self.store.url()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn keys(&self) -> &Arc<Keyring> {
        &self.keys
    }

    pub fn chunker(&self) -> crate::chunk::Chunker {
        crate::chunk::Chunker::new(self.config.chunker, self.keys.chunker_seed())
    }

    /// Add another way in (a passphrase or a recovery identity); returns
    /// the new key's id. A write-only key opens a keyring without the data
    /// identity. Only a key that can read may add one that can.
    pub fn add_key(&self, secret: &Secret, write_only: bool, kdf_log_n: u8) -> Result<String> {
        if !write_only && !self.keys.can_read_data() {
            return Err(Error::WriteOnly {
                what: "a write-only key cannot create a key that reads".into(),
            });
        }
        let ring = if write_only {
            self.keys.write_only()
        } else {
            self.keys.try_clone()
        };
        let plain = encode_keyring(&ring);
        match secret {
            Secret::Passphrase(p) => {
                let r = passphrase_recipient(p, kdf_log_n);
                write_key(
                    &self.store,
                    KeyKind::Passphrase,
                    write_only,
                    age_encrypt(&r, &plain),
                )
            }
            Secret::RecoveryKey(k) => {
                let id = parse_identity(k).ok_or_else(|| {
                    Error::Invalid("not an age identity (AGE-SECRET-KEY-1…)".into())
                })?;
                write_key(
                    &self.store,
                    KeyKind::Recovery,
                    write_only,
                    age_encrypt(&id.to_public(), &plain),
                )
            }
        }
    }

    /// Every key object: name, kind, write-only, creation time; a damaged
    /// one with why (after the others), so that it can be listed and
    /// removed.
    pub fn list_keys(&self) -> Result<Vec<(String, Result<KeyObject>)>> {
        let mut out = Vec::new();
        for o in self.store.list("keys")? {
            let obj = match self.store.get(&o.name) {
                Ok(bytes) => KeyObject::decode(&bytes).map_err(|e| Error::corrupt(&o.name, e.0)),
                Err(e) if e.is_damage() => Err(e),
                Err(e) => return Err(e),
            };
            out.push((o.name, obj));
        }
        let created = |o: &Result<KeyObject>| o.as_ref().map(|k| k.created).unwrap_or(i64::MAX);
        out.sort_by(|a, b| created(&a.1).cmp(&created(&b.1)).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Remove a key object. The last key that can read is never removed.
    pub fn remove_key(&self, id_prefix: &str) -> Result<String> {
        self.remove_key_then(id_prefix, || {})
    }

    /// `remove_key`, with `meanwhile` run between the check that a key
    /// that can read is left and the delete (where another process's key
    /// change may land).
    fn remove_key_then(&self, id_prefix: &str, meanwhile: impl FnOnce()) -> Result<String> {
        let prefix = id_prefix.trim_start_matches("keys/");
        if prefix.is_empty() || !prefix.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::Invalid(format!(
                "{id_prefix:?} is not a key id (hex, as `secrate key list` shows it)"
            )));
        }
        let keys = self.list_keys()?;
        let want = format!("keys/{}", prefix.to_ascii_lowercase());
        let matches: Vec<_> = keys.iter().filter(|(n, _)| n.starts_with(&want)).collect();
        let (name, obj) = match matches.as_slice() {
            [one] => *one,
            [] => {
                return Err(Error::Invalid(format!(
                    "no key {id_prefix} in this repository"
                )))
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "key id {id_prefix} is ambiguous; give more digits"
                )))
            }
        };
        let removed = self.removed_keys()?;
        if removed.contains(name) {
            // Already removed; this is a copy an older store brought back.
            self.store.delete(name)?;
            return Ok(name.clone());
        }
        // Keys already removed, and keys known to open another repository,
        // let no one read this one.
        let readers_left = keys
            .iter()
            .filter(|(n, o)| n != name && can_read_now(n, o, &removed, &self.foreign_keys))
            .count();
        // A damaged key object opens nothing: it may always go.
        if obj.as_ref().is_ok_and(|o| !o.write_only) && readers_left == 0 {
            return Err(Error::Invalid(
                "this is the last key that can read the repository; add another (secrate key add) before removing it".into(),
            ));
        }
        let reader = obj.as_ref().is_ok_and(|o| !o.write_only);
        let raw = if reader {
            Some(self.store.get(name)?)
        } else {
            None
        };
        meanwhile();
        self.retire_key(name)?;
        // Two removals at once (of the passphrase here, of the recovery key
        // elsewhere) each saw the other's key left. Looked at again after
        // the delete: the last to look finds none that can read and puts
        // its own back, so one always stays.
        if let Some(raw) = raw {
            let removed = self.removed_keys()?;
            let left = self
                .list_keys()?
                .iter()
                .filter(|(n, o)| can_read_now(n, o, &removed, &self.foreign_keys))
                .count();
            if left == 0 {
                // The record first: a key put back under its own removal
                // record would still open nothing.
                self.store.delete(&removal_name(name))?;
                self.store.put_new(name, raw)?;
                return Err(Error::Invalid(
                    "another key change removed the other keys that can read at the same time; this key was put back".into(),
                ));
            }
        }
        Ok(name.clone())
    }

    /// Create a recovery key (an age identity); returns its key name and text.
    pub fn add_recovery_key(&self, write_only: bool) -> Result<(String, Zeroizing<String>)> {
        let id = age::x25519::Identity::generate();
        let text = crate::crypto::identity_to_string(&id);
        let name = self.add_key(
            &Secret::RecoveryKey(text.clone()),
            write_only,
            DEFAULT_KDF_LOG_N,
        )?;
        Ok((format!("keys/{name}"), text))
    }

    pub fn lock(&self, purpose: &str) -> Result<WriterLock> {
        WriterLock::acquire(&self.store, self.keys.clone(), purpose, "")
    }

    /// The writer lock for a mount whose outbox is `outbox` (see
    /// `lock.rs`: a stopped mount's lock is broken only by its cache).
    pub fn lock_mount(&self, purpose: &str, outbox: &str) -> Result<WriterLock> {
        WriterLock::acquire(&self.store, self.keys.clone(), purpose, outbox)
    }

    /// Remove the lock of a writer that is gone (`secrate unlock`).
    pub fn unlock(&self) -> Result<Option<crate::repo::lock::LockInfo>> {
        crate::repo::lock::unlock(&self.store, &self.keys)
    }

    // ---- index ----

    pub fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add_to_index(&self, packs: &[PackInfo]) {
        let mut ix = self.index.write().unwrap_or_else(|e| e.into_inner());
        for p in packs {
            ix.add_pack(p);
        }
    }

    /// Drop `packs` from the in-memory index: an outbox pack found damaged
    /// before its upload, or one the store no longer holds. Their blobs
    /// are then unindexed, so a writer stores them again when it meets
    /// their content.
    pub fn drop_packs(&self, packs: &[Id]) {
        let gone: HashSet<Id> = packs.iter().copied().collect();
        let mut ix = self.index.write().unwrap_or_else(|e| e.into_inner());
        if packs.iter().any(|p| ix.has_pack(p)) {
            *ix = ix.without_packs(&gone);
        }
    }

    /// Load every index delta not loaded yet. Returns the deltas that could
    /// not be read (missing or corrupt), as errors to report: the packs they
    /// listed can be recovered with `index_unindexed_packs`.
    pub fn load_index(&self) -> Result<Vec<Error>> {
        let names = self.store.list_names("index")?;
        Ok(self.load_deltas(names))
    }

    /// Load the index deltas `names` (a listing) not loaded yet. One that
    /// is gone when read and stays gone (deleted since the listing: a prune
    /// or repair replaced it) is no problem; it counts as loaded, so that
    /// `loaded_deltas_gone` tells the caller the index was rewritten.
    fn load_deltas(&self, names: Vec<String>) -> Vec<Error> {
        let todo: Vec<String> = {
            let loaded = self.loaded_deltas.lock().unwrap_or_else(|e| e.into_inner());
            names.into_iter().filter(|n| !loaded.contains(n)).collect()
        };
        use rayon::prelude::*;
        let results: Vec<(String, Result<Vec<PackInfo>>)> = todo
            .into_par_iter()
            .map(|n| {
                let r = self.read_delta(&n);
                (n, r)
            })
            .collect();
        let mut problems = Vec::new();
        let mut loaded = Vec::new();
        let packs = results
            .into_iter()
            .filter_map(|(name, r)| match r {
                Ok(packs) => {
                    loaded.push(name);
                    Some(packs)
                }
                Err(e) if e.is_missing() && self.gone_since_listed(&name) => {
                    loaded.push(name);
                    None
                }
                Err(e) => {
                    problems.push(e);
                    None
                }
            })
            .flatten();
        self.index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .add_packs(packs);
        self.loaded_deltas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(loaded);
        problems
    }

    /// An object a listing named that is gone now, by a second look (not a
    /// store that failed to serve it).
    fn gone_since_listed(&self, name: &str) -> bool {
        matches!(self.store.head(name), Ok(None))
    }

    /// Whether an index delta this process loaded is gone from the store:
    /// a prune or repair replaced the index (one listing).
    pub fn loaded_deltas_gone(&self) -> Result<bool> {
        let listed: HashSet<String> = self.store.list_names("index")?.into_iter().collect();
        Ok(self
            .loaded_deltas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|n| !listed.contains(n)))
    }

    /// Forget the index loaded so far and load it again from the deltas
    /// the store lists now. For a writer that loaded it before it took the
    /// lock: a prune that ran in between replaced deltas, and the packs
    /// only those listed are gone on purpose, not lost.
    pub fn load_index_afresh(&self) -> Result<Vec<Error>> {
        self.forget_index();
        self.load_index()
    }

    /// Make `packs` the whole in-memory index and `deltas` the deltas it
    /// was loaded from, in one step: a prune that wrote them as the new
    /// complete index and is about to delete what they leave out. A
    /// reader never sees an empty or half-built index meanwhile.
    pub fn replace_index(&self, packs: Vec<PackInfo>, deltas: HashSet<String>) {
        let mut ix = Index::new();
        ix.add_packs(packs);
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = ix;
        *self.loaded_deltas.lock().unwrap_or_else(|e| e.into_inner()) = deltas;
    }

    /// Forget the index loaded so far: the next `load_index` loads every
    /// delta the store lists then.
    pub fn forget_index(&self) {
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Index::new();
        self.loaded_deltas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Drop from the in-memory index every pack the store does not hold
    /// (a lost pack, or an old index delta replayed into the store), so
    /// that a writer never dedups against blobs that are gone and a reader
    /// looks for each blob where it still is. Call it right after
    /// `load_index`: the index is rebuilt from the deltas loaded so far,
    /// since a blob kept only its first location. Returns the missing packs.
    pub fn forget_missing_packs(&self) -> Result<Vec<Id>> {
        let listed: HashSet<Id> = self
            .store
            .list("packs")?
            .iter()
            .filter_map(|o| pack_id_from_name(&o.name))
            .collect();
        let missing: Vec<Id> = self
            .index()
            .packs()
            .iter()
            .map(|p| p.id)
            .filter(|id| !listed.contains(id))
            .collect();
        if missing.is_empty() {
            return Ok(missing);
        }
        let names: Vec<String> = self
            .loaded_deltas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut kept = Vec::new();
        for name in names {
            let packs = match self.read_delta(&name) {
                Ok(packs) => packs,
                // Gone since it was loaded: a prune or repair replaced it
                // with a complete delta, written first (and loaded by the
                // `load_index` before this), or it was lost. Either way
                // what it listed is in the store only as far as another
                // delta says so.
                Err(Error::Missing { .. }) => {
                    self.loaded_deltas
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&name);
                    continue;
                }
                Err(e) => return Err(e),
            };
            kept.extend(packs.into_iter().filter(|p| listed.contains(&p.id)));
        }
        let mut fresh = Index::new();
        fresh.add_packs(kept);
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        // Out of the index now: nothing reads them.
        self.gone_packs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| !missing.contains(p));
        Ok(missing)
    }

    fn read_delta(&self, name: &str) -> Result<Vec<PackInfo>> {
        let bytes = self.store.get(name)?;
        check_name(name, "index/", &bytes)?;
        let plain = sealed::open(&self.keys, index::MAGIC, index::VERSION, &bytes)
            .map_err(|e| Error::corrupt(name, e.0))?;
        decode_delta(&plain).map_err(|e| Error::corrupt(name, e.0))
    }

    /// An index delta listing `packs`, sealed: its id and bytes.
    pub fn seal_index(&self, packs: &[PackInfo]) -> (Id, Vec<u8>) {
        let bytes = sealed::seal(
            &self.keys,
            index::MAGIC,
            index::VERSION,
            &encode_delta(packs),
        );
        (Id::of_object(&bytes), bytes)
    }

    /// A snapshot object, sealed: its id and bytes.
    pub fn seal_snapshot(&self, s: &Snapshot) -> (Id, Vec<u8>) {
        let bytes = sealed::seal(&self.keys, snapshot::MAGIC, s.version(), &s.encode());
        (Id::of_object(&bytes), bytes)
    }

    /// Upload an object sealed earlier, from its outbox file. Objects are
    /// content-addressed, so finding one already there is success.
    ///
    /// The file may have waited on the local disk for days (offline, a
    /// crash and restart): what the store gets is hashed again first, and
    /// a file that no longer hashes to its name is never uploaded
    /// (`Error::OutboxDamaged`). The bytes a store is sent are checked as
    /// they are read; a `file://` store, which gets a hard link to the file
    /// instead, has the file hashed through a small buffer before the link.
    /// Per GiB: 0.15 s of CPU (BLAKE3) where the bytes are read anyway,
    /// 0.19 s where they are linked, plus a read of the file from the
    /// cache disk if its pages are gone (docs/benchmarks.md, "outbox
    /// check").
    pub fn put_sealed(&self, name: &str, path: &std::path::Path) -> Result<()> {
        let damaged = || Error::OutboxDamaged {
            path: path.to_path_buf(),
            object: name.to_string(),
        };
        // Every outbox object is named by the hash of its bytes.
        let id = crate::store::content_addressed(name).ok_or_else(damaged)?;
        if self.store.may_link_files() {
            let mut h = blake3::Hasher::new();
            let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            h.update_reader(f).map_err(|e| Error::io(path, e))?;
            if h.finalize().as_bytes() != &id {
                return Err(damaged());
            }
        }
        let read = || {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            if blake3::hash(&bytes).as_bytes() != &id {
                return Err(damaged());
            }
            Ok(Bytes::from(bytes))
        };
        self.store.put_file_new_from(name, path, &read)?;
        if name.starts_with("index/") {
            self.loaded_deltas
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_string());
        }
        Ok(())
    }

    /// Store an index delta listing `packs` (which must all be stored).
    pub fn write_index(&self, packs: &[PackInfo]) -> Result<Id> {
        let (id, bytes) = self.seal_index(packs);
        let name = index_name(&id);
        self.store.put_new(&name, Bytes::from(bytes))?;
        self.loaded_deltas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name);
        self.add_to_index(packs);
        Ok(id)
    }

    /// Find packs in the store that no loaded index lists (a writer died
    /// after storing them, or their index delta was lost), and read their
    /// headers. The caller decides whether to write an index delta for them.
    pub fn find_unindexed_packs(&self) -> Result<(Vec<PackInfo>, Vec<Error>)> {
        let listed = self.store.list("packs")?;
        Ok(self.unindexed_packs_of(listed))
    }

    /// `find_unindexed_packs` on a listing: a pack gone when its header is
    /// read and still gone (deleted since the listing: a prune) is left
    /// out, not reported.
    fn unindexed_packs_of(&self, listed: Vec<ObjectInfo>) -> (Vec<PackInfo>, Vec<Error>) {
        let todo: Vec<_> = {
            let ix = self.index();
            listed
                .into_iter()
                .filter(|o| pack_id_from_name(&o.name).is_some_and(|id| !ix.has_pack(&id)))
                .collect()
        };
        use rayon::prelude::*;
        let results: Vec<(&ObjectInfo, Result<PackInfo>)> = todo
            .par_iter()
            .filter_map(|o| {
                let id = pack_id_from_name(&o.name)?;
                Some((o, self.read_pack_header(&id, o.size)))
            })
            .collect();
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        for (o, r) in results {
            match r {
                Ok(p) => ok.push(p),
                Err(e) if e.is_missing() && self.gone_since_listed(&o.name) => {}
                Err(e) => bad.push(e),
            }
        }
        (ok, bad)
    }

    /// Read and decrypt a pack's own header.
    pub fn read_pack_header(&self, id: &Id, size: u64) -> Result<PackInfo> {
        let name = pack_name(id);
        let start = size.saturating_sub(pack::TAIL_GUESS);
        let tail = self.store.get_range(&name, start..size)?;
        let range = pack::header_range(&tail, size).map_err(|e| Error::corrupt(&name, e.0))?;
        let header = if range.start >= start {
            tail.slice((range.start - start) as usize..(range.end - start) as usize)
        } else {
            self.store.get_range(&name, range.clone())?
        };
        let plain = match age_decrypt(self.keys.meta_identity(), &header) {
            Ok(p) => p,
            Err(_) => return Err(Error::corrupt(&name, "its header does not decrypt")),
        };
        pack::decode_header(&plain, *id, size, range.start).map_err(|e| Error::corrupt(&name, e.0))
    }

    // ---- packs and blobs ----

    pub fn put_pack(&self, info: &PackInfo, bytes: Vec<u8>) -> Result<()> {
        self.store
            .put_new(&pack_name(&info.id), Bytes::from(bytes))?;
        Ok(())
    }

    /// The key of a pack, unwrapped once and cached.
    pub fn pack_key(&self, pack: &PackMeta) -> Result<PackKey> {
        if let Some(k) = self
            .pack_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pack.id)
        {
            return Ok(k.clone());
        }
        let identity = self
            .keys
            .pack_key_identity(pack.kind)
            .ok_or_else(|| Error::WriteOnly {
                what: "reading file contents needs a full key".into(),
            })?;
        let name = pack_name(&pack.id);
        let plain = match age_decrypt(identity, &pack.wrapped_key) {
            Ok(p) => p,
            Err(AgeError::NoMatchingKey) => {
                return Err(Error::corrupt(
                    &name,
                    "its key is not wrapped to this repository",
                ))
            }
            Err(AgeError::Damaged(why)) => {
                return Err(Error::corrupt(
                    &name,
                    format!("its wrapped key is damaged ({why})"),
                ))
            }
        };
        let key = PackKey::from_bytes(&plain)
            .ok_or_else(|| Error::corrupt(&name, "its key has the wrong length"))?;
        self.pack_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pack.id, key.clone());
        Ok(key)
    }

    /// Read, decrypt and verify one blob, from another copy of it if the
    /// one lookups find is damaged.
    pub fn read_blob(&self, kind: BlobKind, id: &Id) -> Result<Vec<u8>> {
        self.read_blob_noting(kind, id).map(|(data, _)| data)
    }

    /// As `read_blob`, with the errors of the damaged copies it read past
    /// (empty unless a copy is damaged).
    ///
    /// The copy lookups find is read first, with no other request and no
    /// other index query: the others are looked up only after it failed.
    /// Only damage (a missing pack, bytes that fail to verify) sends the
    /// read to the next copy; any other error (the store failing, a key
    /// that cannot read) says nothing about the data and is returned as
    /// it is.
    pub fn read_blob_noting(&self, kind: BlobKind, id: &Id) -> Result<(Vec<u8>, Vec<Error>)> {
        if id.is_lost() {
            return Err(Error::Lost {
                what: format!("{} blob", kind.name()),
            });
        }
        let (pack, loc) = self.first_copy(kind, id)?;
        match self.read_blob_at(kind, id, &pack, loc) {
            Ok(data) => Ok((data, Vec::new())),
            Err(e) if e.is_damage() => self.read_blob_elsewhere(kind, id, (pack.id, loc), e),
            Err(e) => Err(e),
        }
    }

    /// Read blob `id` from its copies other than `failed` (a pack and a
    /// place in it), after reading it there failed with damage `first`:
    /// each in turn, until one reads. Returns the bytes and the errors of
    /// the damaged copies read past, `first` among them; `first` if every
    /// copy is damaged (or there is no other); any other error as it is,
    /// at once (it says nothing about whether the blob is lost).
    ///
    /// When every copy it knows of failed and a pack was missing, the blob
    /// may have moved: a prune by another writer (this process loaded the
    /// index before it: a read-only mount, a restore) stores the used blobs
    /// of a mostly unused pack again in a new pack, indexes them in a new
    /// delta and deletes the old pack. So the index deltas written since
    /// are loaded (`reload_index_since`) and the copies they add tried.
    pub fn read_blob_elsewhere(
        &self,
        kind: BlobKind,
        id: &Id,
        failed: (Id, BlobLoc),
        first: Error,
    ) -> Result<(Vec<u8>, Vec<Error>)> {
        let failed_at = std::time::Instant::now();
        let mut tried = vec![(failed.0, failed.1.offset)];
        let mut gone = self.note_gone(failed.0, &first);
        let mut damaged = vec![first];
        let mut reloaded = false;
        loop {
            let others: Vec<(PackMeta, BlobLoc)> = self
                .index()
                .copies(id)
                .into_iter()
                .filter(|(p, l)| !tried.contains(&(p.id, l.offset)))
                .map(|(p, l)| (p.clone(), l))
                .collect();
            for (pack, loc) in others {
                tried.push((pack.id, loc.offset));
                match self.read_blob_at(kind, id, &pack, loc) {
                    Ok(data) => return Ok((data, damaged)),
                    Err(e) if e.is_damage() => {
                        gone |= self.note_gone(pack.id, &e);
                        damaged.push(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            if reloaded || !gone || !self.reload_index_since(failed_at) {
                return Err(damaged.swap_remove(0));
            }
            reloaded = true;
        }
    }

    /// Where to read blob `id` first: its first copy, unless that copy's
    /// pack was found gone and another copy is in a pack not found gone.
    ///
    /// A blob the index does not list may have been stored since the
    /// index was loaded: a writer stores packs, then their index delta,
    /// then the snapshot, and a reader that listed the snapshot after
    /// loading the index (a read-only mount, `ls`, `restore`) would find
    /// its trees and chunks in no index. The deltas written since are
    /// loaded once before it counts as missing.
    pub fn first_copy(&self, kind: BlobKind, id: &Id) -> Result<(PackMeta, BlobLoc)> {
        let missing = || Error::Missing {
            url: self.url().into(),
            object: format!("{} blob {}", kind.name(), id.short()),
        };
        if !self.index().contains(id) && !self.reload_index_since(std::time::Instant::now()) {
            return Err(missing());
        }
        let ix = self.index();
        let (p, l) = ix.get(id).ok_or_else(missing)?;
        let gone = self.gone_packs.lock().unwrap_or_else(|e| e.into_inner());
        if gone.contains(&p.id) {
            if let Some((p, l)) = ix
                .copies(id)
                .into_iter()
                .find(|(p, _)| !gone.contains(&p.id))
            {
                return Ok((p.clone(), l));
            }
        }
        Ok((p.clone(), l))
    }

    /// After a read of a copy in `pack` failed with `e`: if the pack is
    /// missing from the store, remember it as gone (logged once per pack).
    /// True if it is missing.
    fn note_gone(&self, pack: Id, e: &Error) -> bool {
        if !matches!(e, Error::Missing { .. }) {
            return false;
        }
        let new = self
            .gone_packs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pack);
        if new {
            // Only what is known: the pack is missing. Whether its blobs
            // have another copy (a second pack, or one a prune wrote since)
            // is for the read to find out; with none the read fails and
            // says so itself.
            crate::log!(
                "pack {} is missing from the store (pruned by another writer, or lost)",
                pack.short()
            );
        }
        true
    }

    /// Load the index deltas written since the index was loaded, for a
    /// read that failed at `failed_at`; true if the caller should look
    /// again. A load that began after `failed_at` (another read's, done
    /// by the time this returns) serves: its result is there. Loads are at
    /// least `INDEX_RELOAD_GAP` apart, so a program reading lost data
    /// again and again does not list the store each time; within the gap
    /// the answer is false. That leaves a data race only for data stored
    /// within a second of the last load, and the failures that start one
    /// (a pack gone, a blob in no delta loaded) come after the deltas that
    /// answer them were written. False also if loading failed.
    fn reload_index_since(&self, failed_at: std::time::Instant) -> bool {
        let mut last = self
            .index_reloaded
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(t) = *last {
            if t >= failed_at {
                return true;
            }
            if t.elapsed() < INDEX_RELOAD_GAP {
                return false;
            }
        }
        *last = Some(std::time::Instant::now());
        match self.load_index() {
            Ok(problems) => {
                for p in problems {
                    crate::log!("warning: loading the index again: {p}");
                }
                true
            }
            Err(e) => {
                crate::log!("warning: loading the index again: {e}");
                false
            }
        }
    }

    /// Read, decrypt and verify the copy of blob `id` at `loc` in `pack`.
    pub fn read_blob_at(
        &self,
        kind: BlobKind,
        id: &Id,
        pack: &PackMeta,
        loc: BlobLoc,
    ) -> Result<Vec<u8>> {
        if pack.kind != kind {
            return Err(Error::corrupt(
                pack_name(&pack.id),
                format!(
                    "index lists blob {} in a pack of the other kind",
                    id.short()
                ),
            ));
        }
        let b = PackBlob {
            id: *id,
            offset: loc.offset,
            length: loc.length,
            raw_len: loc.raw_len,
        };
        self.read_blob_in(pack, &b)
    }

    /// Read, decrypt and verify the copy of a blob at `b` in `pack` (this
    /// copy only: `read_blob` tries the others when one is damaged).
    pub fn read_blob_in(&self, pack: &PackMeta, b: &PackBlob) -> Result<Vec<u8>> {
        let name = pack_name(&pack.id);
        let key = self.pack_key(pack)?;
        let range = b.offset as u64..b.offset as u64 + b.length as u64;
        let open = |sealed: &[u8]| {
            pack::open_blob(&self.keys, &key, pack.kind, &b.id, sealed)
                .map_err(|e| Error::corrupt(&name, e.0))
        };
        let sealed = self.store.get_range(&name, range.clone())?;
        match open(&sealed) {
            // On several stores the range came from one replica (or the
            // data shards) unchecked; the whole pack is checked against its
            // name on each store (or its shards' checksums, rebuilding from
            // parity) and is read from a good copy if there is one.
            Err(e) if self.store.is_redundant() => match self.store.get(&name) {
                Ok(whole) => {
                    let r = range.start as usize..range.end as usize;
                    whole.get(r).map_or(Err(e), open)
                }
                Err(_) => Err(e),
            },
            r => r,
        }
    }

    /// Every pack the store lists, with its size. On several stores, a
    /// pack listed at another size than the index gives (the size comes
    /// from one store) is read whole: when a good copy is found on any
    /// store, the index's size is given (`secrate sync` mends the others).
    pub fn listed_packs(&self) -> Result<HashMap<Id, u64>> {
        let mut listed: HashMap<Id, u64> = self
            .store
            .list("packs")?
            .into_iter()
            .filter_map(|o| pack_id_from_name(&o.name).map(|id| (id, o.size)))
            .collect();
        if self.store.is_redundant() {
            let ix = self.index();
            for p in ix.packs() {
                if let Some(size) = listed.get_mut(&p.id) {
                    if *size != p.size
                        && self
                            .store
                            .get(&pack_name(&p.id))
                            .is_ok_and(|b| b.len() as u64 == p.size)
                    {
                        *size = p.size;
                    }
                }
            }
        }
        Ok(listed)
    }

    pub fn read_tree(&self, id: &Id) -> Result<Tree> {
        self.read_tree_noting(id).map(|(t, _)| t)
    }

    /// As `read_tree`, with the errors of the damaged copies of the tree
    /// it read past (`read_blob_noting`).
    pub fn read_tree_noting(&self, id: &Id) -> Result<(Tree, Vec<Error>)> {
        let (raw, damaged) = self.read_blob_noting(BlobKind::Tree, id)?;
        // Every copy holds the bytes the keyed id names: one that verified
        // and does not decode, no other copy decodes either.
        let t =
            Tree::decode(&raw).map_err(|e| Error::corrupt(format!("tree {}", id.short()), e.0))?;
        Ok((t, damaged))
    }

    // ---- damage records ----

    /// Store a damage record (before the index that forgets its blobs).
    pub fn write_damage(&self, r: &DamageRecord) -> Result<Id> {
        let bytes = sealed::seal(&self.keys, damage::MAGIC, damage::VERSION, &r.encode());
        let id = Id::of_object(&bytes);
        self.store.put_new(&damage_name(&id), Bytes::from(bytes))?;
        Ok(id)
    }

    pub fn read_damage(&self, name: &str) -> Result<DamageRecord> {
        let bytes = self.store.get(name)?;
        check_name(name, "damage/", &bytes)?;
        let plain = sealed::open(&self.keys, damage::MAGIC, damage::VERSION, &bytes)
            .map_err(|e| Error::corrupt(name, e.0))?;
        DamageRecord::decode(&plain).map_err(|e| Error::corrupt(name, e.0))
    }

    /// Every blob a damage record lists, with its kind, plus the records
    /// that could not be read (to report: a lost blob they list is still
    /// missing from the index, so readers fail on it and writers store it
    /// again when they meet its content; only its marking is lost).
    pub fn recorded_damage(&self) -> Result<(HashMap<Id, BlobKind>, Vec<Error>)> {
        let names = self.store.list_names("damage")?;
        let mut all = HashMap::new();
        let mut problems = Vec::new();
        for n in names {
            match self.read_damage(&n) {
                Ok(r) => all.extend(r.lost.into_iter().map(|(k, id)| (id, k))),
                Err(e) => problems.push(e),
            }
        }
        Ok((all, problems))
    }

    /// Blobs lost for good: recorded by a damage record and not in the
    /// loaded index (a blob stored again since is indexed again: healed).
    pub fn lost_blobs(&self) -> Result<(HashMap<Id, BlobKind>, Vec<Error>)> {
        let (mut all, problems) = self.recorded_damage()?;
        let ix = self.index();
        all.retain(|id, _| !ix.contains(id));
        Ok((all, problems))
    }

    // ---- snapshots ----

    pub fn write_snapshot(&self, s: &Snapshot) -> Result<Id> {
        let (id, bytes) = self.seal_snapshot(s);
        self.store
            .put_new(&snapshot_name(&id), Bytes::from(bytes))?;
        Ok(id)
    }

    pub fn read_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let name = snapshot_name(id);
        let bytes = self.store.get(&name)?;
        check_name(&name, "snapshots/", &bytes)?;
        let plain = sealed::open_any(&self.keys, snapshot::MAGIC, snapshot::VERSIONS, &bytes)
            .map_err(|e| Error::corrupt(&name, e.0))?;
        Snapshot::decode(&plain).map_err(|e| Error::corrupt(&name, e.0))
    }

    /// Every snapshot, oldest first, plus the ones that could not be read.
    /// A snapshot listed but gone when read, and no longer in the store
    /// when asked again, was forgotten meanwhile (a mount's retention or a
    /// `forget` in another process): it is left out, not reported.
    pub fn snapshots(&self) -> Result<(SnapshotList, Vec<Error>)> {
        Ok(self.read_snapshots(self.snapshot_ids()?))
    }

    /// The ids of every snapshot in the store (one listing, nothing read
    /// but the forgotten records of listed snapshots, each once), less
    /// the snapshots `forget` deleted that a store still holds.
    pub fn snapshot_ids(&self) -> Result<Vec<Id>> {
        Ok(self.list_snapshots()?.ids)
    }

    /// The snapshots listed, split into those that count and those left
    /// over after `forget` (a record made with this repository's keys
    /// names them: a store that missed the delete still holds them).
    pub fn list_snapshots(&self) -> Result<SnapshotListing> {
        // Names only: a garbage shard under a name in one store fails the
        // read of that snapshot (reported), not the listing.
        let listed: Vec<Id> = self
            .store
            .list_names("snapshots")?
            .into_iter()
            .filter_map(|n| n.strip_prefix("snapshots/").and_then(Id::from_hex))
            .collect();
        let mut out = SnapshotListing::default();
        // Usually no listed snapshot has a record (nothing was left over):
        // then the records are listed but none is read, but for the sets,
        // each read once.
        let (names, sets) = self.forgotten_set_ids()?;
        let forgotten = sets.ids();
        out.bad_records = sets.bad;
        let records: HashSet<Id> = names
            .iter()
            .filter_map(|n| Removed::Snapshot.object_name(n))
            .filter_map(|n| n.strip_prefix("snapshots/").and_then(Id::from_hex))
            .collect();
        for id in listed {
            if forgotten.contains(&id) {
                out.forgotten.push(id);
                continue;
            }
            if !records.contains(&id) {
                out.ids.push(id);
                continue;
            }
            match self.forgotten_record(&id) {
                Ok(()) => out.forgotten.push(id),
                Err(e) => {
                    out.bad_records.push(e);
                    out.ids.push(id);
                }
            }
        }
        Ok(out)
    }

    /// The names in `snapshots-forgotten/`, and the ids of the set records
    /// among them that hold (each read once per process), with the sets
    /// that do not. A set gone when read (`prune` merged it into a new one
    /// since the listing) makes it list again.
    fn forgotten_set_ids(&self) -> Result<(Vec<String>, ForgottenSets)> {
        let mut tries = 0;
        'list: loop {
            tries += 1;
            let names = self.store.list_names(Removed::Snapshot.record_dir())?;
            // Only what the store still lists: a merged set is the whole
            // union, and a process that merges every hour (a mount) kept
            // every one it ever made or read.
            let sets: HashSet<&str> = names
                .iter()
                .filter(|n| ForgottenSet::is_set_name(n))
                .map(String::as_str)
                .collect();
            self.forgotten_sets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|n, _| sets.contains(n.as_str()));
            let mut out = ForgottenSets::default();
            for name in names.iter().filter(|n| ForgottenSet::is_set_name(n)) {
                match self.forgotten_set(name) {
                    Ok(set) => out.held.push((name.clone(), set)),
                    Err(Error::Missing { .. }) if tries < 3 => continue 'list,
                    Err(e) => out.bad.push(e),
                }
            }
            return Ok((names, out));
        }
    }

    /// The forgotten set record `name`, if it holds.
    fn forgotten_set(&self, name: &str) -> Result<Arc<ForgottenSet>> {
        let known = self
            .forgotten_sets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        let found = match known {
            Some(k) => k,
            None => {
                // Any store's copy that holds will do, as for single records.
                // Kept for good: a set that holds, or the very bytes of its
                // name refused (never otherwise, being named by their hash).
                // Not a read that failed (stores not answering, too few
                // shards, a damaged copy): the next listing reads it again.
                let refused = std::cell::Cell::new(false);
                let read = self.store.get_where(name, &|b| {
                    ForgottenSet::holds(name, b, &self.keys)
                        .map(|_| ())
                        .inspect_err(|_| refused.set(ForgottenSet::name_of(b) == name))
                });
                let found = match read {
                    Ok(b) => ForgottenSet::decode(&b).map(Arc::new).map_err(|e| e.0),
                    Err(Error::Corrupt { reason, .. }) => Err(reason),
                    Err(e) => return Err(e),
                };
                if found.is_ok() || refused.get() {
                    self.forgotten_sets
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name.to_string(), found.clone());
                }
                found
            }
        };
        found.map_err(|reason| {
            Error::corrupt(
                name,
                format!(
                    "{reason}; it is ignored: the snapshots it names are not taken for forgotten"
                ),
            )
        })
    }

    /// Does the forgotten record of snapshot `id` hold (made with this
    /// repository's keys, for this id)? Else why not.
    fn forgotten_record(&self, id: &Id) -> Result<()> {
        let known = self
            .forgotten
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id);
        if known {
            return Ok(());
        }
        let object = snapshot_name(id);
        let name = Removed::Snapshot.record_name(&object);
        // Any store's copy that checks will do: one store holding garbage
        // under the name must not outvote the good copies of the others.
        self.store
            .get_where(&name, &|b| {
                removal::holds(Removed::Snapshot, &object, b, &self.keys)
            })
            .map_err(|e| match e {
                Error::Corrupt { object: o, reason } => Error::corrupt(
                    o,
                    format!("{reason}; it is ignored: {object} is not taken for forgotten"),
                ),
                e => e,
            })?;
        self.forgotten
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*id);
        Ok(())
    }

    /// Every forgotten record checked, whether or not a store still holds
    /// its snapshot (`check`): the ones that do not hold, with why.
    pub fn check_forgotten_records(&self) -> Result<(usize, Vec<Error>)> {
        let (names, sets) = self.forgotten_set_ids()?;
        let mut bad = sets.bad;
        for name in &names {
            if ForgottenSet::is_set_name(name) {
                continue;
            }
            let id = Removed::Snapshot
                .object_name(name)
                .and_then(|n| n.strip_prefix("snapshots/").and_then(Id::from_hex));
            match id {
                Some(id) => {
                    if let Err(e) = self.forgotten_record(&id) {
                        bad.push(e);
                    }
                }
                None => bad.push(Error::corrupt(
                    name,
                    "its name is not that of a forgotten snapshot record (ignored)",
                )),
            }
        }
        Ok((names.len(), bad))
    }

    /// Forget snapshot `id` for good: its record goes to every store first
    /// (replacing any, so that a damaged or forged one there becomes ours),
    /// then the snapshot is deleted. A store that missed the delete (down,
    /// or an older copy of it given back later) may still hold it; the
    /// record keeps it out of every listing, and `sync` and `prune` delete
    /// it there. Needs the writer lock.
    pub fn forget_snapshot(&self, id: &Id) -> Result<()> {
        let object = snapshot_name(id);
        // With a store unplugged the delete would refuse: the record must
        // not be left on the other stores, hiding a snapshot that was not
        // deleted (and that `forget` could then no longer name).
        self.store.check_all_present(&object)?;
        let rec = Removal::new(&self.keys, Removed::Snapshot, &id.to_hex(), now_secs());
        let rec_name = Removed::Snapshot.record_name(&object);
        self.put_forgotten_record(&rec_name, rec.encode(), &id.short())?;
        self.forgotten
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*id);
        self.store.delete(&object)
    }

    /// Forget the snapshots `ids` for good with one record for all, a
    /// forgotten set (`snapshots-forgotten/set-<hash>`), written to every
    /// store before any of them is deleted: `forget_snapshot` for each, in
    /// one object (a mount's retention, which forgets every minute). Needs
    /// the writer lock. On an error some may be deleted; all stay
    /// forgotten.
    pub fn forget_snapshots(&self, ids: &[Id]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        for id in ids {
            self.store.check_all_present(&snapshot_name(id))?;
        }
        let rec = ForgottenSet::new(&self.keys, ids, now_secs());
        let bytes = rec.encode();
        let name = ForgottenSet::name_of(&bytes);
        let what = match ids {
            [one] => one.short(),
            _ => format!("{} snapshots", ids.len()),
        };
        self.put_forgotten_record(&name, bytes, &what)?;
        self.forgotten
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(ids.iter().copied());
        self.forgotten_sets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, Ok(Arc::new(rec)));
        for id in ids {
            self.store.delete(&snapshot_name(id))?;
        }
        Ok(())
    }

    /// Merge the forgotten set records that hold into one (`prune`, under
    /// the writer lock), so that the directory every listing of snapshots
    /// lists stays small. The merged set goes to every store before the
    /// sets it replaces are deleted; it is dated by the newest of them, so
    /// that merging again what a stale store gives back makes the same
    /// record. Sets that do not hold are left for `check` to name. Returns
    /// how many sets were merged away.
    pub fn merge_forgotten_sets(&self) -> Result<usize> {
        let (_, sets) = self.forgotten_set_ids()?;
        if sets.held.len() < 2 {
            return Ok(0);
        }
        let ids: Vec<Id> = sets.ids().into_iter().collect();
        let newest = sets.held.iter().map(|(_, set)| set.forgotten).max();
        let rec = ForgottenSet::new(&self.keys, &ids, newest.unwrap_or_default());
        let bytes = rec.encode();
        let name = ForgottenSet::name_of(&bytes);
        self.store.put(&name, Bytes::from(bytes))?;
        self.forgotten_sets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), Ok(Arc::new(rec)));
        let mut gone = 0;
        for (old, _) in sets.held.iter().filter(|(n, _)| *n != name) {
            self.store.delete(old)?;
            self.forgotten_sets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(old);
            gone += 1;
        }
        Ok(gone)
    }

    /// Put a forgotten record on every store; if a store refuses it, take
    /// it back from the others (on some stores only, it would hide a
    /// snapshot that is not deleted, and that `forget` could then no
    /// longer name). `what` names the snapshots in the error.
    fn put_forgotten_record(&self, rec_name: &str, rec: Vec<u8>, what: &str) -> Result<()> {
        if let Err(e) = self.store.put(rec_name, Bytes::from(rec)) {
            // On some stores only, it would hide a snapshot that is not
            // deleted (and that `forget` could then no longer name): taken
            // back where it can be (else `prune` deletes the snapshot).
            // The write error says `sync` would finish the write: not so,
            // the record is taken back and `forget` must be run again.
            // The refusing store may refuse the delete too: what counts is
            // whether a store still lists the record.
            let deleted = self.store.delete(rec_name);
            let left = self
                .store
                .list_names(Removed::Snapshot.record_dir())
                .map(|l| l.iter().any(|n| n == rec_name));
            let after = match (deleted, left) {
                (_, Ok(false)) => format!(
                    "{what} was not forgotten (its record was taken back from the other stores); run `secrate forget` again once the store takes writes"
                ),
                (deleted, left) => format!(
                    "its record could not be taken back from the other stores either ({}): {} may be hidden but not deleted; run `secrate forget` again once the stores take writes",
                    match (deleted, left) {
                        (Err(d), _) | (_, Err(d)) => d.to_string(),
                        _ => "a store still lists it".to_string(),
                    },
                    what
                ),
            };
            return Err(match e {
                Error::Store {
                    url,
                    object,
                    reason,
                } => Error::Store {
                    url,
                    object,
                    reason: format!(
                        "{}; {after}",
                        reason
                            .split("; the write reached")
                            .next()
                            .unwrap_or(&reason)
                    ),
                },
                e => Error::Invalid(format!("{e}; {after}")),
            });
        }
        Ok(())
    }

    /// Objects a removal record made with this repository's keys names:
    /// removed keys and forgotten snapshots (`keys/<id>`, `snapshots/<id>`),
    /// whatever store still holds them. What `Store::sync_with` may delete.
    pub fn removed_objects(&self) -> Result<HashSet<String>> {
        let mut out = self.removed_keys()?;
        out.extend(self.list_snapshots()?.forgotten.iter().map(snapshot_name));
        Ok(out)
    }

    /// The snapshots of `ids` (from a listing), oldest first, plus the ones
    /// that could not be read; those forgotten since the listing are left
    /// out, as in `snapshots`.
    pub fn read_snapshots(&self, ids: Vec<Id>) -> (SnapshotList, Vec<Error>) {
        use rayon::prelude::*;
        let results: Vec<(Id, Option<Result<Snapshot>>)> = ids
            .into_par_iter()
            .map(|id| (id, self.read_listed_snapshot(&id)))
            .collect();
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        for (id, r) in results {
            match r {
                Some(Ok(s)) => ok.push((id, s)),
                Some(Err(e)) => bad.push(e),
                None => {}
            }
        }
        ok.sort_by(|a, b| a.1.time_ns.cmp(&b.1.time_ns).then(a.0.cmp(&b.0)));
        (ok, bad)
    }

    /// Read a snapshot a listing named: None if it is gone and stays gone
    /// when asked again (forgotten since the listing).
    fn read_listed_snapshot(&self, id: &Id) -> Option<Result<Snapshot>> {
        match self.read_snapshot(id) {
            Err(Error::Missing { .. })
                if matches!(self.store.head(&snapshot_name(id)), Ok(None)) =>
            {
                None
            }
            r => Some(r),
        }
    }

    /// Resolve `latest` or a unique id prefix.
    pub fn find_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        let (all, _) = self.snapshots()?;
        find_in(all, spec, self.url())
    }
}

/// Resolve `latest`, an id prefix or a `.history` name among `all`
/// (oldest first).
pub fn find_in(mut all: Vec<(Id, Snapshot)>, spec: &str, url: &str) -> Result<(Id, Snapshot)> {
    if spec == "latest" {
        return all.pop().ok_or_else(|| {
            Error::Invalid(format!("the repository at {url} has no snapshots yet"))
        });
    }
    if let Some((base, suffixed)) = history_name(spec) {
        return find_by_time(all, spec, base, suffixed, url);
    }
    let spec_l = spec.to_ascii_lowercase();
    if spec_l.is_empty() || !spec_l.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::Invalid(format!(
            "{spec:?} is not a snapshot id (hex), a name in .history (such as 2026-12-07T08:44:39Z) or \"latest\""
        )));
    }
    let mut m: Vec<_> = all
        .into_iter()
        .filter(|(id, _)| id.to_hex().starts_with(&spec_l))
        .collect();
    match m.len() {
        0 => Err(Error::Invalid(format!(
            "no snapshot with id {spec} in {url}"
        ))),
        1 => Ok(m.pop().expect("one")),
        n => Err(Error::Invalid(format!(
            "snapshot id {spec} is ambiguous ({n} snapshots match); give more digits"
        ))),
    }
}

/// A `.history` name: the snapshot's UTC time to the second
/// (`2026-12-07T08:44:39Z`), with `-N` when a mount had given the name to
/// another snapshot of that second. The time, and whether it had `-N`.
fn history_name(spec: &str) -> Option<(&str, bool)> {
    const LEN: usize = "2026-12-07T08:44:39Z".len();
    let (base, rest) = (spec.get(..LEN)?, &spec[LEN..]);
    let suffixed = match rest.strip_prefix('-') {
        None if rest.is_empty() => false,
        Some(n) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => true,
        _ => return None,
    };
    let shape = base.bytes().enumerate().all(|(i, c)| match i {
        4 | 7 => c == b'-',
        10 => c == b'T',
        13 | 16 => c == b':',
        19 => c == b'Z',
        _ => c.is_ascii_digit(),
    });
    shape.then_some((base, suffixed))
}

/// The snapshot sealed in the second `base` names. One only: a mount
/// names a second snapshot of the same second `base-1`, but which
/// snapshot has which suffix depends on what that mount saw (names are
/// never passed on when one is forgotten), so a suffix, or a second
/// that holds several snapshots, is answered with their ids to choose
/// from, never with a guess.
fn find_by_time(
    all: Vec<(Id, Snapshot)>,
    spec: &str,
    base: &str,
    suffixed: bool,
    url: &str,
) -> Result<(Id, Snapshot)> {
    let mut m: Vec<_> = all
        .into_iter()
        .filter(|(_, s)| s.time_rfc3339() == base)
        .collect();
    if m.len() == 1 && !suffixed {
        if let Some(found) = m.pop() {
            return Ok(found);
        }
    }
    match m.len() {
        0 => Err(Error::Invalid(format!(
            "no snapshot in {url} was sealed at {base}"
        ))),
        n => {
            let ids: Vec<String> = m.iter().map(|(id, _)| id.short()).collect();
            Err(Error::Invalid(format!(
                "{spec} does not name one snapshot: {n} {} sealed at {base}; give its id ({})",
                if n == 1 { "was" } else { "were" },
                ids.join(", ")
            )))
        }
    }
}

/// Content-addressed objects must hash to their name.
fn check_name(name: &str, dir: &str, bytes: &[u8]) -> Result<()> {
    let want = name.strip_prefix(dir).and_then(Id::from_hex);
    if want != Some(Id::of_object(bytes)) {
        return Err(Error::corrupt(name, "its content does not match its name"));
    }
    Ok(())
}

fn write_key(store: &Store, kind: KeyKind, write_only: bool, sealed: Vec<u8>) -> Result<String> {
    let obj = KeyObject {
        kind,
        created: now_secs(),
        write_only,
        sealed,
    };
    let id = hex::encode(crate::crypto::random_bytes::<8>());
    let name = format!("keys/{id}");
    store.put_new(&name, Bytes::from(obj.encode()))?;
    Ok(id)
}

const MAX_KEYS_TRIED: usize = 64;

/// Is there a removal record for the key object `name` made with `ring`?
/// A record that is missing, damaged, for another key or made with
/// another keyring (forged, or another repository's) removes nothing.
fn removal_holds(store: &Store, name: &str, ring: &Keyring) -> bool {
    store
        .get_where(&removal_name(name), &|b| {
            removal::holds(Removed::Key, name, b, ring)
        })
        .is_ok()
}

fn can_read_now(
    n: &String,
    o: &Result<KeyObject>,
    removed: &HashSet<String>,
    foreign: &[String],
) -> bool {
    o.as_ref().is_ok_and(|o| !o.write_only) && !removed.contains(n) && !foreign.contains(n)
}

fn secret_kind(k: KeyKind) -> &'static str {
    match k {
        KeyKind::Passphrase => "a passphrase",
        KeyKind::Recovery => "a recovery key",
    }
}

/// Try `secret` against every key object of its kind. A key that opens
/// the keyring of another repository (`repo_id` is the config's) is
/// passed over: an `init` that stopped before its `config` and was run
/// again leaves such keys under the same passphrase (on a store `init` does
/// not look into first), as did a store of another repository merged in.
/// Failing on the first one locked the user out of the right key beside it.
fn unlock(
    store: &Store,
    secret: &Secret,
    repo_id: &[u8; 16],
) -> Result<(Keyring, String, Vec<String>)> {
    // In name order, so which keys are tried (and found to be another
    // repository's on the way) does not depend on the store's listing.
    let mut names = store.list_names("keys")?;
    names.sort();
    let records: HashSet<String> = store.list_names(REMOVED_DIR)?.into_iter().collect();
    let mut removed: Option<String> = None;
    let mut foreign_all = Vec::new();
    let keys = names.len();
    let want = match secret {
        Secret::Passphrase(_) => KeyKind::Passphrase,
        Secret::RecoveryKey(_) => KeyKind::Recovery,
    };
    let recovery_identity = match secret {
        Secret::RecoveryKey(k) => Some(parse_identity(k).ok_or_else(|| {
            Error::Invalid(
                "the recovery key is not an age identity (it starts with AGE-SECRET-KEY-1)".into(),
            )
        })?),
        Secret::Passphrase(_) => None,
    };
    let mut damaged = None;
    let mut mislabelled = None;
    let mut foreign: Option<String> = None;
    let mut tried = 0;
    for name in names {
        // One damaged key object (a shard left by a key change that did not
        // reach every store) must not lock the user out of the others.
        let bytes = match store.get(&name) {
            Ok(b) => b,
            Err(e) if e.is_damage() => {
                damaged = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let obj = match KeyObject::decode(&bytes) {
            Ok(o) => o,
            Err(e) => {
                damaged = Some(Error::corrupt(&name, e.0));
                continue;
            }
        };
        if obj.kind != want {
            // The kind byte is outside what age authenticates: an object
            // of the other kind whose age header is for this kind of
            // secret had its kind byte changed. Not tried (the kind byte
            // decides which objects a secret is tried against), but
            // reported if nothing opens.
            if mislabelled.is_none()
                && crate::crypto::age_is_passphrase(&obj.sealed)
                    == Some(want == KeyKind::Passphrase)
            {
                mislabelled = Some(Error::corrupt(
                    &name,
                    format!(
                        "its kind byte says {} opens it, but it is sealed to {} (the kind byte is damaged)",
                        secret_kind(obj.kind),
                        secret_kind(want)
                    ),
                ));
            }
            continue;
        }
        // Each passphrase try is a full scrypt: a store stuffed with key
        // objects must not make unlocking take hours.
        tried += 1;
        if tried > MAX_KEYS_TRIED {
            return Err(Error::Invalid(format!(
                "the repository at {} has more than {MAX_KEYS_TRIED} keys of this kind; refusing to try them all",
                store.url()
            )));
        }
        let r = match (secret, &recovery_identity) {
            (Secret::Passphrase(p), _) => age_decrypt(&passphrase_identity(p), &obj.sealed),
            (Secret::RecoveryKey(_), Some(id)) => age_decrypt(id, &obj.sealed),
            _ => continue,
        };
        match r {
            Ok(plain) => {
                let ring = decode_keyring(&plain).map_err(|e| Error::corrupt(&name, e.0))?;
                if &ring.repo_id != repo_id {
                    foreign_all.push(name.clone());
                    foreign.get_or_insert(name);
                    continue;
                }
                // Removed (`key remove`) but still held by a store that
                // missed the delete: only a record this keyring made counts.
                if records.contains(&removal_name(&name)) && removal_holds(store, &name, &ring) {
                    removed.get_or_insert(name);
                    continue;
                }
                // The plaintext flag must agree with what the keyring can do.
                if obj.write_only == ring.can_read_data() {
                    return Err(Error::corrupt(
                        &name,
                        "its write-only flag does not match its keyring",
                    ));
                }
                return Ok((ring, name, foreign_all));
            }
            Err(AgeError::NoMatchingKey) => continue,
            Err(AgeError::Damaged(why)) => damaged = Some(Error::corrupt(&name, why)),
        }
    }
    // A wrong secret is the likely story when it was tried against objects
    // of its kind and none opened; a damaged key object is reported only
    // when it might have been the one. When it could be tried against
    // none, the damage is the story.
    if let Some(name) = removed {
        return Err(Error::Invalid(format!(
            "the key {} that opens with this secret was removed from the repository at {} \
             (`secrate key remove`; its removal record is {}): unlock with another key",
            name.trim_start_matches("keys/"),
            store.url(),
            removal_name(&name)
        )));
    }
    if let Some(name) = foreign {
        return Err(Error::corrupt(
            &name,
            "it opens the keyring of another repository (a key left by an init that was run again, or copied from another store), and no key of this repository opens",
        ));
    }
    let damaged = mislabelled.or(damaged);
    if tried == 0 {
        if let Some(e) = damaged {
            return Err(e);
        }
        if keys == 0 {
            return Err(Error::Invalid(format!(
                "the repository at {} has no keys left (keys/ is empty): nothing can open it; \
                 a replica or an older copy of the store may still hold them",
                store.url()
            )));
        }
        return Err(Error::Invalid(format!(
            "the repository at {} has no key that {} opens: {}",
            store.url(),
            secret_kind(want),
            match want {
                KeyKind::Passphrase => "unlock it with the recovery key (--recovery-key-file)",
                KeyKind::Recovery => "unlock it with its passphrase",
            }
        )));
    }
    match damaged {
        Some(e) => Err(Error::Invalid(format!(
            "wrong passphrase (or key) for the repository at {}, or its key object is damaged: {e}",
            store.url()
        ))),
        None => Err(Error::WrongKey {
            url: store.url().into(),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    /// An index delta or a pack a listing named and a prune deleted before
    /// it was read is not damage; a delta gone that way tells that the index
    /// was rewritten. A delta listed and missing while the store still has
    /// it somewhere stays a problem.
    #[test]
    fn what_was_deleted_since_the_listing_is_no_problem() {
        use crate::repo::writer::{BlobWriter, StoreSink};
        let r = std::sync::Arc::new(test_init("memory://gone-since-listed"));
        let w = BlobWriter::new(r.clone(), std::sync::Arc::new(StoreSink(r.clone())), 1);
        w.add(crate::crypto::BlobKind::Data, b"some data").unwrap();
        let (packs, _) = w.finish().unwrap();
        r.write_index(&packs).unwrap();
        let reader = Repository::open(
            r.store().clone(),
            &Secret::Passphrase("pw".to_string().into()),
        )
        .unwrap();
        let deltas = r.store().list_names("index").unwrap();
        let listed_packs = r.store().list("packs").unwrap();
        assert_eq!((deltas.len(), listed_packs.len()), (1, 1));
        for d in &deltas {
            r.store().delete(d).unwrap();
        }
        r.store().delete(&pack_name(&packs[0].id)).unwrap();
        assert!(reader.load_deltas(deltas).is_empty());
        assert!(reader.loaded_deltas_gone().unwrap());
        let (found, bad) = reader.unindexed_packs_of(listed_packs);
        assert!(found.is_empty() && bad.is_empty(), "{bad:?}");
    }

    use super::*;

    /// A repository on the `file://` stores `names` under `dir`: replicas,
    /// or erasure coded (`ec`, e.g. "2+1").
    pub fn test_init_many(dir: &std::path::Path, names: &[&str], ec: Option<&str>) -> Repository {
        let u: Vec<String> = names
            .iter()
            .map(|n| format!("file://{}/{n}", dir.display()))
            .collect();
        let p = ec.map(|e| crate::store::EcParams::parse(e).unwrap());
        let store = Store::open_many(&u, p, true).unwrap();
        let opts = InitOptions {
            kdf_log_n: 4,
            ..Default::default()
        };
        Repository::init(store, "pw", opts).unwrap().0
    }

    /// Every one of `ids` is listed, none is taken for forgotten, and
    /// `bad` records are reported.
    fn assert_nothing_hidden(r: &Repository, ids: &[Id], bad: usize) -> SnapshotListing {
        let mut listed = r.snapshot_ids().unwrap();
        listed.sort();
        let mut want = ids.to_vec();
        want.sort();
        assert_eq!(listed, want);
        let l = r.list_snapshots().unwrap();
        assert!(l.forgotten.is_empty());
        assert_eq!(l.bad_records.len(), bad, "{:?}", l.bad_records);
        l
    }

    /// The sample snapshot, timed `n` ns after the epoch.
    fn numbered_snapshot(n: u8) -> Snapshot {
        Snapshot {
            time_ns: n as i64,
            ..snapshot::tests::sample()
        }
    }

    pub fn test_init(url: &str) -> Repository {
        let store = Store::open(url, true).unwrap();
        let opts = InitOptions {
            kdf_log_n: 4,
            ..Default::default()
        };
        Repository::init(store, "pw", opts).unwrap().0
    }

    /// A `.history` name finds the one snapshot sealed in that second; a
    /// second with several, or a `-N` suffix (which snapshot has it
    /// depends on what a mount saw), answers with the ids to choose from,
    /// never a guess; other shapes fall through to the id rules.
    #[test]
    fn a_history_name_finds_its_snapshot_and_never_guesses() {
        let at = |secs: i64, nanos: i64, b: u8| {
            (
                Id([b; 32]),
                Snapshot {
                    time_ns: secs * 1_000_000_000 + nanos,
                    ..snapshot::tests::sample()
                },
            )
        };
        // 2026-12-07T08:44:39Z and two snapshots of 08:44:40.
        let t = 1_796_633_079;
        let all = vec![at(t, 5, 0xa1), at(t + 1, 1, 0xb2), at(t + 1, 9, 0xc3)];
        let find = |spec: &str| find_in(all.clone(), spec, "u");
        assert_eq!(all[0].1.time_rfc3339(), "2026-12-07T08:44:39Z");
        assert_eq!(find("2026-12-07T08:44:39Z").unwrap().0, Id([0xa1; 32]));
        for spec in [
            "2026-12-07T08:44:40Z",
            "2026-12-07T08:44:40Z-1",
            "2026-12-07T08:44:39Z-1",
        ] {
            let e = find(spec).unwrap_err().to_string();
            assert!(e.contains("give its id"), "{spec}: {e}");
        }
        let e = find("2026-12-07T08:44:40Z").unwrap_err().to_string();
        assert!(
            e.contains(&Id([0xb2; 32]).short()) && e.contains(&Id([0xc3; 32]).short()),
            "{e}"
        );
        let e = find("2026-12-07T08:44:41Z").unwrap_err().to_string();
        assert!(e.contains("no snapshot"), "{e}");
        for bad in [
            "2026-12-07T08:44:39Z-",
            "2026-12-07T08:44:39Z-x",
            "2026-12-07 08:44:39Z",
        ] {
            let e = find(bad).unwrap_err().to_string();
            assert!(e.contains("is not a snapshot id"), "{bad}: {e}");
        }
        assert_eq!(find("a1").unwrap().0, Id([0xa1; 32]));
    }

    /// A replica that missed a `forget` (an older copy of its disk given
    /// back) still holds the snapshot: it is not listed (nor a root for
    /// prune, nor shown by a mount) once its record checks, and `sync` is
    /// told it may delete it. (Before, the union of the stores listed it
    /// again.)
    #[test]
    fn a_forgotten_snapshot_on_a_stale_replica_stays_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let r = test_init_many(dir.path(), &["a", "b"], None);
        let (s1, s2) = (
            r.write_snapshot(&numbered_snapshot(1)).unwrap(),
            r.write_snapshot(&numbered_snapshot(2)).unwrap(),
        );
        let stale = dir.path().join("b").join(snapshot_name(&s1));
        let old = std::fs::read(&stale).unwrap();
        r.forget_snapshot(&s1).unwrap();
        assert!(!stale.exists());
        // The older copy of store b comes back.
        std::fs::write(&stale, &old).unwrap();
        let fresh = Repository::open(
            r.store().clone(),
            &Secret::Passphrase("pw".to_string().into()),
        )
        .unwrap();
        for repo in [&r, &fresh] {
            assert_eq!(repo.snapshot_ids().unwrap(), vec![s2]);
            let l = repo.list_snapshots().unwrap();
            assert_eq!(l.forgotten, vec![s1]);
            assert!(l.bad_records.is_empty(), "{:?}", l.bad_records);
            assert_eq!(repo.snapshots().unwrap().0.len(), 1);
            assert!(repo.find_snapshot(&s1.to_hex()).is_err());
            assert!(repo
                .removed_objects()
                .unwrap()
                .contains(&snapshot_name(&s1)));
            assert_eq!(repo.check_forgotten_records().unwrap().0, 1);
            assert!(repo.check_forgotten_records().unwrap().1.is_empty());
        }
    }

    /// A mount's retention forgets with one record for many snapshots (a
    /// forgotten set): an older copy of a replica given back lists none of
    /// them again, `sync` deletes them there, `prune`'s merge makes one set
    /// of many and merging again what a stale store gives back makes the
    /// same set. (Before, the mount deleted without a record: a stale
    /// replica brought a snapshot back, damaged once its data was pruned,
    /// and the mount's prune refused until it was forgotten by hand.)
    #[test]
    fn forgotten_sets_hold_against_a_stale_replica_and_merge() {
        let dir = tempfile::tempdir().unwrap();
        let r = test_init_many(dir.path(), &["a", "b"], None);
        let s: Vec<Id> = (1..=4)
            .map(|n| r.write_snapshot(&numbered_snapshot(n)).unwrap())
            .collect();
        let b = dir.path().join("b");
        let old: Vec<Vec<u8>> = s[..3]
            .iter()
            .map(|id| std::fs::read(b.join(snapshot_name(id))).unwrap())
            .collect();
        r.forget_snapshots(&s[..2]).unwrap();
        r.forget_snapshots(&s[2..3]).unwrap();
        let sets = |st: &str| -> Vec<String> {
            let mut v: Vec<String> =
                std::fs::read_dir(dir.path().join(st).join("snapshots-forgotten"))
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect();
            v.sort();
            v
        };
        assert_eq!(sets("a").len(), 2);
        assert_eq!(sets("a"), sets("b"));
        assert!(sets("a").iter().all(|n| n.starts_with("set-")));
        // The older copy of store b comes back.
        for (id, bytes) in s[..3].iter().zip(&old) {
            std::fs::write(b.join(snapshot_name(id)), bytes).unwrap();
        }
        let secret = || Secret::Passphrase("pw".to_string().into());
        let fresh = Repository::open(r.store().clone(), &secret()).unwrap();
        for repo in [&r, &fresh] {
            assert_eq!(repo.snapshot_ids().unwrap(), vec![s[3]]);
            let mut l = repo.list_snapshots().unwrap();
            l.forgotten.sort();
            let mut want = s[..3].to_vec();
            want.sort();
            assert_eq!(l.forgotten, want);
            assert!(l.bad_records.is_empty(), "{:?}", l.bad_records);
            assert!(repo.find_snapshot(&s[0].to_hex()).is_err());
            let removed = repo.removed_objects().unwrap();
            assert!(s[..3].iter().all(|id| removed.contains(&snapshot_name(id))));
            let (n, bad) = repo.check_forgotten_records().unwrap();
            assert_eq!(n, 2);
            assert!(bad.is_empty(), "{bad:?}");
        }
        // `sync` knows the sets' snapshots for removed ones, not missing
        // ones: it deletes them from b and copies none to a.
        let report = r
            .store()
            .sync_with(false, false, &|| r.removed_objects())
            .unwrap();
        assert_eq!(report.deleted.len(), 3, "{report:?}");
        assert!(report.copied.is_empty(), "{report:?}");
        assert!(report.failed.is_empty(), "{report:?}");
        assert!(s[..3].iter().all(|id| !b.join(snapshot_name(id)).exists()));
        // Merged into one set, on both stores; the listing is the same.
        let before = sets("a");
        assert_eq!(r.merge_forgotten_sets().unwrap(), 2);
        assert_eq!(sets("a").len(), 1);
        assert_eq!(sets("a"), sets("b"));
        assert_eq!(r.merge_forgotten_sets().unwrap(), 0);
        // A stale store gives back an old set and the snapshots: still
        // forgotten, and merging again makes the very same set.
        let merged = sets("a");
        let old_set = dir.path().join("a/snapshots-forgotten").join(&before[0]);
        assert!(!old_set.exists());
        for (id, bytes) in s[..3].iter().zip(&old) {
            std::fs::write(b.join(snapshot_name(id)), bytes).unwrap();
        }
        let fresh = Repository::open(r.store().clone(), &secret()).unwrap();
        assert_eq!(fresh.snapshot_ids().unwrap(), vec![s[3]]);
        assert_eq!(fresh.list_snapshots().unwrap().forgotten.len(), 3);
        // (The old set itself: written back from a copy kept above.)
        let set_bytes = |name: &str| {
            fresh
                .store()
                .get(&format!("snapshots-forgotten/{name}"))
                .unwrap()
        };
        let merged_bytes = set_bytes(&merged[0]);
        let again = ForgottenSet::new(
            fresh.keys(),
            &s[..2],
            ForgottenSet::decode(&merged_bytes).unwrap().forgotten,
        )
        .encode();
        std::fs::create_dir_all(b.join("snapshots-forgotten")).unwrap();
        let again_name = ForgottenSet::name_of(&again);
        std::fs::write(b.join(&again_name), &again).unwrap();
        let (n, bad) = fresh.check_forgotten_records().unwrap();
        assert_eq!(n, 2);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(fresh.merge_forgotten_sets().unwrap(), 1);
        assert_eq!(sets("a"), merged);
        assert_eq!(sets("b"), merged);
    }

    /// A forgotten set made with another repository's keys, one renamed,
    /// and garbage under a set's name forget nothing; `check` names each,
    /// and `prune`'s merge leaves them alone.
    #[test]
    fn a_forged_forgotten_set_hides_nothing() {
        let r = test_init("memory://forged-set");
        let ids: Vec<Id> = (1..=3)
            .map(|n| r.write_snapshot(&numbered_snapshot(n)).unwrap())
            .collect();
        let put = |b: Vec<u8>| {
            r.store()
                .put(&ForgottenSet::name_of(&b), Bytes::from(b))
                .unwrap()
        };
        let other = Keyring::generate([1; 16], ChunkerParams::DEFAULT);
        put(ForgottenSet::new(&other, &ids[..1], 1).encode());
        put(b"garbage".to_vec());
        let ours = ForgottenSet::new(r.keys(), &ids[1..2], 1).encode();
        let renamed = ForgottenSet::name_of(b"another");
        r.store().put(&renamed, Bytes::from(ours)).unwrap();
        let l = assert_nothing_hidden(&r, &ids, 3);
        assert!(l
            .bad_records
            .iter()
            .all(|e| e.to_string().contains("not taken for forgotten")));
        assert!(r.removed_objects().unwrap().is_empty());
        assert_eq!(r.check_forgotten_records().unwrap().1.len(), 3);
        assert_eq!(r.merge_forgotten_sets().unwrap(), 0);
        // Ours, under its own name, holds.
        r.forget_snapshots(&ids[..1]).unwrap();
        assert_eq!(r.snapshot_ids().unwrap().len(), 2);
    }

    /// A process that merges (a mount prunes every hour) keeps in memory
    /// only the sets the store still lists: each merged set is the whole
    /// union, so keeping every one ever made grew without bound (a year of
    /// a mount: tens of GB). Found by review.
    #[test]
    fn merged_away_sets_leave_the_cache() {
        let r = test_init("memory://set-cache");
        let ids: Vec<Id> = (1..=7)
            .map(|n| r.write_snapshot(&numbered_snapshot(n)).unwrap())
            .collect();
        let cached = || r.forgotten_sets.lock().unwrap().len();
        // The second merge takes the first one's set too.
        for (round, merged) in [(&ids[..3], 3), (&ids[3..6], 4)] {
            for id in round {
                r.forget_snapshots(&[*id]).unwrap();
            }
            assert_eq!(r.merge_forgotten_sets().unwrap(), merged);
        }
        assert_eq!(r.snapshot_ids().unwrap(), vec![ids[6]]);
        let listed = r.store().list_names("snapshots-forgotten").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(cached(), 1);
    }

    /// Erasure coding: one store's garbage under a name in `snapshots/` or
    /// `snapshots-forgotten/` fails the read of that object, reported, not
    /// the whole listing. (Before, `list_names` read every shard header and
    /// `secrate snapshots` failed: "asked for 51 bytes, the store returned
    /// 8". Found by review.)
    #[test]
    fn garbage_in_one_ec_store_fails_no_listing() {
        let dir = tempfile::tempdir().unwrap();
        let r = test_init_many(dir.path(), &["a", "b", "c"], Some("2+1"));
        let s: Vec<Id> = (1..=2)
            .map(|n| r.write_snapshot(&numbered_snapshot(n)).unwrap())
            .collect();
        r.forget_snapshots(&s[..1]).unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir_all(a.join("snapshots-forgotten")).unwrap();
        let junk = Id([7; 32]);
        std::fs::write(a.join(snapshot_name(&junk)), b"garbage!").unwrap();
        let bad_set = format!("snapshots-forgotten/set-{}", "0".repeat(64));
        std::fs::write(a.join(&bad_set), b"garbage!").unwrap();
        let secret = Secret::Passphrase("pw".to_string().into());
        let fresh = Repository::open(r.store().clone(), &secret).unwrap();
        let l = fresh.list_snapshots().unwrap();
        let mut ids = l.ids.clone();
        ids.sort();
        let mut want = vec![s[1], junk];
        want.sort();
        assert_eq!(ids, want);
        assert_eq!(l.forgotten, Vec::<Id>::new());
        assert_eq!(l.bad_records.len(), 1, "{:?}", l.bad_records);
        assert!(l.bad_records[0].to_string().contains(&bad_set));
        let (good, bad) = fresh.snapshots().unwrap();
        assert_eq!(
            good.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            vec![s[1]]
        );
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].to_string().contains(&junk.to_hex()), "{}", bad[0]);
    }

    /// A set that could not be read once (erasure-coded stores that did not
    /// answer: "only 0 of its 3 shards are readable") is read again at the
    /// next listing. (Before, the failure was kept for the life of the
    /// process: a mount that started during an outage listed the set's
    /// leftovers as snapshots until it was restarted, and its prune
    /// refused them as damaged. Found by review.)
    #[test]
    fn a_set_unreadable_once_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let r = test_init_many(dir.path(), &["a", "b", "c"], Some("2+1"));
        let s: Vec<Id> = (1..=3)
            .map(|n| r.write_snapshot(&numbered_snapshot(n)).unwrap())
            .collect();
        // A forget whose deletes did not happen (stores given back): the
        // snapshots are on every store, and the set says they are gone.
        let shards = |id: &Id| -> Vec<(std::path::PathBuf, Vec<u8>)> {
            ["a", "b", "c"]
                .iter()
                .map(|st| dir.path().join(st).join(snapshot_name(id)))
                .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
                .collect()
        };
        let kept: Vec<_> = s[..2].iter().flat_map(shards).collect();
        r.forget_snapshots(&s[..2]).unwrap();
        for (f, b) in &kept {
            std::fs::write(f, b).unwrap();
        }
        assert_eq!(r.snapshot_ids().unwrap(), vec![s[2]]);
        // A process that starts while the stores do not serve the set.
        let down = dir.path().join("down");
        std::fs::write(&down, b"").unwrap();
        let spec = format!("down_file={},reads_of=snapshots-forgotten", down.display());
        let secret = Secret::Passphrase("pw".to_string().into());
        let fresh = Repository::open(r.store().with_faults(&spec), &secret).unwrap();
        let l = fresh.list_snapshots().unwrap();
        assert_eq!(l.ids.len(), 3, "{:?}", l.bad_records);
        assert_eq!(l.bad_records.len(), 1);
        std::fs::remove_file(&down).unwrap();
        let l = fresh.list_snapshots().unwrap();
        assert!(l.bad_records.is_empty(), "{:?}", l.bad_records);
        assert_eq!(l.ids, vec![s[2]]);
        assert_eq!(l.forgotten.len(), 2);
    }

    /// Someone who can write to the first store only replaces the forgotten
    /// record there with garbage and puts back an old copy of the
    /// snapshot: the good records on the other stores still hold. (Before,
    /// the first store's copy was the only one read: the snapshot was
    /// listed again, `sync` copied it to every store and `check` found its
    /// pruned data missing. Found by review.)
    #[test]
    fn garbage_under_a_forgotten_record_in_one_store_resurrects_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let r = test_init_many(dir.path(), &["a", "b", "c"], None);
        let (s1, s2) = (
            r.write_snapshot(&numbered_snapshot(1)).unwrap(),
            r.write_snapshot(&numbered_snapshot(2)).unwrap(),
        );
        let a = dir.path().join("a");
        let old = std::fs::read(a.join(snapshot_name(&s1))).unwrap();
        r.forget_snapshot(&s1).unwrap();
        let rec = Removed::Snapshot.record_name(&snapshot_name(&s1));
        std::fs::write(a.join(&rec), [7u8; 114]).unwrap();
        std::fs::write(a.join(snapshot_name(&s1)), &old).unwrap();
        let fresh = Repository::open(
            r.store().clone(),
            &Secret::Passphrase("pw".to_string().into()),
        )
        .unwrap();
        assert_eq!(fresh.snapshot_ids().unwrap(), vec![s2]);
        assert_eq!(fresh.list_snapshots().unwrap().forgotten, vec![s1]);
        assert!(fresh
            .removed_objects()
            .unwrap()
            .contains(&snapshot_name(&s1)));
        // Garbage on every store: the record holds nowhere, and says why.
        for st in ["b", "c"] {
            std::fs::write(dir.path().join(st).join(&rec), [7u8; 114]).unwrap();
        }
        let fresh = Repository::open(
            r.store().clone(),
            &Secret::Passphrase("pw".to_string().into()),
        )
        .unwrap();
        let l = fresh.list_snapshots().unwrap();
        assert_eq!(l.ids.len(), 2);
        assert!(
            l.bad_records[0]
                .to_string()
                .contains("is not taken for forgotten"),
            "{:?}",
            l.bad_records
        );
    }

    /// A record that one store refuses (there, but failing writes) is taken
    /// back from the others: it would hide a snapshot that was not deleted
    /// and that `forget` could then no longer name.
    #[test]
    fn a_forgotten_record_one_store_refuses_hides_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let u: Vec<String> = ["a", "b"]
            .iter()
            .map(|n| format!("file://{}/{n}", dir.path().display()))
            .collect();
        let store =
            Store::open_many(&u, None, true)
                .unwrap()
                .with_retry(crate::store::RetryPolicy {
                    attempts: 1,
                    first_delay: std::time::Duration::ZERO,
                    max_delay: std::time::Duration::ZERO,
                });
        let opts = InitOptions {
            kdf_log_n: 4,
            ..Default::default()
        };
        let r = Repository::init(store, "pw", opts).unwrap().0;
        let id = r.write_snapshot(&snapshot::tests::sample()).unwrap();
        // A file where store b's directory of records would go.
        let blocker = dir.path().join("b").join(Removed::Snapshot.record_dir());
        std::fs::write(&blocker, b"in the way").unwrap();
        let e = r.forget_snapshot(&id).unwrap_err().to_string();
        // Not "`secrate sync` copies what a store misses": the record was
        // taken back, so sync would do nothing for it.
        assert!(e.contains("run `secrate forget` again"), "{e}");
        assert!(!e.contains("secrate sync"), "{e}");
        assert_eq!(r.snapshot_ids().unwrap(), vec![id]);
        let rec = Removed::Snapshot.record_name(&snapshot_name(&id));
        assert!(!dir.path().join("a").join(&rec).exists());
        std::fs::remove_file(&blocker).unwrap();
        r.forget_snapshot(&id).unwrap();
        assert!(r.snapshot_ids().unwrap().is_empty());
    }

    /// A record someone with write access to one store put there, without
    /// the keys (garbage, made with another repository's keyring, or a real
    /// record moved to another snapshot's name): it hides nothing, and
    /// `check_forgotten_records` reports it.
    #[test]
    fn a_forged_forgotten_record_hides_nothing() {
        let r = test_init("memory://forged-forgotten");
        let ids: Vec<Id> = (1..=4)
            .map(|n| r.write_snapshot(&numbered_snapshot(n)).unwrap())
            .collect();
        let rec = |id: &Id| Removed::Snapshot.record_name(&snapshot_name(id));
        let put = |id: &Id, b: Vec<u8>| r.store().put(&rec(id), Bytes::from(b)).unwrap();
        put(&ids[0], b"garbage".to_vec());
        let other = Keyring::generate([1; 16], ChunkerParams::DEFAULT);
        put(
            &ids[1],
            Removal::new(&other, Removed::Snapshot, &ids[1].to_hex(), 1).encode(),
        );
        put(
            &ids[2],
            Removal::new(r.keys(), Removed::Snapshot, &ids[3].to_hex(), 1).encode(),
        );
        assert_nothing_hidden(&r, &ids, 3);
        assert!(r
            .removed_objects()
            .unwrap()
            .iter()
            .all(|n| !n.starts_with("snapshots/")));
        let (n, bad) = r.check_forgotten_records().unwrap();
        assert_eq!((n, bad.len()), (3, 3), "{bad:?}");
        // `forget` replaces a forged record with its own.
        r.forget_snapshot(&ids[0]).unwrap();
        assert_eq!(r.check_forgotten_records().unwrap().1.len(), 2);
        assert_eq!(r.snapshot_ids().unwrap().len(), 3);
    }

    /// Two key removals at once, of the passphrase here and of the
    /// recovery key in another process, each saw the other key left and
    /// deleted its own: no key could open the repository again. (Found by
    /// review.) The removal that looks last puts its key back.
    #[test]
    fn two_removals_at_once_leave_a_key_that_can_read() {
        let repo = test_init("memory://keys-race");
        let keys = repo.list_keys().unwrap();
        assert_eq!(keys.len(), 2, "passphrase and recovery key");
        let name = |kind: KeyKind| {
            let found = keys.iter().find(|(_, o)| o.as_ref().unwrap().kind == kind);
            found.unwrap().0.clone()
        };
        let (pass, recovery) = (name(KeyKind::Passphrase), name(KeyKind::Recovery));
        let other = Repository::open(
            repo.store().clone(),
            &Secret::Passphrase("pw".to_string().into()),
        )
        .unwrap();
        let err = repo
            .remove_key_then(&pass, || {
                other.remove_key(&recovery).unwrap();
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("put back"), "{err}");
        let left = repo.list_keys().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, pass);
        Repository::open(
            repo.store().clone(),
            &Secret::Passphrase("pw".to_string().into()),
        )
        .unwrap();
    }

    /// The background copy of a mount gets exactly the secret the
    /// foreground read: trailing or inner line breaks included.
    #[test]
    fn secret_handover_keeps_every_byte() {
        for value in ["pw", "pw\n", "pw\n\n", "pw\r", "a\nb\r\n", " x ", "\n"] {
            for secret in [
                Secret::Passphrase(Zeroizing::new(value.into())),
                Secret::RecoveryKey(Zeroizing::new(value.into())),
            ] {
                let bytes = secret.handover();
                let back = Secret::read_handover(&mut &bytes[..]).unwrap();
                match (&secret, &back) {
                    (Secret::Passphrase(a), Secret::Passphrase(b))
                    | (Secret::RecoveryKey(a), Secret::RecoveryKey(b)) => {
                        assert_eq!(a.as_str(), b.as_str())
                    }
                    _ => panic!("the kind of {value:?} changed"),
                }
            }
        }
        assert!(Secret::read_handover(&mut &b""[..]).is_err());
    }

    /// A store whose keys are all gone, or whose keys the given kind of
    /// secret cannot open, says that, not "wrong passphrase"; a key id
    /// that is no hex (an empty one too) is refused before anything is
    /// looked up. (Found by review in stop 29.)
    #[test]
    fn no_key_of_a_kind_and_no_keys_are_said_as_such() {
        let store = Store::open("memory://repo-keys-gone", true).unwrap();
        let opts = InitOptions {
            kdf_log_n: 4,
            ..Default::default()
        };
        let (r, recovery) = Repository::init(store.clone(), "pw", opts).unwrap();
        for bad in ["", "keys/", "xyz", "../config"] {
            let e = r.remove_key(bad).unwrap_err().to_string();
            assert!(e.contains("is not a key id"), "{bad:?}: {e}");
        }
        let pass = r.key_name().to_string();
        let (rec_name, _) = r
            .list_keys()
            .unwrap()
            .into_iter()
            .find(|(n, _)| *n != pass)
            .unwrap();
        // Only the recovery key left: a passphrase is told to use it.
        r.remove_key(&pass.trim_start_matches("keys/").to_uppercase())
            .unwrap();
        let pw = || Secret::Passphrase(Zeroizing::new("pw".into()));
        let e = Repository::open(store.clone(), &pw())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("has no key that a passphrase opens"), "{e}");
        assert!(e.contains("--recovery-key-file"), "{e}");
        Repository::open(store.clone(), &Secret::RecoveryKey(recovery)).unwrap();
        // No key at all.
        store.delete(&rec_name).unwrap();
        let e = Repository::open(store, &pw()).err().unwrap().to_string();
        assert!(e.contains("has no keys left"), "{e}");
    }

    /// A key of another repository under the same passphrase, listed
    /// before this repository's own (an `init` run again after one that
    /// stopped before writing `config`, on a store it does not look into
    /// first): passed over. (Found by review: "config does not match the
    /// keyring" and no way in, though the right key was there.)
    #[test]
    fn a_key_of_another_repository_is_passed_over() {
        let opts = || InitOptions {
            kdf_log_n: 4,
            ..Default::default()
        };
        let store = Store::open("memory://repo-foreign-key", true).unwrap();
        let (r, recovery) = Repository::init(store.clone(), "pw", opts()).unwrap();
        let other = Store::open("memory://repo-foreign-key-other", true).unwrap();
        let (o, other_recovery) = Repository::init(other.clone(), "pw", opts()).unwrap();
        for (n, _) in o.list_keys().unwrap() {
            let first = n.replace("keys/", "keys/0000");
            store.put(&first, other.get(&n).unwrap()).unwrap();
        }
        let pw = Secret::Passphrase(Zeroizing::new("pw".into()));
        let opened = Repository::open(store.clone(), &pw).unwrap();
        assert_eq!(opened.key_name(), r.key_name());
        Repository::open(store.clone(), &Secret::RecoveryKey(recovery)).unwrap();
        // Only a key of the other repository opens: said so.
        let e = Repository::open(store, &Secret::RecoveryKey(other_recovery))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("another repository"), "{e}");
    }

    #[test]
    fn init_open_wrong_key_recovery() {
        let store = Store::open("memory://repo-init", true).unwrap();
        let opts = InitOptions {
            kdf_log_n: 4,
            ..Default::default()
        };
        let (_r, recovery) = Repository::init(store.clone(), "pw", opts).unwrap();
        assert!(recovery.starts_with("AGE-SECRET-KEY-1"));
        assert!(matches!(
            Repository::init(
                store.clone(),
                "pw",
                InitOptions {
                    kdf_log_n: 4,
                    ..Default::default()
                }
            ),
            Err(Error::RepositoryExists { .. })
        ));
        let r = Repository::open(
            store.clone(),
            &Secret::Passphrase(Zeroizing::new("pw".into())),
        )
        .unwrap();
        assert!(r.keys().can_read_data());
        let e = Repository::open(
            store.clone(),
            &Secret::Passphrase(Zeroizing::new("nope".into())),
        )
        .err()
        .unwrap();
        assert_eq!(
            e.to_string(),
            "wrong passphrase (or key) for the repository at memory://repo-init"
        );
        let r2 = Repository::open(store.clone(), &Secret::RecoveryKey(recovery.clone())).unwrap();
        assert_eq!(r2.config().repo_id, r.config().repo_id);
        let other = crate::crypto::identity_to_string(&age::x25519::Identity::generate());
        assert!(matches!(
            Repository::open(store, &Secret::RecoveryKey(other)),
            Err(Error::WrongKey { .. })
        ));
        let missing = Store::open("memory://nothing-here", true).unwrap();
        assert!(matches!(
            Repository::open(missing, &Secret::Passphrase(Zeroizing::new("pw".into()))),
            Err(Error::NoRepository { .. })
        ));
    }

    #[test]
    fn blobs_index_and_snapshots_round_trip() {
        let r = test_init("memory://repo-blobs");
        let keys = r.keys().clone();
        let mut b = pack::PackBuilder::new(BlobKind::Data, 1024);
        let id = keys.blob_id(BlobKind::Data, b"content");
        b.add(id, b"content");
        let (bytes, info) = b.finish(&keys);
        r.put_pack(&info, bytes).unwrap();
        // Not indexed yet: found by scanning packs.
        let (found, bad) = r.find_unindexed_packs().unwrap();
        assert!(bad.is_empty());
        assert_eq!(found, vec![info.clone()]);
        r.write_index(&found).unwrap();
        assert_eq!(r.read_blob(BlobKind::Data, &id).unwrap(), b"content");
        let r2 = Repository::open(
            r.store().clone(),
            &Secret::Passphrase(Zeroizing::new("pw".into())),
        )
        .unwrap();
        assert!(r2.load_index().unwrap().is_empty());
        assert_eq!(r2.read_blob(BlobKind::Data, &id).unwrap(), b"content");
        assert!(r2.find_unindexed_packs().unwrap().0.is_empty());
        let s = Snapshot {
            time_ns: 5,
            host: "h".into(),
            user: "u".into(),
            source: "/x".into(),
            origin: snapshot::Origin::Backup,
            root: id,
            root_meta: Default::default(),
            parent: None,
            files: 1,
            dirs: 0,
            bytes: 7,
            added_bytes: 0,
            tags: vec![],
        };
        let sid = r.write_snapshot(&s).unwrap();
        assert_eq!(r2.find_snapshot("latest").unwrap(), (sid, s.clone()));
        assert_eq!(r2.find_snapshot(&sid.short()).unwrap().0, sid);
        assert!(r2.find_snapshot("zz").is_err());

        // Listed, then forgotten by another process before it was read:
        // left out, not reported as missing.
        r.store().delete(&snapshot_name(&sid)).unwrap();
        assert!(r2.read_listed_snapshot(&sid).is_none());
        // Listed and present but unreadable: reported.
        let name = snapshot_name(&sid);
        r.store()
            .put(&name, Bytes::from_static(b"garbage"))
            .unwrap();
        assert!(matches!(
            r2.read_listed_snapshot(&sid),
            Some(Err(Error::Corrupt { .. }))
        ));
        let (all, bad) = r2.snapshots().unwrap();
        assert!(all.is_empty());
        assert_eq!(bad.len(), 1);
    }

    /// A blob stored in two packs is read from the other when the copy
    /// lookups find is missing or fails to verify (a data chunk and a
    /// tree); with every copy damaged, the first copy's error; a store
    /// that fails to serve the first copy is not damage and is not read
    /// past.
    #[test]
    fn a_damaged_copy_is_read_past() {
        use crate::ops::repair::tests::{chunk, damage_blob, open, two_copies_repo};
        for delete in [true, false] {
            // A `file://` store, as on a disk.
            let dir = tempfile::tempdir().unwrap();
            let two = two_copies_repo(&format!("file://{}", dir.path().display()));
            let (repo, ids) = (&two.repo, &two.ids);
            let data = &two.data;
            two.spoil_first(delete);
            let r = open(repo.store(), "pw");
            let (got, past) = r.read_blob_noting(BlobKind::Data, &ids[0]).unwrap();
            assert_eq!(got, chunk(0));
            assert_eq!(past.len(), 1);
            assert!(past[0].is_damage(), "{}", past[0]);
            assert!(past[0].to_string().contains(&pack_name(&data[0].id)));
            assert_eq!(r.read_tree(&two.root).unwrap().entries.len(), 3);
            // Chunk `lone` has one copy, in the damaged pack (and reads
            // fine there, unless the pack is gone).
            let lone = two.lone;
            match r.read_blob(BlobKind::Data, &ids[lone]) {
                Ok(d) => assert!(!delete && d == chunk(lone as u8)),
                Err(e) => assert!(delete && e.is_missing(), "{e}"),
            }
            // The other copy damaged too: the error of the copy read first
            // (the other one, once the first copy's pack was found gone).
            damage_blob(repo, &data[1], &ids[0]);
            let e = r.read_blob(BlobKind::Data, &ids[0]).unwrap_err();
            assert!(e.is_damage(), "{e}");
            let first = if delete { &data[1] } else { &data[0] };
            assert!(e.to_string().contains(&pack_name(&first.id)), "{e}");
        }

        let two = two_copies_repo("memory://read-past-store-error");
        let faulty = two.repo.store().with_faults(&format!(
            "error_rate=1,reads_of={}",
            two.data[0].id.to_hex()
        ));
        let r = open(&faulty, "pw");
        let e = r.read_blob(BlobKind::Data, &two.ids[0]).unwrap_err();
        assert!(matches!(e, Error::Store { .. }), "{e}");
        let other = 3 - two.lone;
        assert_eq!(
            r.read_blob(BlobKind::Data, &two.ids[other]).unwrap(),
            chunk(other as u8),
            "only reads of the first pack fail"
        );
    }

    /// The kind byte of a key object is outside what age authenticates.
    /// Changed to the other kind, the passphrase is tried against no
    /// object: the error names the object and says its kind byte is
    /// damaged, not "wrong passphrase"; changed to an unknown kind, it says
    /// so. The recovery key still opens the repository, and a wrong
    /// passphrase tried against an intact object is still a wrong one.
    #[test]
    fn a_damaged_key_kind_byte_is_not_a_wrong_passphrase() {
        let pw = || Secret::Passphrase(Zeroizing::new("pw".into()));
        let store = Store::open("memory://key-kind-byte", true).unwrap();
        let opts = InitOptions {
            kdf_log_n: 4,
            ..Default::default()
        };
        let (r, recovery) = Repository::init(store.clone(), "pw", opts).unwrap();
        let name = r.key_name().to_string();
        let good = store.get(&name).unwrap().to_vec();
        // magic (7), version (1), then the kind.
        assert_eq!(good[8], KeyKind::Passphrase as u8);
        for (kind, says) in [
            (KeyKind::Recovery as u8, "kind byte"),
            (7, "unknown key kind 7"),
        ] {
            let mut bad = good.clone();
            bad[8] = kind;
            store.put(&name, Bytes::from(bad)).unwrap();
            let e = Repository::open(store.clone(), &pw()).err().unwrap();
            assert!(matches!(e, Error::Corrupt { .. }), "{e}");
            let msg = e.to_string();
            assert!(msg.contains(&name) && msg.contains(says), "{msg}");
            assert!(!msg.contains("wrong passphrase"), "{msg}");
            Repository::open(store.clone(), &Secret::RecoveryKey(recovery.clone())).unwrap();
        }
        // Another passphrase object, intact: a wrong passphrase tried
        // against it is reported as one (the damaged object as a maybe).
        store.put(&name, Bytes::from(good.clone())).unwrap();
        r.add_key(
            &Secret::Passphrase(Zeroizing::new("other".into())),
            false,
            4,
        )
        .unwrap();
        let mut bad = good.clone();
        bad[8] = KeyKind::Recovery as u8;
        store.put(&name, Bytes::from(bad)).unwrap();
        let e = Repository::open(
            store.clone(),
            &Secret::Passphrase(Zeroizing::new("nope".into())),
        )
        .err()
        .unwrap();
        let msg = e.to_string();
        assert!(
            msg.starts_with("wrong passphrase") && msg.contains(&name),
            "{msg}"
        );
        Repository::open(store, &Secret::Passphrase(Zeroizing::new("other".into()))).unwrap();
    }

    /// What hashing an outbox object again before its put costs. Not a
    /// test; run it on a quiet machine:
    /// `cargo test --release --lib -- --ignored outbox_check_cost --nocapture`
    /// (`BENCH_DIR` picks the filesystem, /var/tmp by default). 1 GiB in
    /// 32 MiB packs goes to a `file://` store on the same filesystem, the
    /// hard-link path where the check adds a whole read of the file: the
    /// put alone (as before) against check + put, warm and cold (the
    /// files' pages dropped with `posix_fadvise`), alternating, 3 runs.
    #[test]
    #[ignore = "a benchmark, not a test: writes 1 GiB and times it; run by hand on a quiet machine"]
    fn outbox_check_cost() {
        use std::os::fd::AsRawFd;
        use std::time::Instant;
        fn cpu() -> f64 {
            let mut u: libc::rusage = unsafe { std::mem::zeroed() };
            unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
            let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
            t(u.ru_utime) + t(u.ru_stime)
        }
        let base = std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
        let dir = tempfile::tempdir_in(base).unwrap();
        let outbox = dir.path().join("outbox");
        std::fs::create_dir(&outbox).unwrap();
        let mut files = Vec::new();
        let mut buf = vec![0u8; 32 << 20];
        for i in 0..32u32 {
            let mut h = blake3::Hasher::new();
            h.update(&i.to_le_bytes());
            h.finalize_xof().fill(&mut buf);
            let hex = blake3::hash(&buf).to_hex().to_string();
            let name = format!("packs/{}/{hex}", &hex[..2]);
            let path = outbox.join(name.replace('/', "_"));
            std::fs::write(&path, &buf).unwrap();
            files.push((name, path));
        }
        let t = Instant::now();
        let c = cpu();
        for _ in 0..32 {
            std::hint::black_box(blake3::hash(&buf));
        }
        println!(
            "blake3 alone, 1 GiB in memory: {:.3} s wall, {:.3} s CPU",
            t.elapsed().as_secs_f64(),
            cpu() - c
        );
        for run in 0..3 {
            for cold in [false, true] {
                for check in [false, true] {
                    let url = format!("file://{}/store-{run}-{cold}-{check}", dir.path().display());
                    let repo = test_init(&url);
                    for (_, path) in &files {
                        let f = std::fs::File::open(path).unwrap();
                        if cold {
                            unsafe {
                                libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED)
                            };
                        } else {
                            std::io::copy(&mut &f, &mut std::io::sink()).unwrap();
                        }
                    }
                    let (t, c) = (Instant::now(), cpu());
                    for (name, path) in &files {
                        if check {
                            repo.put_sealed(name, path).unwrap();
                        } else {
                            repo.store().put_file_new(name, path).unwrap();
                        }
                    }
                    println!(
                        "run {run} {} {}: {:.3} s wall, {:.3} s CPU per GiB",
                        if cold { "cold" } else { "warm" },
                        if check { "check + put" } else { "put alone  " },
                        t.elapsed().as_secs_f64(),
                        cpu() - c
                    );
                }
            }
        }
    }
}

//! Per-store checks and repair for repositories on several stores: which
//! objects each replica or shard store misses or holds damaged (`audit`),
//! and copying or rebuilding them from the others, byte-exact (`sync`).
//!
//! `locks/` is left out of both: the writer lock is transient and rewritten.
//!
//! A key object or snapshot named by a removal record (`keys-removed/<id>`,
//! written by `key remove` before it deletes `keys/<id>`;
//! `snapshots-forgotten/<id>`, written by `forget` before it deletes
//! `snapshots/<id>`) is never copied: a store that missed the delete
//! (down, or an older copy given back) would otherwise bring a removed
//! passphrase or a forgotten snapshot back to every store. Its copies
//! are deleted where they are left over (some store already lacks it).
//! `sync` has no key, so it cannot check a record's tag: records that
//! would remove every key object are not honoured (forged, or two
//! removals racing), and unlocking checks the tag itself
//! (docs/FORMAT.md, `keys-removed/<id>`). A leftover is deleted only if
//! the caller of `sync_with` checked its record under the keyring: on a
//! record's word alone, one damaged or hostile store naming every key
//! that reads but a write-only one made `sync` delete them from every
//! store (found by review). A record that was checked and is not this
//! repository's names an object as any other: it is copied to the stores
//! that miss it, so that a forged record in one store keeps no other
//! from being repaired (and `sync` fails, naming the record).

use std::collections::{BTreeSet, HashMap, HashSet};

use bytes::Bytes;

use super::layout::{self, Layout, Mode};
use super::{check_name, content_addressed, ec, Backend, EcParams, Store};
use crate::error::{Error, Result};

/// What one store holds compared with the others.
#[derive(Clone, Debug, Default)]
pub struct StoreReport {
    pub url: String,
    /// Position in the layout (the shard index for EC).
    pub position: usize,
    /// The store could not be listed (down, refused): nothing else is known.
    pub unavailable: Option<String>,
    /// The store is gone (e.g. its directory was deleted): it holds nothing.
    pub gone: Option<String>,
    /// Objects (copies or shards) it holds, and their bytes as stored.
    pub objects: u64,
    pub bytes: u64,
    /// Objects some other store has and this one lacks.
    pub missing: Vec<String>,
    /// Objects whose copy or shard here is damaged, with why.
    pub corrupt: Vec<(String, String)>,
    /// Key objects and snapshots it still holds that a removal record
    /// names and another store already lacks: to be deleted here once
    /// the record checks.
    pub removed: Vec<String>,
}

impl StoreReport {
    pub fn is_clean(&self) -> bool {
        self.unavailable.is_none()
            && self.gone.is_none()
            && self.missing.is_empty()
            && self.corrupt.is_empty()
            && self.removed.is_empty()
    }
}

#[derive(Clone, Debug)]
pub struct Audit {
    pub layout: Layout,
    /// Distinct objects across all stores (locks left out).
    pub objects: usize,
    pub stores: Vec<StoreReport>,
    /// Key objects and snapshots a removal record names that every store
    /// still holds (a `key remove` or `forget` stopped between its record
    /// and its delete): not copied, not deleted by `sync`; unlocking and
    /// listing already ignore them if the record checks, `prune` deletes
    /// such snapshots.
    pub removal_unfinished: Vec<String>,
}

impl Audit {
    pub fn is_clean(&self) -> bool {
        self.stores.iter().all(StoreReport::is_clean)
    }
}

#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    /// (store URL, object, bytes written) — or that would be, with dry_run.
    pub copied: Vec<(String, String, u64)>,
    /// (store URL, object) for removed keys and forgotten snapshots
    /// deleted from a store that still held them.
    pub deleted: Vec<(String, String)>,
    /// (store URL, object, why) for what could not be repaired.
    pub failed: Vec<(String, String, String)>,
}

/// Order in which a store being filled gets objects, so that it is a
/// consistent repository at every instant: data before what refers to it,
/// `config` (which makes it a repository) last.
fn priority(name: &str) -> u8 {
    match name.split('/').next().unwrap_or("") {
        "packs" => 0,
        "index" | "damage" => 1,
        "snapshots" => 2,
        // A removal record before any key object.
        super::KEY_REMOVALS => 3,
        super::SNAPSHOTS_FORGOTTEN => 2,
        "keys" => 4,
        "config" => 6,
        _ => 5,
    }
}

/// The objects that a removal record in `universe` names: key objects
/// (`keys-removed/<id>` for `keys/<id>`) unless that would be every key
/// object there (the last way in is never taken on the word of a record
/// `sync` cannot check), and snapshots (`snapshots-forgotten/<id>` for
/// `snapshots/<id>`).
fn removed_objects(universe: &BTreeSet<&String>) -> BTreeSet<String> {
    let named = |records: &str, objects: &str| -> BTreeSet<String> {
        let prefix = format!("{records}/");
        universe
            .iter()
            .filter_map(|n| n.strip_prefix(&prefix))
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .map(|id| format!("{objects}/{id}"))
            .collect()
    };
    let mut keys = named(super::KEY_REMOVALS, "keys");
    if universe
        .iter()
        .filter(|n| n.starts_with("keys/"))
        .all(|k| keys.contains(k.as_str()))
    {
        keys.clear();
    }
    keys.extend(named(super::SNAPSHOTS_FORGOTTEN, "snapshots"));
    keys
}

/// The snapshots the forgotten set records in `universe` name, as the
/// records say (unchecked: `sync` deletes only what the keyring confirms,
/// as for single records). A set no store gives whole names nothing.
fn snapshots_in_sets(store: &Store, universe: &BTreeSet<&String>) -> BTreeSet<String> {
    universe
        .iter()
        .filter(|n| crate::repo::removal::ForgottenSet::is_set_name(n))
        .filter_map(|n| store.get_where(n, &|b| check_name(n, b)).ok())
        .filter_map(|b| crate::repo::removal::ForgottenSet::decode(&b).ok())
        .flat_map(|r| r.ids)
        .map(|id| crate::repo::snapshot::snapshot_name(&id))
        .collect()
}

/// Objects that check themselves, besides content-addressed ones.
pub(super) fn self_check(name: &str, b: &[u8]) -> Option<std::result::Result<(), String>> {
    if let Some(id) = content_addressed(name) {
        return Some(if blake3::hash(b).as_bytes() == &id {
            Ok(())
        } else {
            Err("does not match its name (damaged)".into())
        });
    }
    match name {
        "config" => Some(
            if b.len() == 80 && blake3::hash(&b[..48]).as_bytes()[..] == b[48..] {
                Ok(())
            } else {
                Err("checksum does not match (damaged)".into())
            },
        ),
        layout::NAME => Some(Layout::decode(b).map(|_| ()).map_err(|e| e.to_string())),
        _ => None,
    }
}

impl Store {
    /// Compare the stores of a multi-store repository object by object.
    /// Without `read_data` only names and sizes are compared (objects whose
    /// sizes disagree are read); with it every copy or shard is read and
    /// verified. A single store gives one report with nothing compared.
    pub fn audit(&self, read_data: bool) -> Result<Audit> {
        let n = self.slots.len();
        let mut reports: Vec<StoreReport> = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| StoreReport {
                url: s.url.clone(),
                position: i,
                ..Default::default()
            })
            .collect();
        let listings = self.each(|_, s| match &s.backend {
            Ok(b) => Some(b.list_all()),
            Err(_) => None,
        });
        let mut held: Vec<Option<HashMap<String, u64>>> = Vec::with_capacity(n);
        for (i, l) in listings.into_iter().enumerate() {
            match l {
                Some(Ok(v)) => {
                    let r = &mut reports[i];
                    r.objects = v.len() as u64;
                    r.bytes = v.iter().map(|o| o.size).sum();
                    held.push(Some(
                        v.into_iter()
                            .filter(|o| !o.name.starts_with("locks/"))
                            .map(|o| (o.name, o.size))
                            .collect(),
                    ));
                }
                Some(Err(e)) => {
                    reports[i].unavailable = Some(e.to_string());
                    held.push(None);
                }
                None => {
                    reports[i].gone = self.slots[i].backend.as_ref().err().cloned();
                    held.push(Some(HashMap::new()));
                }
            }
        }
        let universe: BTreeSet<&String> = held.iter().flatten().flat_map(|h| h.keys()).collect();
        if self.mode == Mode::Single {
            return Ok(Audit {
                layout: self.layout(),
                objects: universe.len(),
                stores: reports,
                removal_unfinished: Vec::new(),
            });
        }
        let mut removed = removed_objects(&universe);
        removed.extend(snapshots_in_sets(self, &universe));
        let mut removal_unfinished = Vec::new();
        for name in &universe {
            let holders: Vec<usize> = (0..n)
                .filter(|&i| held[i].as_ref().is_some_and(|h| h.contains_key(*name)))
                .collect();
            if removed.contains(name.as_str()) {
                let listed = held.iter().filter(|h| h.is_some()).count();
                if holders.len() < listed {
                    for &i in &holders {
                        reports[i].removed.push((*name).clone());
                    }
                } else {
                    removal_unfinished.push((*name).clone());
                }
                continue;
            }
            for i in 0..n {
                if held[i].as_ref().is_some_and(|h| !h.contains_key(*name)) {
                    reports[i].missing.push((*name).clone());
                }
            }
            let sizes: BTreeSet<u64> = holders
                .iter()
                .map(|&i| held[i].as_ref().expect("holder")[*name])
                .collect();
            if !read_data && sizes.len() <= 1 {
                continue;
            }
            for (i, why) in self.verify_copies(name, &holders) {
                reports[i].corrupt.push(((*name).clone(), why));
            }
        }
        Ok(Audit {
            layout: self.layout(),
            objects: universe.len(),
            stores: reports,
            removal_unfinished,
        })
    }

    /// Read every copy or shard of `name` on `holders`; the damaged ones,
    /// with why.
    fn verify_copies(&self, name: &str, holders: &[usize]) -> Vec<(usize, String)> {
        let b = |i: usize| self.slots[i].backend.as_ref().expect("listed");
        let mut bad = Vec::new();
        let mut good: Vec<(usize, Bytes)> = Vec::new();
        for &i in holders {
            match b(i).get(name) {
                Ok(bytes) => good.push((i, bytes)),
                Err(e) => bad.push((i, format!("cannot be read: {e}"))),
            }
        }
        match self.mode_for(name) {
            Mode::Ec(p) => {
                let mut sound: Vec<ec::Shard<'_>> = Vec::new();
                for (i, bytes) in &good {
                    match ec::verify(bytes) {
                        Ok(v) if v.header.params == p && v.header.index as usize == *i => {
                            sound.push(v)
                        }
                        Ok(v) => bad.push((
                            *i,
                            format!(
                                "holds shard {} of {}, expected shard {i} of {p}",
                                v.header.index, v.header.params
                            ),
                        )),
                        Err(why) => bad.push((*i, why)),
                    }
                }
                match ec::rebuild_where(p, &sound, &|d| super::check_name(name, d).is_ok()) {
                    // Shards of another version of the object than the one
                    // the others rebuild (a rewrite that reached only some
                    // stores), or forged: `sync` rebuilds them.
                    Ok(r) => {
                        for i in r.disagree {
                            bad.push((
                                i,
                                format!(
                                    "holds a shard of another version of the object than the {}-byte one the other shards rebuild",
                                    r.data.len()
                                ),
                            ));
                        }
                    }
                    Err(why) if sound.len() >= p.k as usize => {
                        for s in &sound {
                            bad.push((s.header.index as usize, why.clone()));
                        }
                    }
                    // Too few shards to tell (the others are missing or
                    // damaged, and said so).
                    Err(_) => {}
                }
            }
            _ => {
                if good.iter().any(|(_, b)| self_check(name, b).is_some()) {
                    for (i, bytes) in good {
                        if let Some(Err(why)) = self_check(name, &bytes) {
                            bad.push((i, why));
                        }
                    }
                } else {
                    // Majority of identical copies.
                    let mut counts: HashMap<&[u8], usize> = HashMap::new();
                    for (_, b) in &good {
                        *counts.entry(&b[..]).or_default() += 1;
                    }
                    let best = counts.values().copied().max().unwrap_or(0);
                    let winners = counts.values().filter(|&&c| c == best).count();
                    for (i, bytes) in &good {
                        if winners > 1 && counts.len() > 1 {
                            bad.push((
                                *i,
                                "differs between the stores (cannot tell which copy is right)"
                                    .into(),
                            ));
                        } else if counts[&bytes[..]] != best {
                            bad.push((*i, "differs from the other stores".into()));
                        }
                    }
                }
            }
        }
        bad
    }

    /// Give every store what another store has and it misses or holds
    /// damaged: replicas get a verified copy of the bytes, shard stores get
    /// their shard rebuilt from any K others (encoding is deterministic, so
    /// the result is byte-exact). Records the layout in every store at the
    /// end. With `dry_run`, only says what it would do.
    /// Removed keys and forgotten snapshots left over on a store are not
    /// deleted (`sync_with`).
    pub fn sync(&self, read_data: bool, dry_run: bool) -> Result<SyncReport> {
        self.sync_with(read_data, dry_run, &|| {
            Err(Error::Invalid("no key was given to check it with".into()))
        })
    }

    /// `sync`; a removed key or forgotten snapshot left over on a store is
    /// deleted only if it is in the set `checked` returns (called once,
    /// only if there are any): the objects whose removal record checks
    /// under the keyring (`Repository::removed_objects`). The others are
    /// reported as failed, and are not copied either.
    pub fn sync_with(
        &self,
        read_data: bool,
        dry_run: bool,
        checked: &dyn Fn() -> Result<HashSet<String>>,
    ) -> Result<SyncReport> {
        let audit = self.audit(read_data)?;
        let mut report = SyncReport::default();
        if self.mode == Mode::Single {
            return Ok(report);
        }
        let mut jobs: Vec<(usize, String, Vec<usize>)> = Vec::new();
        let mut bad_here: HashMap<&str, Vec<usize>> = HashMap::new();
        for r in &audit.stores {
            for (name, _) in &r.corrupt {
                bad_here.entry(name).or_default().push(r.position);
            }
        }
        for r in &audit.stores {
            if let Some(why) = &r.unavailable {
                report
                    .failed
                    .push((r.url.clone(), "(every object)".into(), why.clone()));
                continue;
            }
            let names = r.missing.iter().chain(r.corrupt.iter().map(|(n, _)| n));
            for name in names {
                if name == layout::NAME {
                    continue;
                }
                let avoid = bad_here.get(name.as_str()).cloned().unwrap_or_default();
                jobs.push((r.position, name.clone(), avoid));
            }
        }
        let checked = if audit.stores.iter().any(|r| !r.removed.is_empty()) {
            checked().map_err(|e| e.to_string())
        } else {
            Ok(HashSet::new())
        };
        // Named by a record that was checked and is not this repository's
        // (damaged, forged): an object as any other, given to the stores
        // that miss it, so that a forged record in one store does not
        // keep the others from being repaired.
        if let Ok(c) = &checked {
            let unchecked: BTreeSet<&String> = audit
                .stores
                .iter()
                .flat_map(|r| &r.removed)
                .filter(|n| !c.contains(*n))
                .collect();
            for name in unchecked {
                for r in &audit.stores {
                    if r.unavailable.is_none() && !r.removed.contains(name) {
                        jobs.push((r.position, name.clone(), Vec::new()));
                    }
                }
            }
        }
        jobs.sort_by_key(|(i, name, _)| (priority(name), name.clone(), *i));
        for r in &audit.stores {
            for name in &r.removed {
                let url = self.slots[r.position].url.clone();
                let done = match &checked {
                    Ok(c) if c.contains(name) => Ok(()),
                    Ok(_) => Err(Error::Invalid(format!(
                        "a removal record names it, but none made with this repository's keyring: \
                         not deleted, and copied to the stores that miss it (a damaged or forged \
                         record: delete the record; {})",
                        if name.starts_with("snapshots/") {
                            "`secrate forget` forgets a snapshot"
                        } else {
                            "`secrate key remove` removes a key"
                        }
                    ))),
                    Err(why) => Err(Error::Invalid(format!(
                        "a removal record names it, not deleted: the record could not be checked ({why})"
                    ))),
                };
                let done = if done.is_err() {
                    done
                } else if dry_run {
                    Ok(())
                } else {
                    self.slots[r.position].b(name).and_then(|b| b.delete(name))
                };
                match done {
                    Ok(()) => report.deleted.push((url, name.clone())),
                    Err(e) => report.failed.push((url, name.clone(), e.to_string())),
                }
            }
        }
        for (i, name, avoid) in jobs {
            let url = self.slots[i].url.clone();
            match self.rebuild(i, &name, &avoid, dry_run) {
                Ok(len) => report.copied.push((url, name, len)),
                Err(e) => report.failed.push((url, name, e.to_string())),
            }
        }
        if !dry_run {
            if let Err(e) = self.record_layout() {
                report
                    .failed
                    .push((self.url.clone(), layout::NAME.into(), e.to_string()));
            }
        }
        Ok(report)
    }

    /// Put store `i`'s copy or shard of `name` back; returns its length.
    fn rebuild(&self, i: usize, name: &str, avoid: &[usize], dry_run: bool) -> Result<u64> {
        let bytes = match self.mode_for(name) {
            Mode::Ec(p) => self.rebuilt_shard(name, p, i)?,
            _ => self.good_copy(name, i, avoid)?,
        };
        let len = bytes.len() as u64;
        if !dry_run {
            let target: Backend = self.slots[i].b(name)?;
            target.put(name, bytes)?;
            self.not_brought_back(i, name, &target)?;
        }
        Ok(len)
    }

    /// After `name` was put on store `i` from the others: if a delete (a
    /// forget, a key removal, a prune) took it from every other store
    /// meanwhile, take it from store `i` too, else a forgotten snapshot or
    /// a removed key would come back and the next sync would spread it.
    /// A delete goes to every store, so one landing after this look takes
    /// it from store `i` as well (unless it came to store `i` before our
    /// put: a window this narrows, not closes).
    pub(super) fn not_brought_back(&self, i: usize, name: &str, target: &Backend) -> Result<()> {
        let mut still = false;
        for (j, slot) in self.slots.iter().enumerate() {
            if j == i {
                continue;
            }
            // A store that does not answer may still hold it.
            match slot.b(name).and_then(|b| b.head(name)) {
                Ok(None) => {}
                Ok(Some(_)) | Err(_) => still = true,
            }
        }
        if still {
            return Ok(());
        }
        target.delete(name)?;
        Err(Error::Store {
            url: self.slots[i].url.clone(),
            object: name.to_string(),
            reason: "deleted from the other stores while it was copied (left deleted)".into(),
        })
    }

    fn rebuilt_shard(&self, name: &str, p: EcParams, i: usize) -> Result<Bytes> {
        // In the version of the shards it is rebuilt from, so that the set
        // stays byte-exact and of one header size (ranged reads).
        let r = self.ec_rebuild(name, p)?;
        let mut shards = ec::encode_as(p, &r.data, r.version)?;
        Ok(Bytes::from(shards.swap_remove(i)))
    }

    /// A copy of `name` from a store other than `i` and those in `avoid`,
    /// verified when the object can be.
    fn good_copy(&self, name: &str, i: usize, avoid: &[usize]) -> Result<Bytes> {
        let mut errs = Vec::new();
        for (j, b) in self.readable() {
            if j == i || avoid.contains(&j) {
                continue;
            }
            match b.get(name) {
                Ok(bytes) => match check_name(name, &bytes) {
                    Ok(()) => return Ok(bytes),
                    Err(why) => errs.push(Error::corrupt(name, format!("at {}: {why}", b.url()))),
                },
                Err(e) => errs.push(e),
            }
        }
        Err(self.read_failed(name, errs))
    }
}

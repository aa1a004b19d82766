//! One repository per set of stores: each store's own copy (or shard) of
//! `config` is looked at when a set is opened.
//!
//! Listing merges what every store holds and `sync` gives every store the
//! union, so a store holding another repository (a mistyped URL, a disk
//! reused) given as a replica had the two repositories merged into each
//! other: its keys, snapshots and packs copied over, after which the
//! passphrase the two shared opened the wrong keyring ("config does not
//! match the keyring"). A store that is empty or holds no `config` is fine
//! (it is filled); a damaged copy is left to the failover and `sync`; two
//! sound copies that differ are refused, naming both stores.
//!
//! With erasure coding, shard i must be on store i. A set given out of
//! shard order read every object as damaged, and once recorded (by `sync`
//! or `init`) that order overrode the right one given again, so no command
//! could reach the data. The index in each store's `config` shard header
//! is compared with the store's position: a set given with `--ec` in shard
//! order wins over a recorded order the shards contradict; any other
//! mismatch is refused, saying which store holds which shard.

use bytes::Bytes;

use super::audit::self_check;
use super::ec::{self, EcParams};
use super::Slot;
use crate::error::{Error, Result};

const CONFIG: &str = "config";

/// Each store's own copy or shard of `config`, as stored (None: missing,
/// unreadable, or the store is gone: nothing to compare).
pub(super) fn config_copies(slots: &[Slot]) -> Vec<Option<Bytes>> {
    std::thread::scope(|sc| {
        let hs: Vec<_> = slots
            .iter()
            .map(|s| sc.spawn(move || s.backend.as_ref().ok()?.get(CONFIG).ok()))
            .collect();
        hs.into_iter().map(|h| h.join().ok().flatten()).collect()
    })
}

/// Is `c` a sound `config` copy (its checksum holds) or a sound shard of
/// one (its shard header and checksum hold)?
pub(super) fn is_sound_config(c: &[u8]) -> bool {
    self_check(CONFIG, c) == Some(Ok(())) || ec::verify(c).is_ok()
}

/// The shard index a store's `config` shard says it is, if it is a sound
/// shard of this layout.
fn shard_index(copy: &Option<Bytes>, p: EcParams) -> Option<usize> {
    match ec::verify(copy.as_deref()?) {
        Ok(v) if v.header.params == p => Some(v.header.index as usize),
        _ => None,
    }
}

/// Whether every store whose `config` shard says where it belongs is at
/// that position. A shard out of place whose own position holds that shard
/// too is a stale copy (a replacement made by copying another store's
/// directory), not a wrong order: `sync` rebuilds it.
pub(super) fn in_shard_order(copies: &[Option<Bytes>], p: EcParams) -> bool {
    copies.iter().enumerate().all(|(i, c)| {
        shard_index(c, p)
            .is_none_or(|j| j == i || copies.get(j).is_some_and(|o| shard_index(o, p) == Some(j)))
    })
}

/// The refusal for a set out of shard order.
pub(super) fn misordered(urls: &[String], copies: &[Option<Bytes>], p: EcParams) -> Error {
    let wrong: Vec<String> = urls
        .iter()
        .zip(copies)
        .enumerate()
        .filter_map(|(i, (u, c))| {
            let j = shard_index(c, p)?;
            let home = copies.get(j).and_then(|o| shard_index(o, p));
            (j != i && home != Some(j))
                .then(|| format!("{u} holds shard {j} but is at position {i}"))
        })
        .collect();
    Error::Invalid(format!(
        "the stores are not in shard order ({}): give --ec {p} and every store in shard order, shard 0 first",
        wrong.join("; ")
    ))
}

/// Refuse a set whose stores hold different repositories.
pub(super) fn one_repository(
    urls: &[String],
    copies: &[Option<Bytes>],
    ec: Option<EcParams>,
) -> Result<()> {
    match ec {
        None => replicas(urls, copies),
        Some(p) => shards(urls, copies, p),
    }
}

fn differ(a: &str, b: &str) -> Error {
    Error::Invalid(format!(
        "the stores {a} and {b} hold different repositories (their `config` objects differ): \
         every store of a set must hold this repository or be empty; leave the other one out"
    ))
}

fn replicas(urls: &[String], copies: &[Option<Bytes>]) -> Result<()> {
    let mut first: Option<(&str, &Bytes)> = None;
    for (u, c) in urls.iter().zip(copies) {
        let Some(c) = c else { continue };
        if self_check(CONFIG, c) != Some(Ok(())) {
            continue;
        }
        match first {
            None => first = Some((u, c)),
            Some((fu, fc)) if fc != c => return Err(differ(fu, u)),
            Some(_) => {}
        }
    }
    Ok(())
}

/// At most this many K-subsets of the sound shards are tried for one that
/// rebuilds a sound `config` (K+M ≤ 255; sets are small in practice).
const MAX_TRIES: usize = 256;

fn shards(urls: &[String], copies: &[Option<Bytes>], p: EcParams) -> Result<()> {
    let k = p.k as usize;
    // Sound shards at their position: (position, length, payload).
    let mut sound: Vec<(usize, u64, &[u8])> = Vec::new();
    for (i, c) in copies.iter().enumerate() {
        let Some(c) = c else { continue };
        match ec::verify(c) {
            Ok(v) if v.header.params == p && v.header.index as usize == i => {
                sound.push((i, v.header.len, v.payload))
            }
            Ok(v) if v.header.params != p => {
                return Err(Error::Invalid(format!(
                    "the store {} holds a repository erasure-coded {}, not {p}: \
                     every store of a set must hold this repository or be empty; leave it out",
                    urls[i], v.header.params
                )))
            }
            _ => {}
        }
    }
    if sound.len() < k {
        return Ok(());
    }
    let mut tried = 0;
    let mut pick: Vec<usize> = (0..k).collect();
    loop {
        let chosen: Vec<(usize, u64, &[u8])> = pick.iter().map(|&x| sound[x]).collect();
        let len = chosen[0].1;
        if chosen.iter().all(|c| c.1 == len) {
            let parts: Vec<(usize, &[u8])> = chosen.iter().map(|c| (c.0, c.2)).collect();
            if let Ok(whole) = ec::decode(p, len, &parts) {
                if self_check(CONFIG, &whole) == Some(Ok(())) {
                    let again = ec::encode(p, &whole)?;
                    let agree = pick[0];
                    // Compared as shards, not bytes: a version 1 shard of
                    // the same config is the same (repositories made before
                    // version 2, or partly rebuilt since).
                    for &(i, _, _) in &sound {
                        if !copies[i]
                            .as_deref()
                            .is_some_and(|c| ec::same_shard(c, &again[i]))
                        {
                            return Err(differ(&urls[sound[agree].0], &urls[i]));
                        }
                    }
                    return Ok(());
                }
            }
        }
        tried += 1;
        if tried >= MAX_TRIES || !ec::next_subset(&mut pick, sound.len()) {
            break;
        }
    }
    Err(Error::Invalid(format!(
        "the `config` shards of {} do not rebuild one config: the stores hold different \
         repositories; every store of a set must hold this repository or be empty",
        sound
            .iter()
            .map(|s| urls[s.0].as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::config::{Config, DEFAULT_PACK_TARGET};

    fn config(id: u8) -> Vec<u8> {
        Config {
            repo_id: [id; 16],
            created: 1,
            chunker: crate::crypto::ChunkerParams::DEFAULT,
            pack_target: DEFAULT_PACK_TARGET,
        }
        .encode()
    }

    /// The `config` shards of a set made before shard version 2, or partly
    /// rebuilt since, are one repository: compared as shards, not bytes.
    /// Another repository's shard among them is still refused.
    #[test]
    fn version_1_config_shards_are_one_repository() {
        let p = EcParams { k: 2, m: 1 };
        let urls: Vec<String> = (0..3).map(|i| format!("memory://s{i}")).collect();
        let shards = |id: u8, v: u8| -> Vec<Option<Bytes>> {
            ec::encode_as(p, &config(id), v)
                .unwrap()
                .into_iter()
                .map(|s| Some(Bytes::from(s)))
                .collect()
        };
        for version in [1u8, 2] {
            let copies = shards(1, version);
            assert!(in_shard_order(&copies, p));
            one_repository(&urls, &copies, Some(p)).unwrap();
        }
        let mut mixed = shards(1, 1);
        mixed[2] = shards(1, 2)[2].clone();
        one_repository(&urls, &mixed, Some(p)).unwrap();
        mixed[2] = shards(2, 1)[2].clone();
        let e = one_repository(&urls, &mixed, Some(p)).unwrap_err();
        assert!(e.to_string().contains("different repositories"), "{e}");
    }
}

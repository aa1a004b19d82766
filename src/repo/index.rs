//! The index: which pack holds each blob, where, and the pack's wrapped key.
//!
//! On the store the index is a set of deltas (`index/<id>`), each listing
//! whole packs, written only after those packs are stored. In memory it is
//! one vector of (blob id, location) sorted by id. Packs also carry their
//! own header, so a lost index can be rebuilt from the packs (and packs
//! stored by a writer that died before writing its index are found and
//! indexed the same way).
//!
//! A blob can be stored in several packs (two writers racing, a retried
//! upload, `repair`). Lookups find its first copy; the others are kept, so
//! that a reader can fall back to them (`copies`) and `check`, `repair` and
//! `prune` see every pack's whole list (`all_blobs_by_pack`).

use std::collections::HashMap;

use crate::crypto::{BlobKind, Id};
use crate::repo::codec::{Dec, DecodeResult, Enc};
use crate::repo::pack::{check_layout, decode_pack_body, encode_pack_body, PackBlob, PackInfo};

pub const MAGIC: &[u8; 7] = b"SECRATI";
pub const VERSION: u8 = 1;

pub fn index_name(id: &Id) -> String {
    format!("index/{}", id.to_hex())
}

/// Plaintext of one index delta: the packs it adds.
pub fn encode_delta(packs: &[PackInfo]) -> Vec<u8> {
    let n: usize = packs
        .iter()
        .map(|p| 80 + p.wrapped_key.len() + p.blobs.len() * 44)
        .sum();
    let mut e = Enc::with_capacity(n + 8);
    e.u32(packs.len() as u32);
    for p in packs {
        e.raw(&p.id.0).u64(p.size);
        encode_pack_body(&mut e, p.kind, &p.wrapped_key, &p.blobs);
    }
    e.finish()
}

pub fn decode_delta(b: &[u8]) -> DecodeResult<Vec<PackInfo>> {
    let mut d = Dec::new(b);
    let n = d.count(49)?;
    let mut packs = Vec::with_capacity(n);
    for _ in 0..n {
        let id = Id(d.array()?);
        let size = d.u64()?;
        let (kind, wrapped_key, blobs) = decode_pack_body(&mut d)?;
        check_layout(&blobs, size)?;
        packs.push(PackInfo {
            id,
            kind,
            size,
            wrapped_key,
            blobs,
        });
    }
    d.finish()?;
    Ok(packs)
}

/// A pack as the in-memory index keeps it.
#[derive(Clone, Debug)]
pub struct PackMeta {
    pub id: Id,
    pub kind: BlobKind,
    pub size: u64,
    pub wrapped_key: Vec<u8>,
}

/// Where a blob is: 16 bytes per blob besides its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLoc {
    pub pack: u32,
    pub offset: u32,
    pub length: u32,
    pub raw_len: u32,
}

/// Blobs added one pack at a time are merged into the sorted vector once
/// there are this many, or an eighth of it if that is more.
const MERGE_MIN: usize = if cfg!(test) { 4 } else { 1 << 16 };

/// Every pack, and every blob's location. The blobs sit in one vector
/// sorted by id, 48 bytes each: a hash map took 102 MB for 1M blobs (half
/// its slots empty at that size) and 166 MB while it grew, the largest part
/// of a mount's memory. Blobs added a pack at a time (a backup, a seal) go
/// to a small map first and are merged in batches.
#[derive(Default)]
pub struct Index {
    packs: Vec<PackMeta>,
    pack_pos: HashMap<Id, u32>,
    sorted: Vec<(Id, BlobLoc)>,
    /// Blobs not yet merged into `sorted`; none of them is in it.
    recent: HashMap<Id, BlobLoc>,
    /// The other locations of blobs stored more than once (rare): lookups
    /// use the first, `copies` and `all_blobs_by_pack` list them all.
    /// Sorted by id (stably: copies of one blob in the order they were
    /// added), so that `copies` is a binary search, not a scan.
    extra: Vec<(Id, BlobLoc)>,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// Record pack `p`; its position, or `None` if it is known already.
    fn push_pack(&mut self, p: &PackInfo) -> Option<u32> {
        if self.pack_pos.contains_key(&p.id) {
            return None;
        }
        let pos = self.packs.len() as u32;
        self.packs.push(PackMeta {
            id: p.id,
            kind: p.kind,
            size: p.size,
            wrapped_key: p.wrapped_key.clone(),
        });
        self.pack_pos.insert(p.id, pos);
        Some(pos)
    }

    fn find(&self, id: &Id) -> Option<BlobLoc> {
        if let Some(l) = self.recent.get(id) {
            return Some(*l);
        }
        search(&self.sorted, id).ok().map(|i| self.sorted[i].1)
    }

    /// Add a pack. A blob already indexed keeps its first location (any
    /// copy decrypts to the same bytes). Adding a known pack again is a no-op.
    pub fn add_pack(&mut self, p: &PackInfo) {
        let Some(pos) = self.push_pack(p) else { return };
        let extra_before = self.extra.len();
        for b in &p.blobs {
            if self.find(&b.id).is_none() {
                self.recent.insert(b.id, loc(pos, b));
            } else {
                self.extra.push((b.id, loc(pos, b)));
            }
        }
        if self.extra.len() > extra_before {
            self.extra.sort_by_key(|e| e.0);
        }
        if self.recent.len() >= MERGE_MIN.max(self.sorted.len() / 8) {
            self.merge();
        }
    }

    /// Add many packs at once, as `add_pack` each in turn would (loading
    /// the index): one sort, and each pack dropped once its blobs are in.
    pub fn add_packs(&mut self, packs: impl IntoIterator<Item = PackInfo>) {
        // Blobs indexed before come first, so they keep their place.
        self.merge();
        let before = self.sorted.len();
        for p in packs {
            if let Some(pos) = self.push_pack(&p) {
                self.sorted
                    .extend(p.blobs.iter().map(|b| (b.id, loc(pos, b))));
            }
        }
        self.settle(before);
    }

    /// Move `recent` into `sorted`.
    fn merge(&mut self) {
        if self.recent.is_empty() {
            return;
        }
        let before = self.sorted.len();
        self.sorted.extend(self.recent.drain());
        self.recent.shrink_to(MERGE_MIN);
        self.settle(before);
    }

    /// Sort what was pushed onto `sorted` past its first `before` blobs
    /// into place. The sort is stable, so of two copies of a blob the one
    /// added first stays first, and `dedup_by` keeps the first of equal
    /// neighbours (the others go to `extra`); it takes the sorted part as
    /// one run, so this costs a sort of the new blobs and one merge.
    fn settle(&mut self, before: usize) {
        if self.sorted.len() > before {
            self.sorted.sort_by_key(|a| a.0);
            let extra = &mut self.extra;
            let extra_before = extra.len();
            self.sorted.dedup_by(|later, first| {
                let same = later.0 == first.0;
                if same {
                    extra.push(*later);
                }
                same
            });
            if extra.len() > extra_before {
                extra.sort_by_key(|e| e.0);
            }
            self.sorted.shrink_to_fit();
        }
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.find(id).is_some()
    }

    pub fn get(&self, id: &Id) -> Option<(&PackMeta, BlobLoc)> {
        let loc = self.find(id)?;
        Some((&self.packs[loc.pack as usize], loc))
    }

    /// Every copy of blob `id`: first the one `get` finds, then the others
    /// in the order they were added. Empty if the blob is not indexed.
    pub fn copies(&self, id: &Id) -> Vec<(&PackMeta, BlobLoc)> {
        let Some(first) = self.find(id) else {
            return Vec::new();
        };
        let start = self.extra.partition_point(|e| e.0 < *id);
        let others = self.extra[start..].iter().take_while(|e| e.0 == *id);
        std::iter::once(first)
            .chain(others.map(|e| e.1))
            .map(|l| (&self.packs[l.pack as usize], l))
            .collect()
    }

    /// This index without the packs in `gone` (every copy of a blob they
    /// held elsewhere stays, the first of them found first).
    pub fn without_packs(&self, gone: &std::collections::HashSet<Id>) -> Index {
        let kept = self
            .packs
            .iter()
            .zip(self.all_blobs_by_pack())
            .filter(|(p, _)| !gone.contains(&p.id))
            .map(|(p, blobs)| PackInfo {
                id: p.id,
                kind: p.kind,
                size: p.size,
                wrapped_key: p.wrapped_key.clone(),
                blobs,
            });
        let mut fresh = Index::new();
        fresh.add_packs(kept);
        fresh
    }

    pub fn has_pack(&self, id: &Id) -> bool {
        self.pack_pos.contains_key(id)
    }

    pub fn pack(&self, id: &Id) -> Option<&PackMeta> {
        self.pack_pos.get(id).map(|&p| &self.packs[p as usize])
    }

    pub fn packs(&self) -> &[PackMeta] {
        &self.packs
    }

    pub fn blob_count(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    /// Every blob with its location, in no particular order.
    pub fn blobs(&self) -> impl Iterator<Item = (&Id, &BlobLoc)> {
        self.sorted
            .iter()
            .map(|(id, l)| (id, l))
            .chain(self.recent.iter())
    }

    /// Blobs grouped by pack (positions as in `packs()`), each sorted by
    /// offset; a blob stored more than once only where lookups find it.
    pub fn blobs_by_pack(&self) -> Vec<Vec<PackBlob>> {
        self.group_by_pack(self.blobs())
    }

    /// As `blobs_by_pack`, with every copy of a blob in its pack: each
    /// pack's whole list, as its index delta gives it.
    pub fn all_blobs_by_pack(&self) -> Vec<Vec<PackBlob>> {
        self.group_by_pack(self.blobs().chain(self.extra.iter().map(|(id, l)| (id, l))))
    }

    fn group_by_pack<'a>(
        &self,
        blobs: impl Iterator<Item = (&'a Id, &'a BlobLoc)>,
    ) -> Vec<Vec<PackBlob>> {
        let mut out = vec![Vec::new(); self.packs.len()];
        for (id, l) in blobs {
            out[l.pack as usize].push(PackBlob {
                id: *id,
                offset: l.offset,
                length: l.length,
                raw_len: l.raw_len,
            });
        }
        for v in &mut out {
            v.sort_by_key(|b| b.offset);
        }
        out
    }
}

/// `binary_search` of `id` in `sorted`, in fewer steps: blob ids are
/// keyed hashes, spread evenly, so the first 8 bytes of `id` tell roughly
/// where it is; the search gallops out from there to bracket it and
/// bisects the bracket: a few cache misses instead of 20 for 1M blobs
/// (with it, the index is 0.25 % of a 1M-file backup's profile). Any order
/// of ids gives the right answer, only in more steps.
fn search(sorted: &[(Id, BlobLoc)], id: &Id) -> Result<usize, usize> {
    let n = sorted.len();
    if n == 0 {
        return Err(0);
    }
    let mut head = [0u8; 8];
    head.copy_from_slice(&id.0[..8]);
    let guess = ((u64::from_be_bytes(head) as u128 * n as u128) >> 64) as usize;
    // Find lo <= hi with every id before lo smaller than `id` and every id
    // from hi on not smaller (so `id`, if there, is in lo..=hi).
    let (mut lo, mut hi) = (guess, guess);
    let mut step = 1;
    while lo > 0 && sorted[lo - 1].0 >= *id {
        lo = lo.saturating_sub(step);
        step *= 2;
    }
    step = 1;
    while hi < n && sorted[hi].0 < *id {
        hi = (hi + step).min(n);
        step *= 2;
    }
    match sorted[lo..(hi + 1).min(n)].binary_search_by(|(k, _)| k.cmp(id)) {
        Ok(i) => Ok(lo + i),
        Err(i) => Err(lo + i),
    }
}

fn loc(pack: u32, b: &PackBlob) -> BlobLoc {
    BlobLoc {
        pack,
        offset: b.offset,
        length: b.length,
        raw_len: b.raw_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> PackInfo {
        PackInfo {
            id: Id([1; 32]),
            kind: BlobKind::Tree,
            size: 200,
            wrapped_key: vec![9, 9],
            blobs: vec![PackBlob {
                id: Id([2; 32]),
                offset: 8,
                length: 50,
                raw_len: 10,
            }],
        }
    }

    /// Dropping a pack (a damaged outbox pack) keeps every other pack's
    /// copies: a blob stored twice is found in its other pack.
    #[test]
    fn without_packs_keeps_the_other_copies() {
        let a = sample();
        let mut b = sample();
        b.id = Id([3; 32]);
        b.blobs.push(PackBlob {
            id: Id([4; 32]),
            offset: 58,
            length: 40,
            raw_len: 8,
        });
        let mut ix = Index::new();
        ix.add_pack(&a);
        ix.add_pack(&b);
        let gone: std::collections::HashSet<Id> = [a.id].into_iter().collect();
        let left = ix.without_packs(&gone);
        assert!(!left.has_pack(&a.id));
        assert_eq!(left.get(&Id([2; 32])).unwrap().0.id, b.id);
        assert_eq!(left.copies(&Id([2; 32])).len(), 1);
        assert!(left.contains(&Id([4; 32])));
        assert_eq!(left.blob_count(), 2);
        let gone: std::collections::HashSet<Id> = [b.id].into_iter().collect();
        let left = ix.without_packs(&gone);
        assert!(!left.contains(&Id([4; 32])));
        assert_eq!(left.get(&Id([2; 32])).unwrap().0.id, a.id);
    }

    #[test]
    fn test_vector() {
        let b = encode_delta(&[sample()]);
        let expect = [
            "01000000",                                                         // pack count
            "0101010101010101010101010101010101010101010101010101010101010101", // pack id
            "c800000000000000",                                                 // pack size
            "01",                                                               // kind = tree
            "02000000",
            "0909",                                                             // wrapped key
            "01000000",                                                         // blob count
            "0202020202020202020202020202020202020202020202020202020202020202", // blob id
            "08000000",
            "32000000",
            "0a000000", // offset, length, raw length
        ]
        .concat();
        assert_eq!(hex::encode(&b), expect);
        assert_eq!(decode_delta(&b).unwrap(), vec![sample()]);
    }

    #[test]
    fn index_lookup() {
        let mut i = Index::new();
        i.add_pack(&sample());
        i.add_pack(&sample());
        assert_eq!(i.packs().len(), 1);
        let (p, l) = i.get(&Id([2; 32])).unwrap();
        assert_eq!(p.id, Id([1; 32]));
        assert_eq!(l.offset, 8);
        assert_eq!(i.blobs_by_pack()[0].len(), 1);
        assert!(!i.contains(&Id([3; 32])));
    }

    #[test]
    fn blobs_outside_the_pack_are_rejected() {
        let mut p = sample();
        p.blobs[0].offset = 190;
        assert!(decode_delta(&encode_delta(&[p])).is_err());
    }

    /// A pack `n` whose blobs are the ids `ids` (from a small space, so
    /// that packs share blobs), each at an offset naming its pack.
    fn pack_of(n: u8, ids: &[u8]) -> PackInfo {
        PackInfo {
            id: Id([n; 32]),
            kind: BlobKind::Data,
            size: 1 << 20,
            wrapped_key: vec![n],
            blobs: ids
                .iter()
                .enumerate()
                .map(|(i, &b)| PackBlob {
                    id: Id([b; 32]),
                    offset: n as u32 * 1000 + i as u32,
                    length: 1,
                    raw_len: 1,
                })
                .collect(),
        }
    }

    proptest! {
        /// Packs added one at a time (merged into the sorted vector every
        /// few blobs in tests) and in batches give what a plain map where
        /// the first location of a blob wins gives; `all_blobs_by_pack`
        /// gives each pack's whole list.
        #[test]
        fn index_matches_a_first_wins_map(
            ops in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(
                    (0u8..12, proptest::collection::vec(0u8..40, 0..8)), 1..4)),
                0..12)
        ) {
            let mut ix = Index::new();
            let mut packs: Vec<Id> = Vec::new();
            let mut whole: Vec<Vec<PackBlob>> = Vec::new();
            let mut model: HashMap<Id, (Id, u32)> = HashMap::new();
            for (batch, group) in &ops {
                let group: Vec<PackInfo> = group.iter().map(|(n, ids)| pack_of(*n, ids)).collect();
                for p in &group {
                    if packs.contains(&p.id) {
                        continue;
                    }
                    packs.push(p.id);
                    whole.push(p.blobs.clone());
                    for b in &p.blobs {
                        model.entry(b.id).or_insert((p.id, b.offset));
                    }
                }
                if *batch {
                    ix.add_packs(group);
                } else {
                    for p in &group {
                        ix.add_pack(p);
                    }
                }
            }
            prop_assert_eq!(ix.packs().iter().map(|p| p.id).collect::<Vec<_>>(), packs.clone());
            prop_assert_eq!(ix.blob_count(), model.len());
            for b in 0u8..40 {
                let id = Id([b; 32]);
                let got = ix.get(&id).map(|(p, l)| (p.id, l.offset));
                prop_assert_eq!(got, model.get(&id).copied());
                prop_assert_eq!(ix.contains(&id), model.contains_key(&id));
            }
            let mut listed: Vec<Id> = ix.blobs().map(|(id, _)| *id).collect();
            listed.sort();
            let mut want: Vec<Id> = model.keys().copied().collect();
            want.sort();
            prop_assert_eq!(listed, want);
            prop_assert_eq!(ix.all_blobs_by_pack(), whole.clone());
            // `copies`: the first copy first, then the others in the order
            // their packs were added (offsets name the pack and the place).
            for b in 0u8..40 {
                let id = Id([b; 32]);
                let want: Vec<(Id, u32)> = packs
                    .iter()
                    .zip(&whole)
                    .flat_map(|(p, blobs)| {
                        blobs.iter().filter(|x| x.id == id).map(move |x| (*p, x.offset))
                    })
                    .collect();
                let got: Vec<(Id, u32)> =
                    ix.copies(&id).iter().map(|(p, l)| (p.id, l.offset)).collect();
                prop_assert_eq!(got.first().copied(), model.get(&id).copied());
                prop_assert_eq!(got, want);
            }
        }

        /// The guided search answers as `binary_search` does, whatever the
        /// ids (even, clustered or all equal in their first bytes).
        #[test]
        fn search_matches_binary_search(
            mut ids in proptest::collection::vec(any::<[u8; 32]>(), 0..200),
            narrow in any::<bool>(),
            probes in proptest::collection::vec(any::<[u8; 32]>(), 1..20),
        ) {
            if narrow {
                for id in ids.iter_mut() {
                    id[..7].fill(0x80);
                }
            }
            ids.sort();
            ids.dedup();
            let sorted: Vec<(Id, BlobLoc)> = ids
                .iter()
                .map(|&b| (Id(b), BlobLoc { pack: 0, offset: 0, length: 0, raw_len: 0 }))
                .collect();
            let mut all: Vec<[u8; 32]> = probes;
            all.extend(ids.iter().copied());
            for p in all {
                let want = sorted.binary_search_by(|(k, _)| k.cmp(&Id(p)));
                prop_assert_eq!(search(&sorted, &Id(p)), want);
            }
        }

        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_delta(&b);
        }
    }
}

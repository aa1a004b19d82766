//! The index: which pack holds each blob, where, and the pack's wrapped key.
//!
//! On the store the index is a set of deltas (`index/<id>`), each listing
//! whole packs, written only after those packs are stored. In memory it is
//! one map from blob id to location. Packs also carry their own header, so a
//! lost index can be rebuilt from the packs (and packs stored by a writer
//! that died before writing its index are found and indexed the same way).

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

#[derive(Default)]
pub struct Index {
    packs: Vec<PackMeta>,
    pack_pos: HashMap<Id, u32>,
    blobs: HashMap<Id, BlobLoc>,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// Add a pack. A blob already indexed keeps its first location (any
    /// copy decrypts to the same bytes). Adding a known pack again is a no-op.
    pub fn add_pack(&mut self, p: &PackInfo) {
        if self.pack_pos.contains_key(&p.id) {
            return;
        }
        let pos = self.packs.len() as u32;
        self.packs.push(PackMeta {
            id: p.id,
            kind: p.kind,
            size: p.size,
            wrapped_key: p.wrapped_key.clone(),
        });
        self.pack_pos.insert(p.id, pos);
        self.blobs.reserve(p.blobs.len());
        for b in &p.blobs {
            self.blobs.entry(b.id).or_insert(BlobLoc {
                pack: pos,
                offset: b.offset,
                length: b.length,
                raw_len: b.raw_len,
            });
        }
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.contains_key(id)
    }

    pub fn get(&self, id: &Id) -> Option<(&PackMeta, BlobLoc)> {
        let loc = *self.blobs.get(id)?;
        Some((&self.packs[loc.pack as usize], loc))
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
        self.blobs.len()
    }

    /// Every blob with its location, in no particular order.
    pub fn blobs(&self) -> impl Iterator<Item = (&Id, &BlobLoc)> {
        self.blobs.iter()
    }

    /// Blobs grouped by pack (positions as in `packs()`), each sorted by offset.
    pub fn blobs_by_pack(&self) -> Vec<Vec<PackBlob>> {
        let mut out = vec![Vec::new(); self.packs.len()];
        for (id, l) in &self.blobs {
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

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_delta(&b);
        }
    }
}

//! Damage records (`damage/<id>`): the blobs `secrate repair` found lost
//! for good (no pack, cache or source folder held them).
//!
//! A record is written before the index that no longer lists those blobs,
//! under the writer lock, and never changes; it is deleted by nobody. A blob
//! is *lost* while some record lists it and no index does: when a backup or
//! a mount stores the same content again (same keyed id), the blob is
//! indexed again and healed, and every old snapshot that referenced it is
//! whole again. Writers load the records so that the trees they write never
//! reference a lost blob: a file whose chunk was lost keeps its name, size
//! and surviving chunks, and the lost range is marked with `Id::LOST`
//! (reads of it fail, never return bytes), until the file is rewritten.
//!
//! Envelope: magic `SECRATX`, version 1, age to the metadata recipient.
//! Plaintext: `count` then (kind `u8`, id 32 bytes) per blob, strictly
//! increasing by (kind, id), so a set of lost blobs has one encoding.

use crate::crypto::{BlobKind, Id};
use crate::repo::codec::{bad, Dec, DecodeResult, Enc};

pub const MAGIC: &[u8; 7] = b"SECRATX";
pub const VERSION: u8 = 1;
/// Kind byte and id.
const ITEM: usize = 33;

pub fn damage_name(id: &Id) -> String {
    format!("damage/{}", id.to_hex())
}

/// The blobs one run of `repair` lost for good.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DamageRecord {
    /// Sorted by (kind, id), no duplicates.
    pub lost: Vec<(BlobKind, Id)>,
}

impl DamageRecord {
    /// A record of `lost`, in canonical order.
    pub fn new(lost: impl IntoIterator<Item = (BlobKind, Id)>) -> DamageRecord {
        let mut lost: Vec<(BlobKind, Id)> = lost.into_iter().collect();
        lost.sort_by_key(|(k, id)| (*k as u8, *id));
        lost.dedup();
        DamageRecord { lost }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::with_capacity(4 + self.lost.len() * ITEM);
        e.u32(self.lost.len() as u32);
        for (k, id) in &self.lost {
            e.u8(*k as u8).raw(&id.0);
        }
        e.finish()
    }

    pub fn decode(b: &[u8]) -> DecodeResult<DamageRecord> {
        let mut d = Dec::new(b);
        let n = d.count(ITEM)?;
        let mut lost: Vec<(BlobKind, Id)> = Vec::with_capacity(n);
        for _ in 0..n {
            let kind = match d.u8()? {
                0 => BlobKind::Data,
                1 => BlobKind::Tree,
                k => return bad(format!("unknown blob kind {k}")),
            };
            let id = Id(d.array()?);
            if id.is_lost() {
                return bad("the all-zero id is not a blob");
            }
            if let Some((pk, pid)) = lost.last() {
                if (*pk as u8, *pid) >= (kind as u8, id) {
                    return bad("lost blobs are not sorted");
                }
            }
            lost.push((kind, id));
        }
        d.finish()?;
        Ok(DamageRecord { lost })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn test_vector() {
        let r = DamageRecord::new([
            (BlobKind::Tree, Id([3; 32])),
            (BlobKind::Data, Id([2; 32])),
            (BlobKind::Data, Id([2; 32])),
        ]);
        let b = r.encode();
        let mut want = hex::decode("02000000").unwrap();
        want.push(0);
        want.extend_from_slice(&[2; 32]);
        want.push(1);
        want.extend_from_slice(&[3; 32]);
        assert_eq!(b, want);
        assert_eq!(DamageRecord::decode(&b).unwrap(), r);
    }

    #[test]
    fn rejects_what_is_not_canonical() {
        let r = DamageRecord::new([(BlobKind::Data, Id([2; 32])), (BlobKind::Data, Id([5; 32]))]);
        let mut b = r.encode();
        assert!(
            DamageRecord::decode(&b[..b.len() - 1]).is_err(),
            "truncated"
        );
        b.push(0);
        assert!(DamageRecord::decode(&b).is_err(), "trailing byte");
        let mut swapped = hex::decode("02000000").unwrap();
        for id in [5u8, 2] {
            swapped.push(0);
            swapped.extend_from_slice(&[id; 32]);
        }
        assert!(DamageRecord::decode(&swapped).is_err(), "unsorted");
        let mut kind = hex::decode("01000000").unwrap();
        kind.push(7);
        kind.extend_from_slice(&[1; 32]);
        assert!(DamageRecord::decode(&kind).is_err(), "bad kind");
        let mut zero = hex::decode("01000000").unwrap();
        zero.push(0);
        zero.extend_from_slice(&[0; 32]);
        assert!(DamageRecord::decode(&zero).is_err(), "zero id");
        assert!(DamageRecord::decode(&hex::decode("ffffffff").unwrap()).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(r) = DamageRecord::decode(&b) {
                prop_assert_eq!(r.encode(), b);
            }
        }
    }
}

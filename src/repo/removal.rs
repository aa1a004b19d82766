//! Removal records: `keys-removed/<id>` (a key `key remove` took away),
//! `snapshots-forgotten/<id>` (a snapshot `forget` deleted) and
//! `snapshots-forgotten/set-<hash>` (snapshots a mount's retention deleted,
//! or the records `prune` merged: [`ForgottenSet`]).
//!
//! A delete reaches only the stores that are there and hold the object
//! then; a store that missed it (down, or an older copy of a disk given
//! back) still holds the object, and listing (a union of the stores) or
//! `sync` would bring it back. So the record goes to every store before
//! the object is deleted, and whatever reads the directory drops the
//! objects a record names.
//!
//! A record counts only if its tag checks under this repository's keyring
//! (`Keyring::removal_tag`, keyed by the id key, over every byte before
//! the tag). The tagged bytes start with the record kind's magic and hold
//! the removed object's id, which must match the record's name: a record
//! cannot be moved to another name, nor a key removal passed off as a
//! forgotten snapshot. A record forged by someone who can write to one
//! store but has no key removes and hides nothing.

use crate::crypto::{Id, Keyring};
use crate::repo::codec::{bad, Dec, DecodeResult, Enc};

/// What a record removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removed {
    /// `keys/<id>`, recorded in `keys-removed/<id>`.
    Key,
    /// `snapshots/<id>`, recorded in `snapshots-forgotten/<id>`.
    Snapshot,
}

pub const VERSION: u8 = 1;
/// Key ids are 16 hex digits; longer ones are accepted up to this.
const MAX_KEY_ID: usize = 64;

impl Removed {
    pub fn magic(self) -> &'static [u8; 7] {
        match self {
            Removed::Key => b"SECRATR",
            Removed::Snapshot => b"SECRATF",
        }
    }

    /// Where its records live.
    pub fn record_dir(self) -> &'static str {
        match self {
            Removed::Key => crate::store::KEY_REMOVALS,
            Removed::Snapshot => crate::store::SNAPSHOTS_FORGOTTEN,
        }
    }

    /// Where the objects it removes live.
    pub fn object_dir(self) -> &'static str {
        match self {
            Removed::Key => "keys",
            Removed::Snapshot => "snapshots",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Removed::Key => "key removal record",
            Removed::Snapshot => "forgotten snapshot record",
        }
    }

    /// A key id is 1..=64 hex digits; a snapshot id exactly 64 (lower case,
    /// as `Id::to_hex` writes it).
    fn id_ok(self, id: &[u8]) -> bool {
        match self {
            Removed::Key => {
                !id.is_empty() && id.len() <= MAX_KEY_ID && id.iter().all(u8::is_ascii_hexdigit)
            }
            Removed::Snapshot => {
                id.len() == 64 && id.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            }
        }
    }

    /// `keys-removed/<id>` for `keys/<id>` (and so on).
    pub fn record_name(self, object_name: &str) -> String {
        let id = object_name
            .strip_prefix(self.object_dir())
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(object_name);
        format!("{}/{id}", self.record_dir())
    }

    /// `keys/<id>` for `keys-removed/<id>`; None for any other name.
    pub fn object_name(self, record_name: &str) -> Option<String> {
        let id = record_name
            .strip_prefix(self.record_dir())?
            .strip_prefix('/')?;
        (!id.is_empty() && !id.contains('/')).then(|| format!("{}/{id}", self.object_dir()))
    }
}

/// The record itself: `id` (of `kind`) was removed at `removed` (Unix
/// seconds) and must not come back, whichever store still holds an older
/// copy of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    pub kind: Removed,
    pub id: String,
    pub removed: i64,
    pub tag: [u8; 32],
}

impl Removal {
    pub fn new(ring: &Keyring, kind: Removed, id: &str, removed: i64) -> Removal {
        let mut r = Removal {
            kind,
            id: id.to_string(),
            removed,
            tag: [0; 32],
        };
        r.tag = ring.removal_tag(&r.body());
        r
    }

    fn body(&self) -> Vec<u8> {
        let mut e = Enc::with_capacity(24 + self.id.len());
        e.raw(self.kind.magic())
            .u8(VERSION)
            .i64(self.removed)
            .bytes16(self.id.as_bytes());
        e.finish()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.body();
        b.extend_from_slice(&self.tag);
        b
    }

    pub fn decode(kind: Removed, b: &[u8]) -> DecodeResult<Removal> {
        let mut d = Dec::new(b);
        let v = d.magic(kind.magic())?;
        if v != VERSION {
            return bad(format!("{} version {v} is not supported", kind.what()));
        }
        let removed = d.i64()?;
        let id = d.bytes16()?;
        if !kind.id_ok(id) {
            return bad(format!("the id in a {} is not one", kind.what()));
        }
        let tag = d.array()?;
        d.finish()?;
        Ok(Removal {
            kind,
            id: String::from_utf8_lossy(id).into_owned(),
            removed,
            tag,
        })
    }

    /// The object this record removes (`keys/<id>`, `snapshots/<id>`).
    pub fn object_name(&self) -> String {
        format!("{}/{}", self.kind.object_dir(), self.id)
    }

    /// Made with this keyring (constant-time comparison)?
    pub fn is_made_with(&self, ring: &Keyring) -> bool {
        blake3::Hash::from(ring.removal_tag(&self.body())) == blake3::Hash::from(self.tag)
    }
}

/// Does `bytes`, stored as the record of `object_name`, hold for it under
/// `ring`? Damaged, forged (made without this repository's keyring), of
/// another kind, or naming another object: an error saying which, and the
/// record removes nothing.
pub fn holds(
    kind: Removed,
    object_name: &str,
    bytes: &[u8],
    ring: &Keyring,
) -> std::result::Result<(), String> {
    let r = Removal::decode(kind, bytes).map_err(|e| e.0)?;
    if r.object_name() != object_name {
        return Err("it names another object than its own name does (moved)".into());
    }
    if !r.is_made_with(ring) {
        return Err("it was not made with this repository's keys (damaged or forged)".into());
    }
    Ok(())
}

/// Magic of a forgotten set record.
pub const SET_MAGIC: &[u8; 7] = b"SECRATB";
/// Name prefix of forgotten set records inside `snapshots-forgotten/`.
pub const SET_PREFIX: &str = "set-";

/// A forgotten set record, `snapshots-forgotten/set-<BLAKE3 of it>`: the
/// snapshots `ids` were forgotten at `forgotten` (Unix seconds). One
/// record for many snapshots: a mount's retention forgets one or two a
/// minute, and one record per snapshot would grow the directory every
/// listing of snapshots lists by half a million a year. `prune` merges
/// the sets into one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForgottenSet {
    pub forgotten: i64,
    /// Ascending, no repeats.
    pub ids: Vec<Id>,
    pub tag: [u8; 32],
}

impl ForgottenSet {
    /// The set of `ids` (sorted and deduplicated here).
    pub fn new(ring: &Keyring, ids: &[Id], forgotten: i64) -> ForgottenSet {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut r = ForgottenSet {
            forgotten,
            ids,
            tag: [0; 32],
        };
        r.tag = ring.removal_tag(&r.body());
        r
    }

    fn body(&self) -> Vec<u8> {
        let mut e = Enc::with_capacity(20 + 32 * self.ids.len());
        e.raw(SET_MAGIC)
            .u8(VERSION)
            .i64(self.forgotten)
            .u32(self.ids.len() as u32);
        for id in &self.ids {
            e.raw(&id.0);
        }
        e.finish()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.body();
        b.extend_from_slice(&self.tag);
        b
    }

    /// Its name: `snapshots-forgotten/set-<64 hex of BLAKE3(encoded)>`.
    pub fn name_of(encoded: &[u8]) -> String {
        format!(
            "{}/{SET_PREFIX}{}",
            crate::store::SNAPSHOTS_FORGOTTEN,
            blake3::hash(encoded).to_hex()
        )
    }

    /// Is `name` (in `snapshots-forgotten/`) that of a set record?
    pub fn is_set_name(name: &str) -> bool {
        name.strip_prefix(crate::store::SNAPSHOTS_FORGOTTEN)
            .is_some_and(|r| r.starts_with('/'))
            && crate::store::content_addressed(name).is_some()
    }

    /// Decoder checks: magic, version, a count the bytes can hold, ids in
    /// ascending order without repeats, no trailing bytes. Not the tag
    /// (`holds`), nor the name.
    pub fn decode(b: &[u8]) -> DecodeResult<ForgottenSet> {
        let mut d = Dec::new(b);
        let v = d.magic(SET_MAGIC)?;
        if v != VERSION {
            return bad(format!("forgotten set record version {v} is not supported"));
        }
        let forgotten = d.i64()?;
        let n = d.u32()? as usize;
        if n == 0 || d.remaining() != n.saturating_mul(32).saturating_add(32) {
            return bad("a forgotten set record's count does not match its length");
        }
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let id = Id(d.array()?);
            if ids.last().is_some_and(|l: &Id| *l >= id) {
                return bad("a forgotten set record's ids are not in ascending order");
            }
            ids.push(id);
        }
        let tag = d.array()?;
        d.finish()?;
        Ok(ForgottenSet {
            forgotten,
            ids,
            tag,
        })
    }

    /// Does `bytes`, stored under `name`, hold under `ring`? Its name must
    /// be its hash (a record cannot be passed off under another name, and
    /// a name is never reused for other bytes) and its tag must check.
    /// Else why not; such a record forgets nothing.
    pub fn holds(
        name: &str,
        bytes: &[u8],
        ring: &Keyring,
    ) -> std::result::Result<ForgottenSet, String> {
        let r = ForgottenSet::decode(bytes).map_err(|e| e.0)?;
        if ForgottenSet::name_of(bytes) != name {
            return Err("it does not match its name (damaged or moved)".into());
        }
        let tag = ring.removal_tag(&r.body());
        if blake3::Hash::from(tag) != blake3::Hash::from(r.tag) {
            return Err("it was not made with this repository's keys (damaged or forged)".into());
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::ChunkerParams;
    use proptest::prelude::*;

    #[test]
    fn key_removal_test_vector_and_tag() {
        let ring = Keyring::generate([3; 16], ChunkerParams::DEFAULT);
        let r = Removal::new(&ring, Removed::Key, "00112233aabbccdd", 1);
        let b = r.encode();
        assert_eq!(
            hex::encode(&b[..b.len() - 32]),
            concat!(
                "5345435241545201",
                "0100000000000000",
                "1000",
                "30303131323233336161626263636464"
            )
        );
        assert_eq!(
            hex::encode(&b[b.len() - 32..]),
            hex::encode(ring.removal_tag(&b[..b.len() - 32]))
        );
        let back = Removal::decode(Removed::Key, &b).unwrap();
        assert_eq!(back, r);
        assert!(back.is_made_with(&ring));
        // Another repository's keyring (another id key) does not vouch for it.
        let other = Keyring::generate([3; 16], ChunkerParams::DEFAULT);
        assert!(!back.is_made_with(&other));
        // Any byte changed: the tag fails or the decoder refuses.
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 1;
            assert!(Removal::decode(Removed::Key, &c).map_or(true, |r| !r.is_made_with(&ring)));
        }
        let k = Removed::Key;
        assert_eq!(k.record_name("keys/00aa"), "keys-removed/00aa");
        assert_eq!(k.object_name("keys-removed/00aa").unwrap(), "keys/00aa");
        assert!(k.object_name("keys-removedx/00aa").is_none());
        assert!(k.object_name("keys-removed/").is_none());
        assert!(k.object_name("keys-removed/a/b").is_none());
    }

    #[test]
    fn forgotten_snapshot_test_vector_and_binding() {
        let ring = Keyring::generate([3; 16], ChunkerParams::DEFAULT);
        let id = "ab".repeat(32);
        let r = Removal::new(&ring, Removed::Snapshot, &id, 1);
        let b = r.encode();
        let mut want = String::from("5345435241544601");
        want += "0100000000000000";
        want += "4000";
        want += &hex::encode(id.as_bytes());
        assert_eq!(hex::encode(&b[..b.len() - 32]), want);
        let back = Removal::decode(Removed::Snapshot, &b).unwrap();
        assert_eq!(back, r);
        let name = format!("snapshots/{id}");
        assert_eq!(holds(Removed::Snapshot, &name, &b, &ring), Ok(()));
        // Under another name (moved): refused.
        let other_name = format!("snapshots/{}", "cd".repeat(32));
        assert!(holds(Removed::Snapshot, &other_name, &b, &ring).is_err());
        // Another repository's keyring: refused.
        let other = Keyring::generate([3; 16], ChunkerParams::DEFAULT);
        assert!(holds(Removed::Snapshot, &name, &b, &other).is_err());
        // A key removal record is not a forgotten snapshot record, though
        // its tag is made with the same key: the magic is tagged too.
        let key_rec = Removal::new(&ring, Removed::Key, &id, 1).encode();
        assert!(Removal::decode(Removed::Snapshot, &key_rec).is_err());
        let mut relabelled = key_rec.clone();
        relabelled[..7].copy_from_slice(Removed::Snapshot.magic());
        assert!(holds(Removed::Snapshot, &name, &relabelled, &ring).is_err());
        // Ids that are not a snapshot's: upper case, short, not hex.
        for bad_id in [id.to_uppercase(), "ab".into(), "zz".repeat(32)] {
            let r = Removal::new(&ring, Removed::Snapshot, &bad_id, 1).encode();
            assert!(Removal::decode(Removed::Snapshot, &r).is_err(), "{bad_id}");
        }
        let s = Removed::Snapshot;
        assert_eq!(s.record_name(&name), format!("snapshots-forgotten/{id}"));
        assert_eq!(s.object_name(&s.record_name(&name)).unwrap(), name);
    }

    #[test]
    fn forgotten_set_test_vector_and_binding() {
        let ring = Keyring::generate([3; 16], ChunkerParams::DEFAULT);
        let (a, b) = (Id([0xab; 32]), Id([0x01; 32]));
        let r = ForgottenSet::new(&ring, &[a, b, a], 1);
        assert_eq!(r.ids, vec![b, a], "sorted, no repeats");
        let bytes = r.encode();
        let mut want = String::from("5345435241544201");
        want += "0100000000000000";
        want += "02000000";
        want += &"01".repeat(32);
        want += &"ab".repeat(32);
        assert_eq!(hex::encode(&bytes[..bytes.len() - 32]), want);
        assert_eq!(bytes.len(), 20 + 2 * 32 + 32);
        let name = ForgottenSet::name_of(&bytes);
        assert!(ForgottenSet::is_set_name(&name), "{name}");
        assert_eq!(ForgottenSet::holds(&name, &bytes, &ring).unwrap(), r);
        // Not a single snapshot's record name: old code passes it over.
        assert!(Removed::Snapshot
            .object_name(&name)
            .and_then(|n| n.strip_prefix("snapshots/").and_then(Id::from_hex))
            .is_none());
        // Under another name: refused.
        let other_name = ForgottenSet::name_of(b"other");
        assert!(ForgottenSet::holds(&other_name, &bytes, &ring).is_err());
        // Another repository's keyring: refused.
        let other = Keyring::generate([3; 16], ChunkerParams::DEFAULT);
        assert!(ForgottenSet::holds(&name, &bytes, &other).is_err());
        // Any byte changed: refused (by the decoder, the name or the tag).
        for i in 0..bytes.len() {
            let mut c = bytes.clone();
            c[i] ^= 1;
            assert!(ForgottenSet::holds(&name, &c, &ring).is_err(), "byte {i}");
            // Even renamed to its new hash, the tag gives it away.
            assert!(ForgottenSet::holds(&ForgottenSet::name_of(&c), &c, &ring).is_err());
        }
        // A single snapshot's record is not a set, nor a set a single.
        let single = Removal::new(&ring, Removed::Snapshot, &a.to_hex(), 1).encode();
        assert!(ForgottenSet::decode(&single).is_err());
        assert!(Removal::decode(Removed::Snapshot, &bytes).is_err());
        // Out of order, repeated, empty, count beyond the bytes: refused.
        let mut swapped = bytes.clone();
        swapped[20..52].copy_from_slice(&[0xab; 32]);
        swapped[52..84].copy_from_slice(&[0x01; 32]);
        assert!(ForgottenSet::decode(&swapped).is_err());
        let mut twice = bytes.clone();
        twice[52..84].copy_from_slice(&[0x01; 32]);
        assert!(ForgottenSet::decode(&twice).is_err());
        let empty = ForgottenSet::new(&ring, &[], 1).encode();
        assert!(ForgottenSet::decode(&empty).is_err());
        let mut long = bytes.clone();
        long[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(ForgottenSet::decode(&long).is_err());
        for n in [
            "snapshots-forgotten/set-",
            "snapshots-forgotten/set-AB",
            "snapshots-forgotten/abc",
        ] {
            assert!(!ForgottenSet::is_set_name(n), "{n}");
        }
    }

    proptest! {
        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Removal::decode(Removed::Key, &b);
            let _ = Removal::decode(Removed::Snapshot, &b);
            let _ = ForgottenSet::decode(&b);
        }
    }
}

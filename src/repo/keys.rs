//! Key objects (`keys/<id>`): the keyring, age-encrypted to a passphrase
//! (scrypt) or to a recovery identity (X25519).
//!
//! A repository has one key object per way in: each passphrase and each
//! recovery key opens its own copy of the same keyring, so adding or removing
//! a way in never touches data. The plaintext header says only which kind of
//! secret opens the object, so a passphrase is tried only against passphrase
//! objects (each try costs a full scrypt). The header is not authenticated:
//! a kind byte that disagrees with the age header inside is reported as
//! damage when nothing opens (`unlock` in mod.rs), never trusted further.
//!
//! A removed key leaves a record (`keys-removed/<id>`, `removal::Removal`) on
//! every store before its object is deleted, so that a store holding an
//! older copy of the object does not bring the key back. The record is
//! honoured at unlock only if its tag checks under the keyring the key
//! opens: a record forged without the keyring removes nothing.

use zeroize::Zeroizing;

use crate::crypto::{
    identity_to_string, parse_identity, parse_recipient, ChunkerParams, Keyring, KeyringParts,
};
use crate::repo::codec::{bad, Dec, DecodeResult, Enc};
use crate::repo::removal::Removed;

pub const MAGIC: &[u8; 7] = b"SECRATK";
pub const VERSION: u8 = 1;
const KEYRING_VERSION: u8 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum KeyKind {
    Passphrase = 1,
    Recovery = 2,
}

impl KeyKind {
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Passphrase => "passphrase",
            KeyKind::Recovery => "recovery",
        }
    }
}

/// A key object as stored: who can open it, and the sealed keyring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyObject {
    pub kind: KeyKind,
    pub created: i64,
    /// Set for keys that can add data but not read file contents back.
    pub write_only: bool,
    pub sealed: Vec<u8>,
}

impl KeyObject {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::with_capacity(self.sealed.len() + 24);
        e.raw(MAGIC)
            .u8(VERSION)
            .u8(self.kind as u8)
            .u8(self.write_only as u8)
            .i64(self.created)
            .raw(&self.sealed);
        e.finish()
    }

    pub fn decode(b: &[u8]) -> DecodeResult<KeyObject> {
        let mut d = Dec::new(b);
        let v = d.magic(MAGIC)?;
        if v != VERSION {
            return bad(format!("key format version {v} is not supported"));
        }
        let kind = match d.u8()? {
            1 => KeyKind::Passphrase,
            2 => KeyKind::Recovery,
            k => return bad(format!("unknown key kind {k}")),
        };
        let write_only = match d.u8()? {
            0 => false,
            1 => true,
            _ => return bad("bad write-only flag"),
        };
        let created = d.i64()?;
        let sealed = d.raw(d.remaining())?.to_vec();
        Ok(KeyObject {
            kind,
            created,
            write_only,
            sealed,
        })
    }
}

/// Where key removal records live: `keys-removed/<id>` for `keys/<id>`.
/// The record (`Removal` of kind `Removed::Key`) is shared with forgotten
/// snapshots: `repo::removal`.
pub const REMOVED_DIR: &str = crate::store::KEY_REMOVALS;

/// `keys-removed/<id>` for `keys/<id>`.
pub fn removal_name(key_name: &str) -> String {
    Removed::Key.record_name(key_name)
}

/// `keys/<id>` for `keys-removed/<id>`; None for any other name.
pub fn removed_key_name(record_name: &str) -> Option<String> {
    Removed::Key.object_name(record_name)
}

/// The keyring's plaintext, as sealed inside a key object.
pub fn encode_keyring(k: &Keyring) -> Zeroizing<Vec<u8>> {
    let mut e = Enc::with_capacity(512);
    e.u8(KEYRING_VERSION)
        .raw(&k.repo_id)
        .u32(k.chunker.min)
        .u32(k.chunker.avg)
        .u32(k.chunker.max)
        .raw(&*k.id_key)
        .u64(k.chunker_seed)
        .bytes16(k.data_recipient.to_string().as_bytes());
    match &k.data_identity {
        Some(id) => {
            e.u8(1).bytes16(identity_to_string(id).as_bytes());
        }
        None => {
            e.u8(0);
        }
    }
    e.bytes16(identity_to_string(&k.meta_identity).as_bytes());
    Zeroizing::new(e.finish())
}

pub fn decode_keyring(b: &[u8]) -> DecodeResult<Keyring> {
    let mut d = Dec::new(b);
    let v = d.u8()?;
    if v != KEYRING_VERSION {
        return bad(format!("keyring version {v} is not supported"));
    }
    let repo_id = d.array()?;
    let chunker = ChunkerParams {
        min: d.u32()?,
        avg: d.u32()?,
        max: d.u32()?,
    };
    let id_key = Zeroizing::new(d.array()?);
    let chunker_seed = d.u64()?;
    let text = |b: &[u8]| Zeroizing::new(String::from_utf8_lossy(b).into_owned());
    let data_recipient = parse_recipient(&text(d.bytes16()?))
        .ok_or_else(|| crate::repo::codec::DecodeError("bad data recipient".into()))?;
    let data_identity = match d.u8()? {
        0 => None,
        1 => Some(
            parse_identity(&text(d.bytes16()?))
                .ok_or_else(|| crate::repo::codec::DecodeError("bad data identity".into()))?,
        ),
        _ => return bad("bad data identity flag"),
    };
    let meta_identity = parse_identity(&text(d.bytes16()?))
        .ok_or_else(|| crate::repo::codec::DecodeError("bad metadata identity".into()))?;
    d.finish()?;
    if let Some(id) = &data_identity {
        if id.to_public() != data_recipient {
            return bad("data identity does not match its recipient");
        }
    }
    if !chunker.is_valid() {
        return bad("chunker sizes are out of range");
    }
    let meta_recipient = meta_identity.to_public();
    Ok(Keyring::from_parts(KeyringParts {
        repo_id,
        chunker,
        id_key,
        chunker_seed,
        data_identity,
        data_recipient,
        meta_identity,
        meta_recipient,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keyring_round_trip_full_and_write_only() {
        let k = Keyring::generate([3; 16], ChunkerParams::DEFAULT);
        let b = encode_keyring(&k);
        let k2 = decode_keyring(&b).unwrap();
        assert_eq!(k2.repo_id, k.repo_id);
        assert_eq!(k2.chunker, k.chunker);
        assert!(k2.can_read_data());
        assert_eq!(
            k2.blob_id(crate::crypto::BlobKind::Data, b"x"),
            k.blob_id(crate::crypto::BlobKind::Data, b"x")
        );
        let w = decode_keyring(&encode_keyring(&k.write_only())).unwrap();
        assert!(!w.can_read_data());
        assert_eq!(w.chunker_seed(), k.chunker_seed());
    }

    #[test]
    fn key_object_test_vector() {
        let o = KeyObject {
            kind: KeyKind::Recovery,
            created: 1,
            write_only: false,
            sealed: vec![0xaa, 0xbb],
        };
        assert_eq!(
            hex::encode(o.encode()),
            concat!(
                "5345435241544b",
                "01",
                "02",
                "00",
                "0100000000000000",
                "aabb"
            )
        );
        assert_eq!(KeyObject::decode(&o.encode()).unwrap(), o);
    }

    proptest! {
        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = KeyObject::decode(&b);
            let _ = decode_keyring(&b);
        }
    }
}

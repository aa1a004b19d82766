//! The envelope of every metadata object (index deltas, snapshots, locks):
//! a 7-byte magic, a version byte, then an age ciphertext to the repository's
//! metadata recipient. age authenticates the payload; the object's name (a
//! hash of these bytes) is checked by the caller where the name is an id.

use zeroize::Zeroizing;

use crate::crypto::{age_decrypt, age_encrypt, AgeError, Keyring};
use crate::repo::codec::{bad, Dec, DecodeResult};

pub fn seal(keys: &Keyring, magic: &[u8; 7], version: u8, plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    out.extend_from_slice(magic);
    out.push(version);
    out.extend_from_slice(&age_encrypt(keys.meta_recipient(), plaintext));
    out
}

pub fn open(
    keys: &Keyring,
    magic: &[u8; 7],
    version: u8,
    bytes: &[u8],
) -> DecodeResult<Zeroizing<Vec<u8>>> {
    open_any(keys, magic, &[version], bytes)
}

/// `open`, for a kind with several versions whose payloads one decoder
/// reads.
pub fn open_any(
    keys: &Keyring,
    magic: &[u8; 7],
    versions: &[u8],
    bytes: &[u8],
) -> DecodeResult<Zeroizing<Vec<u8>>> {
    let mut d = Dec::new(bytes);
    let v = d.magic(magic)?;
    if !versions.contains(&v) {
        let known: Vec<String> = versions.iter().map(u8::to_string).collect();
        return bad(format!(
            "version {v} is not supported (this secrate reads {})",
            known.join(" and ")
        ));
    }
    match age_decrypt(keys.meta_identity(), d.raw(d.remaining())?) {
        Ok(p) => Ok(p),
        Err(AgeError::NoMatchingKey) => bad("does not decrypt with this repository's metadata key"),
        Err(AgeError::Damaged(why)) => bad(format!("damaged ({why})")),
    }
}

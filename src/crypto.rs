//! Keys and the primitives that use them: keyed blob ids, blob sealing, and
//! age wrapping.
//!
//! A `Keyring` holds every secret of a repository. Blob ids are keyed BLAKE3
//! hashes, so the store cannot test whether we hold a known file. Blobs are
//! sealed with XChaCha20-Poly1305 under a random per-pack key; pack keys and
//! metadata objects are wrapped with age to X25519 recipients, so a writer
//! that holds only the data *recipient* can add data it cannot read back.
//! This module never encodes anything for the store (that is `repo`'s job)
//! and never logs or prints key material; secrets are zeroized on drop.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use age::x25519;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

pub const ID_LEN: usize = 32;
pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed blob adds to its plaintext: nonce and tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// A keyed hash naming a blob (or, unkeyed, naming a stored object).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; ID_LEN]);

impl Id {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Id> {
        let mut a = [0u8; ID_LEN];
        hex::decode_to_slice(s, &mut a).ok()?;
        Some(Id(a))
    }

    /// The first 8 hex digits, as shown to users.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// The all-zero id. In a file's chunk list it marks a range whose chunk
    /// was lost for good and recorded by `secrate repair` (a keyed BLAKE3
    /// output is all zeros with probability 2^-256): readers give an error
    /// for that range, never bytes. See docs/FORMAT.md, "Damage records".
    pub const LOST: Id = Id([0; ID_LEN]);

    pub fn is_lost(&self) -> bool {
        *self == Id::LOST
    }

    /// Plain BLAKE3 of stored bytes: the name of a pack, index or snapshot.
    pub fn of_object(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

/// Data blobs hold file contents; tree blobs hold directories. They live in
/// separate packs and separate id spaces.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum BlobKind {
    Data = 0,
    Tree = 1,
}

impl BlobKind {
    pub fn from_u8(v: u8) -> Option<BlobKind> {
        match v {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BlobKind::Data => "data",
            BlobKind::Tree => "tree",
        }
    }
}

/// Content-defined chunking parameters, fixed per repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl ChunkerParams {
    /// Near restic's sizes: few objects per GB, yet small edits stay small.
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        min: 512 * 1024,
        avg: 1024 * 1024,
        max: 8 * 1024 * 1024,
    };

    /// What fastcdc v2020 accepts: even sizes, 64 B ≤ min ≤ 1 MiB,
    /// 256 B ≤ avg ≤ 4 MiB, 1 KiB ≤ max ≤ 16 MiB, and min ≤ avg ≤ max.
    pub fn is_valid(&self) -> bool {
        let (min, avg, max) = (self.min, self.avg, self.max);
        (64..=1 << 20).contains(&min)
            && (256..=4 << 20).contains(&avg)
            && (1024..=16 << 20).contains(&max)
            && min <= avg
            && avg <= max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0
    }
}

/// Every secret of one repository.
///
/// A full keyring can read and write everything. A write-only keyring lacks
/// `data_identity`: it can chunk, id, seal and store new data (to the public
/// data recipient) and read metadata, but it cannot unwrap a data pack key.
pub struct Keyring {
    pub repo_id: [u8; 16],
    pub chunker: ChunkerParams,
    pub(crate) id_key: Zeroizing<[u8; KEY_LEN]>,
    pub(crate) chunker_seed: u64,
    pub(crate) data_identity: Option<x25519::Identity>,
    pub(crate) data_recipient: x25519::Recipient,
    pub(crate) meta_identity: x25519::Identity,
    pub(crate) meta_recipient: x25519::Recipient,
    data_id_key: Zeroizing<[u8; KEY_LEN]>,
    tree_id_key: Zeroizing<[u8; KEY_LEN]>,
}

impl Drop for Keyring {
    fn drop(&mut self) {
        self.chunker_seed.zeroize();
    }
}

impl Keyring {
    /// A fresh keyring for a new repository.
    pub fn generate(repo_id: [u8; 16], chunker: ChunkerParams) -> Keyring {
        let mut id_key = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(id_key.as_mut());
        let mut seed = 0u64;
        while seed == 0 {
            // fastcdc treats seed 0 as "unseeded"; never use it.
            seed = rand::rngs::OsRng.next_u64();
        }
        let data = x25519::Identity::generate();
        let meta = x25519::Identity::generate();
        Keyring::from_parts(KeyringParts {
            repo_id,
            chunker,
            id_key,
            chunker_seed: seed,
            data_recipient: data.to_public(),
            data_identity: Some(data),
            meta_recipient: meta.to_public(),
            meta_identity: meta,
        })
    }

    pub fn from_parts(p: KeyringParts) -> Keyring {
        let data_id_key = Zeroizing::new(blake3::derive_key("secrate v1 data blob id", &*p.id_key));
        let tree_id_key = Zeroizing::new(blake3::derive_key("secrate v1 tree blob id", &*p.id_key));
        Keyring {
            repo_id: p.repo_id,
            chunker: p.chunker,
            id_key: p.id_key,
            chunker_seed: p.chunker_seed,
            data_identity: p.data_identity,
            data_recipient: p.data_recipient,
            meta_identity: p.meta_identity,
            meta_recipient: p.meta_recipient,
            data_id_key,
            tree_id_key,
        }
    }

    /// A copy of this keyring without the data identity.
    pub fn write_only(&self) -> Keyring {
        Keyring::from_parts(KeyringParts {
            repo_id: self.repo_id,
            chunker: self.chunker,
            id_key: self.id_key.clone(),
            chunker_seed: self.chunker_seed,
            data_identity: None,
            data_recipient: self.data_recipient.clone(),
            meta_identity: clone_identity(&self.meta_identity),
            meta_recipient: self.meta_recipient.clone(),
        })
    }

    pub fn try_clone(&self) -> Keyring {
        Keyring::from_parts(KeyringParts {
            repo_id: self.repo_id,
            chunker: self.chunker,
            id_key: self.id_key.clone(),
            chunker_seed: self.chunker_seed,
            data_identity: self.data_identity.as_ref().map(clone_identity),
            data_recipient: self.data_recipient.clone(),
            meta_identity: clone_identity(&self.meta_identity),
            meta_recipient: self.meta_recipient.clone(),
        })
    }

    pub fn can_read_data(&self) -> bool {
        self.data_identity.is_some()
    }

    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// The tag of a key removal record (`keys-removed/<id>`): keyed BLAKE3
    /// under a key derived from the id key, so only a holder of this
    /// repository's keyring can make one that unlocking honours.
    pub fn removal_tag(&self, body: &[u8]) -> [u8; 32] {
        let key = Zeroizing::new(blake3::derive_key("secrate v1 key removal", &*self.id_key));
        *blake3::keyed_hash(&key, body).as_bytes()
    }

    /// The id of a blob: keyed BLAKE3 of its plaintext, per kind.
    pub fn blob_id(&self, kind: BlobKind, plaintext: &[u8]) -> Id {
        let key = match kind {
            BlobKind::Data => &self.data_id_key,
            BlobKind::Tree => &self.tree_id_key,
        };
        Id(*blake3::keyed_hash(key, plaintext).as_bytes())
    }

    /// The recipient a pack key of this kind is wrapped to.
    pub fn pack_key_recipient(&self, kind: BlobKind) -> &x25519::Recipient {
        match kind {
            BlobKind::Data => &self.data_recipient,
            BlobKind::Tree => &self.meta_recipient,
        }
    }

    /// The identity that unwraps a pack key of this kind, if this keyring has it.
    pub fn pack_key_identity(&self, kind: BlobKind) -> Option<&x25519::Identity> {
        match kind {
            BlobKind::Data => self.data_identity.as_ref(),
            BlobKind::Tree => Some(&self.meta_identity),
        }
    }

    pub fn meta_recipient(&self) -> &x25519::Recipient {
        &self.meta_recipient
    }

    pub fn meta_identity(&self) -> &x25519::Identity {
        &self.meta_identity
    }
}

/// The raw material of a keyring, as decoded from a key object.
pub struct KeyringParts {
    pub repo_id: [u8; 16],
    pub chunker: ChunkerParams,
    pub id_key: Zeroizing<[u8; KEY_LEN]>,
    pub chunker_seed: u64,
    pub data_identity: Option<x25519::Identity>,
    pub data_recipient: x25519::Recipient,
    pub meta_identity: x25519::Identity,
    pub meta_recipient: x25519::Recipient,
}

pub fn clone_identity(id: &x25519::Identity) -> x25519::Identity {
    // The identity type has no Clone; its string form round-trips exactly.
    x25519::Identity::from_str(id.to_string().expose_secret()).expect("own encoding parses")
}

pub fn identity_to_string(id: &x25519::Identity) -> Zeroizing<String> {
    Zeroizing::new(id.to_string().expose_secret().to_string())
}

pub fn parse_identity(s: &str) -> Option<x25519::Identity> {
    x25519::Identity::from_str(s.trim()).ok()
}

pub fn parse_recipient(s: &str) -> Option<x25519::Recipient> {
    x25519::Recipient::from_str(s.trim()).ok()
}

/// A symmetric key sealing every blob of one pack.
#[derive(Clone)]
pub struct PackKey(pub Zeroizing<[u8; KEY_LEN]>);

impl PackKey {
    pub fn random() -> PackKey {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(k.as_mut());
        PackKey(k)
    }

    pub fn from_bytes(b: &[u8]) -> Option<PackKey> {
        let a: [u8; KEY_LEN] = b.try_into().ok()?;
        Some(PackKey(Zeroizing::new(a)))
    }

    /// XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha) is ChaCha20-Poly1305
    /// (RFC 8439) under the HChaCha20 subkey of the key and the nonce's first
    /// 16 bytes, with the nonce's last 8 bytes behind four zero bytes as its
    /// nonce. HChaCha20 comes from RustCrypto's `chacha20`; the AEAD from
    /// aws-lc (already linked for TLS), whose x86-64 code encrypts and
    /// authenticates in one AVX2 pass instead of RustCrypto's two: user CPU
    /// of a 2 GiB backup 3.8 s -> 2.6 s (docs/benchmarks.md). Same bytes as
    /// before: tested against RustCrypto, and the pack test vector was
    /// cross-checked with libsodium.
    fn cipher(&self, nonce: &[u8; NONCE_LEN]) -> (LessSafeKey, Nonce) {
        use chacha20::cipher::consts::U10;
        let mut subkey = chacha20::hchacha::<U10>((&*self.0).into(), nonce[..16].into());
        let key = UnboundKey::new(&CHACHA20_POLY1305, &subkey)
            .expect("ChaCha20-Poly1305 takes 32-byte keys");
        subkey.as_mut_slice().zeroize();
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&nonce[16..]);
        (LessSafeKey::new(key), Nonce::assume_unique_for_key(n))
    }

    /// Seal `plaintext` into `out` as nonce ‖ ciphertext ‖ tag, binding `ad`.
    pub fn seal_into(&self, ad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        self.seal_with(ad, out, |o| o.extend_from_slice(plaintext))
    }

    /// Append a random nonce to `out`, let `write` append the plaintext,
    /// encrypt it in place and append the tag: no extra copy of the body.
    pub fn seal_with(&self, ad: &[u8], out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        self.seal_with_nonce(&nonce, ad, out, write)
    }

    /// As `seal_with` with a given nonce; for test vectors only.
    pub fn seal_with_nonce(
        &self,
        nonce: &[u8; NONCE_LEN],
        ad: &[u8],
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        out.extend_from_slice(nonce);
        let body = out.len();
        write(out);
        let (key, n) = self.cipher(nonce);
        let tag = key
            .seal_in_place_separate_tag(n, Aad::from(ad), &mut out[body..])
            .expect("ChaCha20-Poly1305 takes any length below 256 GiB");
        out.extend_from_slice(tag.as_ref());
    }

    /// Open what `seal_into` made. `None` means forged, damaged or misplaced.
    pub fn open(&self, ad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce: &[u8; NONCE_LEN] = nonce.try_into().ok()?;
        // Ciphertext and tag, opened in place; the tag is cut off after.
        let mut buf = rest.to_vec();
        let (key, n) = self.cipher(nonce);
        let len = key.open_in_place(n, Aad::from(ad), &mut buf).ok()?.len();
        buf.truncate(len);
        Some(buf)
    }
}

/// Encrypt to one age recipient (binary age format).
pub fn age_encrypt(recipient: &dyn age::Recipient, plaintext: &[u8]) -> Vec<u8> {
    let enc = age::Encryptor::with_recipients(std::iter::once(recipient))
        .expect("one native recipient is always valid");
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    let mut w = enc
        .wrap_output(&mut out)
        .expect("writing to a Vec cannot fail");
    w.write_all(plaintext)
        .expect("writing to a Vec cannot fail");
    w.finish().expect("writing to a Vec cannot fail");
    out
}

/// Why an age ciphertext did not open.
#[derive(Debug)]
pub enum AgeError {
    /// The identity does not match (wrong key or passphrase).
    NoMatchingKey,
    /// The ciphertext is not valid age or fails authentication.
    Damaged(String),
}

/// Decrypt with one age identity. Never panics on arbitrary bytes.
pub fn age_decrypt(
    identity: &dyn age::Identity,
    ct: &[u8],
) -> Result<Zeroizing<Vec<u8>>, AgeError> {
    let dec = age::Decryptor::new_buffered(ct).map_err(|e| AgeError::Damaged(e.to_string()))?;
    let mut r = dec
        .decrypt(std::iter::once(identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys | age::DecryptError::DecryptionFailed => {
                AgeError::NoMatchingKey
            }
            e => AgeError::Damaged(e.to_string()),
        })?;
    let mut out = Zeroizing::new(Vec::with_capacity(ct.len()));
    r.read_to_end(&mut out)
        .map_err(|e| AgeError::Damaged(e.to_string()))?;
    Ok(out)
}

/// Whether an age ciphertext is sealed to a passphrase (its one stanza is
/// scrypt), from its header alone, without decrypting anything; `None` if
/// it is not an age file. The header is authenticated only once the file
/// key is known: this tells what the file claims, for error messages.
pub fn age_is_passphrase(ct: &[u8]) -> Option<bool> {
    age::Decryptor::new_buffered(ct).ok().map(|d| d.is_scrypt())
}

/// A passphrase recipient with an explicit scrypt work factor (`N = 2^log_n`).
pub fn passphrase_recipient(passphrase: &str, log_n: u8) -> age::scrypt::Recipient {
    let mut r = age::scrypt::Recipient::new(passphrase.to_string().into());
    r.set_work_factor(log_n.clamp(1, MAX_SCRYPT_LOG_N));
    r
}

/// The most scrypt work a key object may demand: 2^20 takes 1 GiB and a few
/// seconds here. Bounds what a hostile store can make us spend.
pub const MAX_SCRYPT_LOG_N: u8 = 20;

pub fn passphrase_identity(passphrase: &str) -> age::scrypt::Identity {
    let mut i = age::scrypt::Identity::new(passphrase.to_string().into());
    i.set_max_work_factor(MAX_SCRYPT_LOG_N);
    i
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut a = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut a);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The aws-lc construction must give RustCrypto's XChaCha20-Poly1305
    /// bytes exactly, and each must open the other's.
    #[test]
    fn seal_matches_rustcrypto_xchacha20poly1305() {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        use chacha20poly1305::{XChaCha20Poly1305, XNonce};
        let mut rng = rand::rngs::OsRng;
        for len in [
            0usize,
            1,
            15,
            16,
            17,
            63,
            64,
            65,
            255,
            256,
            1000,
            4096,
            65_537,
            1 << 20,
        ] {
            let key = PackKey::random();
            let mut nonce = [0u8; NONCE_LEN];
            rng.fill_bytes(&mut nonce);
            let mut ad = vec![0u8; len % 40];
            rng.fill_bytes(&mut ad);
            let mut plain = vec![0u8; len];
            rng.fill_bytes(&mut plain);
            let mut ours = Vec::new();
            key.seal_with_nonce(&nonce, &ad, &mut ours, |o| o.extend_from_slice(&plain));
            let reference = XChaCha20Poly1305::new((&*key.0).into());
            let mut theirs = plain.clone();
            let tag = reference
                .encrypt_in_place_detached(XNonce::from_slice(&nonce), &ad, &mut theirs)
                .unwrap();
            let expected = [&nonce[..], &theirs, &tag].concat();
            assert_eq!(ours, expected, "length {len}");
            assert_eq!(key.open(&ad, &expected).as_deref(), Some(&plain[..]));
            let mut bad = ours.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert!(key.open(&ad, &bad).is_none());
            let mut other_ad = ad.clone();
            other_ad.push(0);
            assert!(key.open(&other_ad, &ours).is_none());
        }
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let k = PackKey::random();
        let mut out = Vec::new();
        k.seal_into(b"ad", b"hello", &mut out);
        assert_eq!(out.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(k.open(b"ad", &out).unwrap(), b"hello");
        assert!(k.open(b"other", &out).is_none());
        let mut bad = out.clone();
        bad[30] ^= 1;
        assert!(k.open(b"ad", &bad).is_none());
        assert!(k.open(b"ad", &out[..10]).is_none());
    }

    #[test]
    fn blob_ids_are_keyed_and_per_kind() {
        let a = Keyring::generate([1; 16], ChunkerParams::DEFAULT);
        let b = Keyring::generate([1; 16], ChunkerParams::DEFAULT);
        assert_ne!(
            a.blob_id(BlobKind::Data, b"x"),
            b.blob_id(BlobKind::Data, b"x")
        );
        assert_ne!(
            a.blob_id(BlobKind::Data, b"x"),
            a.blob_id(BlobKind::Tree, b"x")
        );
        assert_eq!(
            a.blob_id(BlobKind::Data, b"x"),
            a.blob_id(BlobKind::Data, b"x")
        );
    }

    #[test]
    fn age_round_trip_and_wrong_key() {
        let a = x25519::Identity::generate();
        let b = x25519::Identity::generate();
        let ct = age_encrypt(&a.to_public(), b"secret");
        assert_eq!(&*age_decrypt(&a, &ct).unwrap(), b"secret");
        assert!(matches!(age_decrypt(&b, &ct), Err(AgeError::NoMatchingKey)));
        assert!(matches!(
            age_decrypt(&a, b"junk"),
            Err(AgeError::Damaged(_))
        ));
    }
}

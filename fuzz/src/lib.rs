//! Fixtures shared by the fuzz targets and the seed generator
//! (`examples/make_seeds.rs`).
//!
//! The keys are fixed, not drawn at random, so that the committed seeds
//! (encrypted to these keys) decrypt in every run and a crash found once
//! reproduces from its artifact alone. They guard nothing: test keys only.

use std::sync::OnceLock;

use secrate::crypto::{parse_identity, ChunkerParams, Keyring, KeyringParts, PackKey};
use zeroize::Zeroizing;

/// The age identity of the fixed keyring (data and metadata alike).
pub const IDENTITY: &str =
    "AGE-SECRET-KEY-166WEDJC05VLWYAZFC9NXDDJ9GSA6T2RPR9MDV5XCPRD6Z53AMUNQCEVWQH";

/// The repository id of the fixed keyring.
pub const REPO_ID: [u8; 16] = [0; 16];

/// The one keyring every target uses, built once per process.
pub fn keys() -> &'static Keyring {
    static KEYS: OnceLock<Keyring> = OnceLock::new();
    KEYS.get_or_init(|| {
        let id = || parse_identity(IDENTITY).expect("fixed identity parses");
        Keyring::from_parts(KeyringParts {
            repo_id: REPO_ID,
            chunker: ChunkerParams::DEFAULT,
            id_key: Zeroizing::new([5; 32]),
            chunker_seed: 0x5ec7a7e,
            data_identity: Some(id()),
            data_recipient: id().to_public(),
            meta_identity: id(),
            meta_recipient: id().to_public(),
        })
    })
}

/// The fixed pack key of the `open_blob` target.
pub fn pack_key() -> &'static PackKey {
    static KEY: OnceLock<PackKey> = OnceLock::new();
    KEY.get_or_init(|| PackKey::from_bytes(&[7; 32]).expect("32 bytes"))
}

/// Splits fuzz input into fixed-width little-endian fields and a rest.
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    pub fn u8(&mut self) -> u8 {
        let (v, rest) = self.0.split_first().map_or((0, &[][..]), |(v, r)| (*v, r));
        self.0 = rest;
        v
    }

    pub fn u64(&mut self) -> u64 {
        let mut a = [0u8; 8];
        let n = self.0.len().min(8);
        a[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        u64::from_le_bytes(a)
    }

    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let n = self.0.len().min(N);
        a[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        a
    }

    pub fn rest(self) -> &'a [u8] {
        self.0
    }
}

//! The `config` object: the one plaintext object of a repository.
//!
//! It holds only what is needed before a key is unlocked (format version,
//! repository id, chunker and pack sizes) and a BLAKE3 checksum of itself, so
//! a flipped byte is caught before anything trusts it. The keyring carries
//! the repository id and chunker sizes too; `Repository::open` compares the
//! two, so a config forged to change chunking is refused.

use crate::crypto::ChunkerParams;
use crate::repo::codec::{bad, Dec, DecodeResult, Enc};

pub const MAGIC: &[u8; 7] = b"SECRATC";
pub const VERSION: u8 = 1;
pub const NAME: &str = "config";

/// Packs close once they reach this size (a blob may push one past it).
/// Object stores charge per request; 16 MiB keeps request counts low while a
/// pack still fits comfortably in memory during sealing and upload.
pub const DEFAULT_PACK_TARGET: u32 = 16 << 20;
pub const MAX_PACK_TARGET: u32 = 128 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub repo_id: [u8; 16],
    pub created: i64,
    pub chunker: ChunkerParams,
    pub pack_target: u32,
}

impl Config {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::with_capacity(80);
        e.raw(MAGIC)
            .u8(VERSION)
            .raw(&self.repo_id)
            .i64(self.created)
            .u32(self.chunker.min)
            .u32(self.chunker.avg)
            .u32(self.chunker.max)
            .u32(self.pack_target);
        let sum = blake3::hash(&e.buf);
        e.raw(sum.as_bytes());
        e.finish()
    }

    pub fn decode(b: &[u8]) -> DecodeResult<Config> {
        let mut d = Dec::new(b);
        let v = d.magic(MAGIC)?;
        if v != VERSION {
            return bad(format!(
                "format version {v} is not supported (this secrate reads {VERSION})"
            ));
        }
        let repo_id = d.array()?;
        let created = d.i64()?;
        let chunker = ChunkerParams {
            min: d.u32()?,
            avg: d.u32()?,
            max: d.u32()?,
        };
        let pack_target = d.u32()?;
        let body_len = d.position();
        let sum: [u8; 32] = d.array()?;
        d.finish()?;
        if blake3::hash(&b[..body_len]).as_bytes() != &sum {
            return bad("checksum mismatch");
        }
        if !chunker.is_valid() {
            return bad("chunker sizes are out of range");
        }
        // Packs are built in memory: a forged target must not make us
        // allocate gigabytes.
        if !(1 << 20..=MAX_PACK_TARGET).contains(&pack_target) {
            return bad("pack target size is out of range");
        }
        Ok(Config {
            repo_id,
            created,
            chunker,
            pack_target,
        })
    }

    pub fn repo_id_hex(&self) -> String {
        hex::encode(self.repo_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Config {
        Config {
            repo_id: [7; 16],
            created: 1_700_000_000,
            chunker: ChunkerParams::DEFAULT,
            pack_target: DEFAULT_PACK_TARGET,
        }
    }

    #[test]
    fn test_vector() {
        let b = sample().encode();
        let expect = concat!(
            "53454352415443",
            "01",                               // magic, version
            "07070707070707070707070707070707", // repository id
            "00f1536500000000",                 // created
            "00000800",
            "00001000",
            "00008000", // chunker min, avg, max
            "00000001", // pack target
        );
        assert_eq!(hex::encode(&b[..b.len() - 32]), expect);
        assert_eq!(Config::decode(&b).unwrap(), sample());
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        let b = sample().encode();
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(Config::decode(&c).is_err(), "flip at {i} not detected");
        }
        assert!(Config::decode(&b[..b.len() - 1]).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = Config::decode(&b);
        }
    }
}

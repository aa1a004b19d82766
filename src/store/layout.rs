//! The `stores` object: which stores a repository lives on, and how.
//!
//! Written whole (never sharded) to every store of a multi-store repository,
//! so that any one of them tells a later run the full list. A repository on
//! one store has no `stores` object (the format of single-store repositories
//! is unchanged).
//!
//! | Offset | Size | Field |
//! |---|---|---|
//! | 0 | 7 | magic `SECRATD` |
//! | 7 | 1 | version `u8` = 1 |
//! | 8 | 1 | mode `u8`: 1 = replicas, 2 = erasure coding |
//! | 9 | 1 | K (0 for replicas) |
//! | 10 | 1 | M (0 for replicas) |
//! | 11 | 1 | number of stores N (≥ 2) |
//! | 12 | … | N × store URL, `string16` (as displayed: no credentials) |
//! | end−32 | 32 | BLAKE3 of everything before it |

use super::ec::EcParams;
use crate::error::{Error, Result};

pub const NAME: &str = "stores";
/// The object as errors name it.
pub const DESCRIBED: &str = "`stores` (the list of the repository's stores)";
const MAGIC: &[u8; 7] = b"SECRATD";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One store, no `stores` object.
    Single,
    /// Every object whole on every store.
    Replicas,
    /// Every object as K+M shards, shard i on store i.
    Ec(EcParams),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub mode: Mode,
    pub urls: Vec<String>,
}

impl Layout {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.push(1);
        match self.mode {
            Mode::Ec(p) => b.extend_from_slice(&[2, p.k, p.m]),
            _ => b.extend_from_slice(&[1, 0, 0]),
        }
        b.push(self.urls.len() as u8);
        for u in &self.urls {
            b.extend_from_slice(&(u.len() as u16).to_le_bytes());
            b.extend_from_slice(u.as_bytes());
        }
        let sum = blake3::hash(&b);
        b.extend_from_slice(sum.as_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Layout> {
        let bad = |why: &str| Error::corrupt(NAME, why.to_string());
        if b.len() < 12 + 32 {
            return Err(bad("too short"));
        }
        let (body, sum) = b.split_at(b.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(bad("checksum does not match"));
        }
        if &body[..7] != MAGIC || body[7] != 1 {
            return Err(bad("unknown magic or version"));
        }
        let mode = match body[8] {
            1 => Mode::Replicas,
            2 => {
                let p = EcParams {
                    k: body[9],
                    m: body[10],
                };
                p.validate().map_err(|_| bad("bad K+M"))?;
                Mode::Ec(p)
            }
            _ => return Err(bad("unknown mode")),
        };
        let n = body[11] as usize;
        let mut rest = &body[12..];
        let mut urls = Vec::with_capacity(n);
        for _ in 0..n {
            if rest.len() < 2 {
                return Err(bad("truncated"));
            }
            let l = u16::from_le_bytes([rest[0], rest[1]]) as usize;
            rest = &rest[2..];
            if rest.len() < l {
                return Err(bad("truncated"));
            }
            let u = std::str::from_utf8(&rest[..l]).map_err(|_| bad("URL is not UTF-8"))?;
            urls.push(u.to_string());
            rest = &rest[l..];
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        if n < 2 {
            return Err(bad("fewer than two stores"));
        }
        if let Mode::Ec(p) = mode {
            if p.total() != n {
                return Err(bad("K+M differs from the number of stores"));
            }
        }
        Ok(Layout { mode, urls })
    }

    pub fn describe(&self) -> String {
        match self.mode {
            Mode::Single => self.urls.join(", "),
            Mode::Replicas => format!("{} replicas: {}", self.urls.len(), self.urls.join(", ")),
            Mode::Ec(p) => format!("erasure-coded {p}: {}", self.urls.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_damage() {
        let l = Layout {
            mode: Mode::Ec(EcParams { k: 2, m: 1 }),
            urls: vec!["file:///a".into(), "s3://b/p".into(), "file:///c".into()],
        };
        let b = l.encode();
        assert_eq!(Layout::decode(&b).unwrap(), l);
        let mut d = b.clone();
        d[13] ^= 1;
        assert!(Layout::decode(&d).is_err());
        let r = Layout {
            mode: Mode::Replicas,
            urls: vec!["file:///a".into(), "file:///b".into()],
        };
        assert_eq!(Layout::decode(&r.encode()).unwrap(), r);
    }
}

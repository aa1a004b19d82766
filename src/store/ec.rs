//! Erasure-coded shards: one object as K data shards and M parity shards
//! (Reed-Solomon, crate `reed-solomon-simd`), one shard per store.
//!
//! A shard is a 51-byte header followed by the shard payload:
//!
//! | Offset | Size | Field |
//! |---|---|---|
//! | 0 | 7 | magic `SECRATE` |
//! | 7 | 1 | version `u8` = 1 |
//! | 8 | 1 | K (data shards) |
//! | 9 | 1 | M (parity shards) |
//! | 10 | 1 | shard index (0..K data, K..K+M parity) |
//! | 11 | 8 | object length `u64` |
//! | 19 | 32 | BLAKE3 of bytes 0..19 followed by the payload |
//!
//! The payload length is `shard_len(object length, K)`: `ceil(len / K)`
//! rounded up to an even number, at least 2. Data shard `i` holds object
//! bytes `i·S .. (i+1)·S`, zero-padded past the end of the object.
//! Encoding is deterministic: the same object always gives the same shards.

use crate::error::{Error, Result};

pub const MAGIC: &[u8; 7] = b"SECRATE";
pub const VERSION: u8 = 1;
pub const HEADER: usize = 51;

/// K data shards + M parity shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcParams {
    pub k: u8,
    pub m: u8,
}

impl EcParams {
    /// `K+M`, e.g. `2+1`.
    pub fn parse(s: &str) -> Result<EcParams> {
        let bad = || {
            Error::Invalid(format!(
                "--ec wants K+M (data and parity shards, e.g. 2+1), not {s:?}"
            ))
        };
        let (k, m) = s.trim().split_once('+').ok_or_else(bad)?;
        let k: u8 = k.trim().parse().map_err(|_| bad())?;
        let m: u8 = m.trim().parse().map_err(|_| bad())?;
        let p = EcParams { k, m };
        p.validate()?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<()> {
        if self.k == 0 || self.m == 0 || self.k as usize + self.m as usize > 255 {
            return Err(Error::Invalid(format!(
                "erasure coding needs K ≥ 1 data and M ≥ 1 parity shards, K+M ≤ 255 (got {self})"
            )));
        }
        Ok(())
    }

    pub fn total(&self) -> usize {
        self.k as usize + self.m as usize
    }
}

impl std::fmt::Display for EcParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{}", self.k, self.m)
    }
}

/// Payload bytes of each shard of an object of `len` bytes.
/// Saturates for lengths no shard can have (a forged header's): the
/// caller's comparison with the bytes at hand rejects those.
pub fn shard_len(len: u64, k: u8) -> usize {
    let s = usize::try_from(len.div_ceil(k.max(1) as u64)).unwrap_or(usize::MAX);
    s.saturating_add(s & 1).max(2)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardHeader {
    pub params: EcParams,
    pub index: u8,
    pub len: u64,
}

fn header_bytes(h: &ShardHeader) -> [u8; 19] {
    let mut b = [0u8; 19];
    b[..7].copy_from_slice(MAGIC);
    b[7] = VERSION;
    b[8] = h.params.k;
    b[9] = h.params.m;
    b[10] = h.index;
    b[11..19].copy_from_slice(&h.len.to_le_bytes());
    b
}

fn seal(h: &ShardHeader, payload: &[u8]) -> Vec<u8> {
    let head = header_bytes(h);
    let mut hasher = blake3::Hasher::new();
    hasher.update(&head);
    hasher.update(payload);
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(hasher.finalize().as_bytes());
    out.extend_from_slice(payload);
    out
}

/// All K+M shards of `data`, header included, in shard order.
pub fn encode(p: EcParams, data: &[u8]) -> Result<Vec<Vec<u8>>> {
    let s = shard_len(data.len() as u64, p.k);
    let mut padded = data.to_vec();
    padded.resize(s * p.k as usize, 0);
    let originals: Vec<&[u8]> = padded.chunks(s).collect();
    let parity = reed_solomon_simd::encode(p.k as usize, p.m as usize, &originals)
        .map_err(|e| Error::Invalid(format!("erasure coding {p}: {e}")))?;
    let len = data.len() as u64;
    let mut out = Vec::with_capacity(p.total());
    for (i, payload) in originals
        .iter()
        .copied()
        .chain(parity.iter().map(|v| &v[..]))
        .enumerate()
    {
        let h = ShardHeader {
            params: p,
            index: i as u8,
            len,
        };
        out.push(seal(&h, payload));
    }
    Ok(out)
}

/// The header of a shard, from at least its first `HEADER` bytes; checks
/// magic, version and parameters (not the checksum).
pub fn parse_header(b: &[u8]) -> std::result::Result<ShardHeader, String> {
    if b.len() < HEADER {
        return Err(format!(
            "shard of {} bytes is shorter than its header",
            b.len()
        ));
    }
    if &b[..7] != MAGIC {
        return Err("not an erasure-coded shard (bad magic)".into());
    }
    if b[7] != VERSION {
        return Err(format!("unknown shard version {}", b[7]));
    }
    let params = EcParams { k: b[8], m: b[9] };
    params.validate().map_err(|e| e.to_string())?;
    let index = b[10];
    if index as usize >= params.total() {
        return Err(format!("shard index {index} out of range for {params}"));
    }
    let len = u64::from_le_bytes(b[11..19].try_into().expect("8 bytes"));
    Ok(ShardHeader { params, index, len })
}

/// Check a whole shard: header, payload length and checksum. Returns the
/// header and the payload.
pub fn verify(b: &[u8]) -> std::result::Result<(ShardHeader, &[u8]), String> {
    let h = parse_header(b)?;
    let payload = &b[HEADER..];
    let want = shard_len(h.len, h.params.k);
    if payload.len() != want {
        return Err(format!(
            "shard payload is {} bytes, its header says {want}",
            payload.len()
        ));
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(&b[..19]);
    hasher.update(payload);
    if hasher.finalize().as_bytes() != &b[19..51] {
        return Err("shard checksum does not match (corrupt shard)".into());
    }
    Ok((h, payload))
}

/// The object from at least K verified shards `(index, payload)` of the same
/// object (same parameters and length).
pub fn decode(p: EcParams, len: u64, shards: &[(usize, &[u8])]) -> Result<Vec<u8>> {
    let k = p.k as usize;
    let s = shard_len(len, p.k);
    let mut data: Vec<Option<&[u8]>> = vec![None; k];
    for &(i, b) in shards {
        if i < k {
            data[i] = Some(b);
        }
    }
    let mut restored = std::collections::BTreeMap::new();
    if data.iter().any(Option::is_none) {
        let originals = shards.iter().filter(|(i, _)| *i < k).map(|&(i, b)| (i, b));
        let recovery = shards
            .iter()
            .filter(|(i, _)| *i >= k)
            .map(|&(i, b)| (i - k, b));
        restored = reed_solomon_simd::decode(k, p.m as usize, originals, recovery)
            .map_err(|e| Error::corrupt("(erasure-coded object)", format!("cannot decode: {e}")))?;
    }
    let mut out = Vec::with_capacity(s * k);
    for (i, d) in data.iter().enumerate() {
        match d {
            Some(b) => out.extend_from_slice(b),
            None => out.extend_from_slice(restored.get(&i).ok_or_else(|| {
                Error::corrupt(
                    "(erasure-coded object)",
                    format!("data shard {i} not restored"),
                )
            })?),
        }
    }
    out.truncate(len as usize);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forged headers (K of 1 or 0, a length of 2^64 - 1) are rejected
    /// before anything is sized by them.
    #[test]
    fn absurd_shard_headers_are_rejected() {
        for k in [0u8, 1] {
            let mut b = vec![0u8; HEADER + 2];
            b[..7].copy_from_slice(MAGIC);
            b[7] = 1;
            b[8] = k;
            b[9] = 1;
            b[11..19].copy_from_slice(&u64::MAX.to_le_bytes());
            assert!(verify(&b).is_err());
        }
    }

    #[test]
    fn roundtrip_with_any_m_shards_lost() {
        for (k, m) in [(2u8, 1u8), (3, 2), (1, 1), (4, 2)] {
            let p = EcParams { k, m };
            for len in [0usize, 1, 2, 3, 7, 100, 4097, 65_537] {
                let data: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
                let shards = encode(p, &data).unwrap();
                assert_eq!(shards.len(), p.total());
                assert_eq!(encode(p, &data).unwrap(), shards, "deterministic");
                let parsed: Vec<(usize, &[u8])> = shards
                    .iter()
                    .map(|s| {
                        let (h, pl) = verify(s).unwrap();
                        assert_eq!(h.len, len as u64);
                        (h.index as usize, pl)
                    })
                    .collect();
                // Drop every window of m shards.
                for drop in 0..p.total() {
                    let kept: Vec<(usize, &[u8])> = parsed
                        .iter()
                        .filter(|(i, _)| (*i + p.total() - drop) % p.total() >= m as usize)
                        .copied()
                        .collect();
                    assert_eq!(kept.len(), k as usize);
                    assert_eq!(decode(p, len as u64, &kept).unwrap(), data, "{p} len {len}");
                }
            }
        }
    }

    #[test]
    fn corrupt_shards_are_detected() {
        let p = EcParams { k: 2, m: 1 };
        let mut s = encode(p, b"hello world").unwrap().remove(1);
        let last = s.len() - 1;
        s[last] ^= 1;
        assert!(verify(&s).unwrap_err().contains("checksum"));
        s[0] = b'X';
        assert!(verify(&s).is_err());
        assert!(verify(b"short").is_err());
    }

    #[test]
    fn parses_params() {
        assert_eq!(EcParams::parse("2+1").unwrap(), EcParams { k: 2, m: 1 });
        assert!(EcParams::parse("2").is_err());
        assert!(EcParams::parse("0+1").is_err());
        assert!(EcParams::parse("2+0").is_err());
    }
}

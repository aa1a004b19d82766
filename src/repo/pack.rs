//! Packs (`packs/<2 hex>/<id>`): many sealed blobs in one object.
//!
//! Layout: magic+version, the sealed blobs back to back, the pack header
//! (age-encrypted to the metadata recipient), and the header's length in the
//! last 4 bytes. Each blob is sealed alone (XChaCha20-Poly1305 under the
//! pack's random key, bound to its kind and id), so one ranged GET reads one
//! blob. The pack key is age-wrapped to the data recipient for data packs and
//! to the metadata recipient for tree packs; the wrapped key sits in the
//! header and in the index. A pack holds data blobs or tree blobs, never both.
//!
//! Blob plaintext before sealing: a flag byte, 0 = stored as is, 1 = lz4
//! block preceded by the raw length (u32). Compression is kept only when it
//! shrinks the blob.

use crate::crypto::{age_encrypt, BlobKind, Id, Keyring, PackKey, SEAL_OVERHEAD};
use crate::repo::codec::{bad, Dec, DecodeResult, Enc};

pub const MAGIC: &[u8; 7] = b"SECRATP";
pub const VERSION: u8 = 1;
pub const HEADER_OFFSET: usize = 8;
/// Largest blob plaintext we ever accept from a store (trees of huge
/// directories can exceed the chunker's maximum, file chunks cannot).
pub const MAX_BLOB: usize = 256 << 20;

const FLAG_STORED: u8 = 0;
const FLAG_LZ4: u8 = 1;

pub fn pack_name(id: &Id) -> String {
    let h = id.to_hex();
    format!("packs/{}/{}", &h[..2], h)
}

/// Parse a pack object name back into its id.
pub fn pack_id_from_name(name: &str) -> Option<Id> {
    let rest = name.strip_prefix("packs/")?;
    let (dir, file) = rest.split_once('/')?;
    let id = Id::from_hex(file)?;
    (dir == &file[..2]).then_some(id)
}

/// Associated data binding a sealed blob to its kind and id: a blob moved to
/// another index entry (or a swapped pack) fails to open.
pub fn blob_ad(kind: BlobKind, id: &Id) -> [u8; 33] {
    let mut ad = [0u8; 33];
    ad[0] = kind as u8;
    ad[1..].copy_from_slice(&id.0);
    ad
}

/// Append the blob plaintext encoding of `raw` to `out`.
pub fn encode_blob_body(raw: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    if raw.len() >= 64 {
        let bound = lz4_flex::block::get_maximum_output_size(raw.len());
        out.resize(start + 5 + bound, 0);
        if let Ok(n) = lz4_flex::block::compress_into(raw, &mut out[start + 5..]) {
            if n + 5 < raw.len() + 1 {
                out[start] = FLAG_LZ4;
                out[start + 1..start + 5].copy_from_slice(&(raw.len() as u32).to_le_bytes());
                out.truncate(start + 5 + n);
                return;
            }
        }
        out.truncate(start);
    }
    out.push(FLAG_STORED);
    out.extend_from_slice(raw);
}

pub fn decode_blob_body(body: &[u8]) -> DecodeResult<Vec<u8>> {
    let mut d = Dec::new(body);
    match d.u8()? {
        FLAG_STORED => Ok(d.raw(d.remaining())?.to_vec()),
        FLAG_LZ4 => {
            let raw_len = d.u32()? as usize;
            let block = d.raw(d.remaining())?;
            // lz4 expands at most ~255x; anything claiming more is forged.
            if raw_len > MAX_BLOB || raw_len > block.len().saturating_mul(255) + 16 {
                return bad(format!("implausible uncompressed length {raw_len}"));
            }
            let mut out = vec![0u8; raw_len];
            match lz4_flex::block::decompress_into(block, &mut out) {
                Ok(n) if n == raw_len => Ok(out),
                Ok(n) => bad(format!("decompressed to {n} bytes, expected {raw_len}")),
                Err(e) => bad(format!("lz4: {e}")),
            }
        }
        f => bad(format!("unknown blob encoding {f}")),
    }
}

/// Open one sealed blob and check that its plaintext hashes to `id`.
pub fn open_blob(
    keys: &Keyring,
    key: &PackKey,
    kind: BlobKind,
    id: &Id,
    sealed: &[u8],
) -> DecodeResult<Vec<u8>> {
    let body = key.open(&blob_ad(kind, id), sealed).ok_or_else(|| {
        crate::repo::codec::DecodeError(format!(
            "{} blob {} fails authentication",
            kind.name(),
            id.short()
        ))
    })?;
    let raw = decode_blob_body(&body)?;
    if keys.blob_id(kind, &raw) != *id {
        return bad(format!(
            "{} blob {} has the wrong content",
            kind.name(),
            id.short()
        ));
    }
    Ok(raw)
}

/// Where one blob lies in its pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackBlob {
    pub id: Id,
    pub offset: u32,
    /// Sealed length (what a ranged GET fetches).
    pub length: u32,
    /// Plaintext length.
    pub raw_len: u32,
}

/// Everything the index knows about one pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackInfo {
    pub id: Id,
    pub kind: BlobKind,
    pub size: u64,
    /// The pack key, age-wrapped to the recipient for `kind`.
    pub wrapped_key: Vec<u8>,
    pub blobs: Vec<PackBlob>,
}

pub(crate) fn encode_pack_body(
    e: &mut Enc,
    kind: BlobKind,
    wrapped_key: &[u8],
    blobs: &[PackBlob],
) {
    e.u8(kind as u8)
        .bytes32(wrapped_key)
        .u32(blobs.len() as u32);
    for b in blobs {
        e.raw(&b.id.0).u32(b.offset).u32(b.length).u32(b.raw_len);
    }
}

pub(crate) fn decode_pack_body(d: &mut Dec) -> DecodeResult<(BlobKind, Vec<u8>, Vec<PackBlob>)> {
    let kind = BlobKind::from_u8(d.u8()?)
        .ok_or_else(|| crate::repo::codec::DecodeError("unknown blob kind".into()))?;
    let wrapped = d.bytes32()?.to_vec();
    let n = d.count(44)?;
    let mut blobs = Vec::with_capacity(n);
    for _ in 0..n {
        blobs.push(PackBlob {
            id: Id(d.array()?),
            offset: d.u32()?,
            length: d.u32()?,
            raw_len: d.u32()?,
        });
    }
    Ok((kind, wrapped, blobs))
}

/// Check that every blob lies inside the blob area of a pack whose header
/// starts at `header_start` (as far as we know it).
pub fn check_layout(blobs: &[PackBlob], header_start: u64) -> DecodeResult<()> {
    for b in blobs {
        let end = b.offset as u64 + b.length as u64;
        if (b.offset as usize) < HEADER_OFFSET
            || end > header_start
            || (b.length as usize) < SEAL_OVERHEAD + 1
        {
            return bad(format!(
                "blob {} lies outside the pack's blob area",
                b.id.short()
            ));
        }
        if b.raw_len as usize > MAX_BLOB {
            return bad(format!("blob {} claims {} bytes", b.id.short(), b.raw_len));
        }
    }
    Ok(())
}

/// Builds one pack in memory.
pub struct PackBuilder {
    kind: BlobKind,
    key: PackKey,
    buf: Vec<u8>,
    blobs: Vec<PackBlob>,
}

impl PackBuilder {
    pub fn new(kind: BlobKind, capacity: usize) -> PackBuilder {
        let mut buf = Vec::with_capacity(capacity);
        buf.extend_from_slice(MAGIC);
        buf.push(VERSION);
        PackBuilder {
            kind,
            key: PackKey::random(),
            buf,
            blobs: Vec::new(),
        }
    }

    pub fn kind(&self) -> BlobKind {
        self.kind
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    /// Compress, seal and append one blob.
    pub fn add(&mut self, id: Id, raw: &[u8]) {
        let offset = self.buf.len();
        let ad = blob_ad(self.kind, &id);
        self.key
            .seal_with(&ad, &mut self.buf, |o| encode_blob_body(raw, o));
        self.blobs.push(PackBlob {
            id,
            offset: offset as u32,
            length: (self.buf.len() - offset) as u32,
            raw_len: raw.len() as u32,
        });
    }

    /// Wrap the key, append the header and trailer. Returns the pack bytes
    /// and what the index needs.
    pub fn finish(mut self, keys: &Keyring) -> (Vec<u8>, PackInfo) {
        let wrapped_key = age_encrypt(keys.pack_key_recipient(self.kind), &self.key.0[..]);
        let mut e = Enc::with_capacity(64 + self.blobs.len() * 44 + wrapped_key.len());
        encode_pack_body(&mut e, self.kind, &wrapped_key, &self.blobs);
        let header = age_encrypt(keys.meta_recipient(), &e.buf);
        self.buf.extend_from_slice(&header);
        self.buf
            .extend_from_slice(&(header.len() as u32).to_le_bytes());
        let id = Id::of_object(&self.buf);
        let info = PackInfo {
            id,
            kind: self.kind,
            size: self.buf.len() as u64,
            wrapped_key,
            blobs: self.blobs,
        };
        (self.buf, info)
    }
}

/// How many bytes at the end of a pack to fetch to be likely to get the
/// whole header in one request.
pub const TAIL_GUESS: u64 = 64 * 1024;

/// Given the last bytes of a pack (`tail`, ending at `size`), return the
/// header's byte range in the pack.
pub fn header_range(tail: &[u8], size: u64) -> DecodeResult<std::ops::Range<u64>> {
    if tail.len() < 4 || size < (HEADER_OFFSET + 4) as u64 {
        return bad("too short for a pack");
    }
    let n = u32::from_le_bytes(tail[tail.len() - 4..].try_into().expect("4 bytes")) as u64;
    if n + 4 + HEADER_OFFSET as u64 > size {
        return bad("header length exceeds the pack");
    }
    Ok(size - 4 - n..size - 4)
}

/// Decode a decrypted pack header; `pack_id` and `size` come from the name
/// and the listing.
pub fn decode_header(
    plain: &[u8],
    pack_id: Id,
    size: u64,
    header_start: u64,
) -> DecodeResult<PackInfo> {
    let mut d = Dec::new(plain);
    let (kind, wrapped_key, blobs) = decode_pack_body(&mut d)?;
    d.finish()?;
    check_layout(&blobs, header_start)?;
    Ok(PackInfo {
        id: pack_id,
        kind,
        size,
        wrapped_key,
        blobs,
    })
}

/// Check the pack's leading magic and version.
pub fn check_magic(head: &[u8]) -> DecodeResult<()> {
    let mut d = Dec::new(head);
    let v = d.magic(MAGIC)?;
    if v != VERSION {
        return bad(format!("pack version {v} is not supported"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{age_decrypt, ChunkerParams, NONCE_LEN};
    use proptest::prelude::*;

    #[test]
    fn blob_body_compresses_only_when_it_shrinks() {
        let mut out = Vec::new();
        encode_blob_body(&[b'a'; 1000], &mut out);
        assert_eq!(out[0], FLAG_LZ4);
        assert!(out.len() < 100);
        assert_eq!(decode_blob_body(&out).unwrap(), vec![b'a'; 1000]);
        let random: Vec<u8> = (0..1000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut out = Vec::new();
        encode_blob_body(&random, &mut out);
        assert_eq!(decode_blob_body(&out).unwrap(), random);
        let mut out = Vec::new();
        encode_blob_body(b"", &mut out);
        assert_eq!(out, [FLAG_STORED]);
    }

    /// Fixed key, nonce and input give exactly these bytes (cross-checked
    /// with libsodium's crypto_aead_xchacha20poly1305_ietf_encrypt).
    #[test]
    fn sealed_blob_test_vector() {
        let key = PackKey::from_bytes(&[0x42; 32]).unwrap();
        let id = Id([0x11; 32]);
        let mut out = Vec::new();
        key.seal_with_nonce(
            &[0x24; NONCE_LEN],
            &blob_ad(BlobKind::Data, &id),
            &mut out,
            |o| encode_blob_body(b"secrate", o),
        );
        assert_eq!(
            hex::encode(&out),
            "242424242424242424242424242424242424242424242424a52db2061c4538c361a69a3ea34c9ae1a2f34ad9843edf91"
        );
        let body = key.open(&blob_ad(BlobKind::Data, &id), &out).unwrap();
        assert_eq!(body, b"\x00secrate");
    }

    #[test]
    fn pack_round_trip() {
        let keys = Keyring::generate([9; 16], ChunkerParams::DEFAULT);
        let mut p = PackBuilder::new(BlobKind::Data, 1024);
        let blobs: Vec<Vec<u8>> = vec![b"one".to_vec(), vec![7u8; 5000], Vec::new()];
        for b in &blobs {
            p.add(keys.blob_id(BlobKind::Data, b), b);
        }
        let (bytes, info) = p.finish(&keys);
        assert_eq!(info.id, Id::of_object(&bytes));
        check_magic(&bytes).unwrap();
        let r = header_range(&bytes[bytes.len() - 10..], bytes.len() as u64).unwrap();
        let plain = age_decrypt(
            keys.meta_identity(),
            &bytes[r.start as usize..r.end as usize],
        )
        .unwrap();
        let h = decode_header(&plain, info.id, info.size, r.start).unwrap();
        assert_eq!(h, info);
        let key = PackKey::from_bytes(
            &age_decrypt(
                keys.pack_key_identity(BlobKind::Data).unwrap(),
                &info.wrapped_key,
            )
            .unwrap(),
        )
        .unwrap();
        for (b, pb) in blobs.iter().zip(&info.blobs) {
            let sealed = &bytes[pb.offset as usize..(pb.offset + pb.length) as usize];
            assert_eq!(
                &open_blob(&keys, &key, BlobKind::Data, &pb.id, sealed).unwrap(),
                b
            );
            // The same bytes do not open as a tree blob or under another id.
            assert!(open_blob(&keys, &key, BlobKind::Tree, &pb.id, sealed).is_err());
            assert!(open_blob(&keys, &key, BlobKind::Data, &Id([0; 32]), sealed).is_err());
        }
    }

    #[test]
    fn pack_names_round_trip() {
        let id = Id([0xab; 32]);
        assert_eq!(pack_id_from_name(&pack_name(&id)), Some(id));
        assert_eq!(pack_id_from_name("packs/00/abab"), None);
    }

    proptest! {
        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_blob_body(&b);
            let _ = decode_header(&b, Id::default(), 1000, 900);
            let _ = header_range(&b, b.len() as u64);
            let _ = check_magic(&b);
        }

        #[test]
        fn blob_body_round_trips(b in proptest::collection::vec(0u8..4, 0..3000)) {
            let mut out = Vec::new();
            encode_blob_body(&b, &mut out);
            prop_assert_eq!(decode_blob_body(&out).unwrap(), b);
        }
    }
}

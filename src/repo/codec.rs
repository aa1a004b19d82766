//! Little-endian binary encoding shared by every object kind.
//!
//! The decoder never trusts a length or a count: every read is bounds-checked
//! against what is left, counts are checked against the bytes that could hold
//! them before anything is allocated, and every failure is a `DecodeError`,
//! never a panic. All integers are little-endian and fixed-width so that
//! docs/FORMAT.md can describe each byte.

use std::fmt;

/// Why bytes did not decode. The caller adds the object's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub type DecodeResult<T> = Result<T, DecodeError>;

pub fn bad<T>(reason: impl Into<String>) -> DecodeResult<T> {
    Err(DecodeError(reason.into()))
}

/// An append-only byte buffer with typed writers.
#[derive(Default)]
pub struct Enc {
    pub buf: Vec<u8>,
}

impl Enc {
    pub fn new() -> Self {
        Enc { buf: Vec::new() }
    }

    pub fn with_capacity(n: usize) -> Self {
        Enc {
            buf: Vec::with_capacity(n),
        }
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// Bytes with a u16 length prefix. Callers guarantee `v.len() <= u16::MAX`.
    pub fn bytes16(&mut self, v: &[u8]) -> &mut Self {
        debug_assert!(v.len() <= u16::MAX as usize);
        self.u16(v.len() as u16).raw(v)
    }

    /// Bytes with a u32 length prefix. Callers guarantee `v.len() <= u32::MAX`.
    pub fn bytes32(&mut self, v: &[u8]) -> &mut Self {
        debug_assert!(v.len() <= u32::MAX as usize);
        self.u32(v.len() as u32).raw(v)
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// A bounds-checked reader over a byte slice.
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn raw(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        if n > self.remaining() {
            return bad(format!(
                "truncated: needs {n} bytes at offset {}, has {}",
                self.pos,
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn array<const N: usize>(&mut self) -> DecodeResult<[u8; N]> {
        let s = self.raw(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> DecodeResult<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> DecodeResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> DecodeResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> DecodeResult<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub fn bytes16(&mut self) -> DecodeResult<&'a [u8]> {
        let n = self.u16()? as usize;
        self.raw(n)
    }

    pub fn bytes32(&mut self) -> DecodeResult<&'a [u8]> {
        let n = self.u32()? as usize;
        self.raw(n)
    }

    pub fn string16(&mut self) -> DecodeResult<String> {
        let b = self.bytes16()?;
        String::from_utf8(b.to_vec()).or_else(|_| bad("string is not UTF-8"))
    }

    /// A count of items that each take at least `min_item` bytes: rejected
    /// before any allocation if the rest of the buffer cannot hold them.
    pub fn count(&mut self, min_item: usize) -> DecodeResult<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.remaining() {
            return bad(format!(
                "count {n} does not fit in the {} bytes left",
                self.remaining()
            ));
        }
        Ok(n)
    }

    /// Expect the exact magic bytes and return the version byte that follows.
    pub fn magic(&mut self, magic: &[u8]) -> DecodeResult<u8> {
        let m = self
            .raw(magic.len())
            .or_else(|_| bad("too short for a header"))?;
        if m != magic {
            return bad("wrong magic bytes (not this kind of object)");
        }
        self.u8()
    }

    pub fn finish(&self) -> DecodeResult<()> {
        if self.remaining() != 0 {
            return bad(format!("{} trailing bytes", self.remaining()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let mut e = Enc::new();
        e.u8(1)
            .u16(2)
            .u32(3)
            .u64(4)
            .i64(-5)
            .bytes16(b"ab")
            .bytes32(b"cde");
        let b = e.finish();
        let mut d = Dec::new(&b);
        assert_eq!(d.u8().unwrap(), 1);
        assert_eq!(d.u16().unwrap(), 2);
        assert_eq!(d.u32().unwrap(), 3);
        assert_eq!(d.u64().unwrap(), 4);
        assert_eq!(d.i64().unwrap(), -5);
        assert_eq!(d.bytes16().unwrap(), b"ab");
        assert_eq!(d.bytes32().unwrap(), b"cde");
        d.finish().unwrap();
    }

    #[test]
    fn huge_count_is_rejected_before_allocating() {
        let b = [0xff, 0xff, 0xff, 0xff, 0];
        assert!(Dec::new(&b).count(1).is_err());
    }

    proptest! {
        #[test]
        fn reads_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut d = Dec::new(&b);
            let _ = d.bytes32();
            let _ = d.bytes16();
            let _ = d.count(8);
            let _ = d.magic(b"SECRAT");
        }
    }
}

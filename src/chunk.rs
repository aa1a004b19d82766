//! Content-defined chunking: FastCDC v2020 with a secret gear seed.
//!
//! Boundaries depend on content only, so an edit in the middle of a big file
//! changes the chunks around it and no others. The gear table is XORed with a
//! seed from the keyring so that chunk sizes do not reveal which known file
//! the data is. `rabin-ka` from the design card does not exist on crates.io;
//! fastcdc is 3-4x faster than a Rabin hash here (DESIGN.md).
//!
//! The streaming reader keeps a buffer of two maximum-sized chunks (16 MiB;
//! it starts at 64 KiB and grows only for files that need it) and cuts every chunk whose boundary lies inside what it holds before
//! reading more, so a refill moves only the start of one chunk to the front
//! and the per-byte copy cost stays far below one memcpy (fastcdc's own
//! `StreamCDC` moves up to `max` bytes after every chunk). A boundary found
//! before the end of the data held is final: FastCDC's decision at a
//! position depends only on the bytes before it and the position itself.

use std::borrow::Cow;
use std::io::{self, Read};

use fastcdc::v2020::{cut_gear, get_gear_with_seed, select_masks, Normalization};

use crate::crypto::ChunkerParams;

#[derive(Clone)]
pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
}

impl Chunker {
    /// `params` must be valid (`ChunkerParams::is_valid`); the repository
    /// config is checked when it is opened.
    pub fn new(params: ChunkerParams, seed: u64) -> Chunker {
        let (mask_s, mask_l) = select_masks(params.avg as usize, Normalization::Level1);
        let (gear, gear_ls) = get_gear_with_seed(seed);
        Chunker {
            min: params.min as usize,
            avg: params.avg as usize,
            max: params.max as usize,
            mask_s,
            mask_l,
            gear,
            gear_ls,
        }
    }

    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Length of the first chunk of `data` (all of it if it is the last).
    pub fn cut(&self, data: &[u8]) -> usize {
        if data.len() <= self.min {
            return data.len();
        }
        let (_, n) = cut_gear(
            data,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        if n == 0 {
            data.len()
        } else {
            n
        }
    }

    /// Chunk lengths of an in-memory buffer.
    pub fn cut_all(&self, mut data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let n = self.cut(data);
            out.push(n);
            data = &data[n..];
        }
        out
    }

    /// Chunks of a stream, each an owned buffer.
    pub fn stream<R: Read>(&self, source: R) -> ChunkStream<'_, R> {
        let cap = (self.max * 2).max(16 << 20);
        ChunkStream {
            chunker: self,
            source,
            buf: vec![0u8; FIRST_BUF.min(cap)],
            cap,
            start: 0,
            end: 0,
            eof: false,
        }
    }
}

/// The stream buffer's first size. It doubles while a file needs more, up
/// to its full size: a 16 MiB buffer zeroed for every small file cost more
/// than the rest of sealing it (100k files: 36 s instead of a few).
const FIRST_BUF: usize = 64 << 10;

pub struct ChunkStream<'a, R> {
    chunker: &'a Chunker,
    source: R,
    buf: Vec<u8>,
    /// The size `buf` grows to.
    cap: usize,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> ChunkStream<'_, R> {
    /// Read until the buffer is full or the source ends, first moving the
    /// unconsumed bytes to the front if less than a maximum chunk fits
    /// after them in the full-sized buffer, or growing the buffer if it is
    /// full and not at its full size yet. Called only while less than a
    /// maximum chunk is held, so there is always room to read into.
    fn fill(&mut self) -> io::Result<()> {
        if self.cap - self.start < self.chunker.max {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() && self.buf.len() < self.cap {
            let n = (self.buf.len() * 2).min(self.cap);
            self.buf.resize(n, 0);
        }
        while !self.eof && self.end < self.buf.len() {
            match self.source.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for ChunkStream<'_, R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<io::Result<Vec<u8>>> {
        loop {
            let held = self.end - self.start;
            if held == 0 && self.eof {
                return None;
            }
            if held > 0 {
                let n = self.chunker.cut(&self.buf[self.start..self.end]);
                // A cut short of the end is a real boundary; one at the end
                // is only where the data held stops, unless that is the end
                // of the source or a maximum-sized chunk.
                if n < held || self.eof || held >= self.chunker.max {
                    let chunk = self.buf[self.start..self.start + n].to_vec();
                    self.start += n;
                    return Some(Ok(chunk));
                }
            }
            if let Err(e) = self.fill() {
                return Some(Err(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; n];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    fn small() -> ChunkerParams {
        ChunkerParams {
            min: 4096,
            avg: 16384,
            max: 65536,
        }
    }

    #[test]
    fn stream_matches_in_memory_and_respects_bounds() {
        let c = Chunker::new(small(), 12345);
        let d = data(3_000_000, 1);
        let lens = c.cut_all(&d);
        let streamed: Vec<Vec<u8>> = c.stream(&d[..]).map(|r| r.unwrap()).collect();
        assert_eq!(lens, streamed.iter().map(|c| c.len()).collect::<Vec<_>>());
        assert_eq!(streamed.concat(), d);
        for l in &lens[..lens.len() - 1] {
            assert!(*l >= 4096 && *l <= 65536);
        }
    }

    /// More data than the stream's buffer, with the default sizes and small
    /// ones: refills must not move any boundary.
    #[test]
    fn refills_do_not_move_boundaries() {
        let d = data(40 << 20, 4);
        for params in [small(), ChunkerParams::DEFAULT] {
            let c = Chunker::new(params, 7);
            let lens = c.cut_all(&d);
            let streamed: Vec<usize> = c.stream(&d[..]).map(|r| r.unwrap().len()).collect();
            assert_eq!(lens, streamed);
        }
    }

    /// A reader that hands out a few bytes at a time, then larger pieces.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.1 += 1;
            let n = if self.1 < 50 { self.1 % 7 + 1 } else { 1 << 20 }
                .min(out.len())
                .min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// Sizes around where the buffer grows, is full, and reaches its full
    /// size, read in odd pieces: the same chunks as in memory.
    #[test]
    fn the_growing_buffer_keeps_every_boundary() {
        let d = data(20 << 20, 5);
        for params in [small(), ChunkerParams::DEFAULT] {
            let c = Chunker::new(params, 3);
            let max = params.max as usize;
            for n in [
                0,
                1,
                FIRST_BUF - 1,
                FIRST_BUF,
                FIRST_BUF + 1,
                2 * FIRST_BUF,
                max,
                max + 1,
                2 * max,
                2 * max + 1,
                16 << 20,
                (16 << 20) + 1,
                20 << 20,
            ] {
                let d = &d[..n];
                let streamed: Vec<Vec<u8>> = c.stream(Trickle(d, 0)).map(|r| r.unwrap()).collect();
                assert_eq!(
                    c.cut_all(d),
                    streamed.iter().map(|c| c.len()).collect::<Vec<_>>(),
                    "{n} bytes, max {max}"
                );
                assert_eq!(streamed.concat(), d);
            }
        }
    }

    #[test]
    fn an_edit_in_the_middle_changes_few_chunks() {
        let c = Chunker::new(small(), 99);
        let a = data(2_000_000, 2);
        let mut b = a.clone();
        b[1_000_000..1_000_100].copy_from_slice(&[7u8; 100]);
        let chunks = |d: &[u8]| {
            let mut out = std::collections::HashSet::new();
            let mut off = 0;
            for n in c.cut_all(d) {
                out.insert(d[off..off + n].to_vec());
                off += n;
            }
            out
        };
        let (ca, cb) = (chunks(&a), chunks(&b));
        assert!(cb.difference(&ca).count() <= 3);
    }

    #[test]
    fn the_seed_moves_boundaries() {
        let d = data(1_000_000, 3);
        let a = Chunker::new(small(), 1).cut_all(&d);
        let b = Chunker::new(small(), 2).cut_all(&d);
        assert_ne!(a, b);
    }

    #[test]
    fn empty_input_has_no_chunks() {
        let c = Chunker::new(small(), 1);
        assert!(c.stream(&[][..]).next().is_none());
        assert!(c.cut_all(&[]).is_empty());
    }
}

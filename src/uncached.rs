//! Reading files once without filling the page cache with them.
//!
//! A backup reads every byte once. Through the page cache that means a fresh
//! page for every 4 KiB, and on the virtual machines we measured, touching
//! freshly allocated memory is what costs: reading 2 GiB cold took 2.7–2.9 s
//! of system CPU with plain `read`, 0.33–0.38 s with `RWF_DONTCACHE`
//! (docs/benchmarks.md). `preadv2(RWF_DONTCACHE)` (Linux 6.14+) reads
//! through the page cache as usual, coherent with writers, but drops the
//! pages it had to bring in once they are copied out; pages that were cached
//! already stay. Kernels or filesystems without it answer EOPNOTSUPP (or
//! EINVAL for an unknown flag), and the reader falls back to `pread`.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

pub struct UncachedReader {
    file: File,
    pos: u64,
    uncached: bool,
}

impl UncachedReader {
    pub fn new(file: File) -> UncachedReader {
        UncachedReader {
            file,
            pos: 0,
            uncached: true,
        }
    }
}

impl Read for UncachedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.uncached {
            let iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: one iovec describing `buf`, which lives across the
            // call; the descriptor is ours.
            let n = unsafe {
                libc::preadv2(
                    self.file.as_raw_fd(),
                    &iov,
                    1,
                    self.pos as libc::off_t,
                    libc::RWF_DONTCACHE,
                )
            };
            if n >= 0 {
                self.pos += n as u64;
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                    self.uncached = false
                }
                _ => return Err(e),
            }
        }
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_whole_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let mut r = UncachedReader::new(File::open(&path).unwrap());
        let mut got = Vec::new();
        let mut buf = vec![0u8; 100_003];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, data);
    }
}

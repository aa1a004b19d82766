//! Create-only puts into a `file://` store, written past the page cache.
//!
//! object_store's `LocalFileSystem` writes through the page cache. For a
//! backup that stores gigabytes of packs, filling fresh page-cache pages and
//! being throttled while they are written back costs more kernel CPU than
//! all of chunking, hashing and sealing together (perf: 40 % of the backup's
//! CPU in `copy_folio_from_iter_atomic` for 2 GiB of random data; see
//! docs/benchmarks.md), and the pages are useless afterwards. Large objects
//! are therefore written with `O_DIRECT` through a small aligned bounce
//! buffer; the unaligned tail, small objects and filesystems that refuse
//! `O_DIRECT` (tmpfs) take the ordinary buffered path.
//!
//! The protocol is object_store's, with durability before publication:
//! write a staging file `<name>#<n>` in the object's directory (object_store
//! lists skip such names), fsync it, publish it with a hard link (atomic and
//! create-only: an existing object is never replaced), remove the staging
//! name and fsync the directory. A directory this creates is fsync'd into
//! its parent too. A crash leaves at most a staging file, never a partial
//! object under its real name.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Alignment `O_DIRECT` needs for memory, file offsets and lengths (the
/// logical block size, at most 4 KiB on the devices we meet; a device that
/// wants more makes the first write fail with EINVAL and we write buffered).
const ALIGN: usize = 4096;
/// Objects smaller than this go through the page cache.
const DIRECT_MIN: usize = 1 << 20;
/// Bounce buffer: each `O_DIRECT` write moves this much.
const BOUNCE: usize = 2 << 20;

#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Block([u8; ALIGN]);

thread_local! {
    /// One aligned bounce buffer per thread that uploads (a few threads).
    static BOUNCE_BUF: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Write `data` as the object at `dst` unless something is there already.
/// Returns false (and writes nothing) if `dst` exists.
pub fn put_new(dst: &Path, data: &[u8]) -> io::Result<bool> {
    if dst.exists() {
        return Ok(false);
    }
    let dir = dst
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "object without a directory"))?;
    let (file, staging) = create_staging(dst, dir)?;
    let written = write_all(&file, data).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&staging);
        return Err(e);
    }
    let linked = std::fs::hard_link(&staging, dst);
    let _ = std::fs::remove_file(&staging);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    }
    sync_dir(dir)?;
    Ok(true)
}

/// Open a new staging file `<dst>#<n>`, creating the directory if needed.
fn create_staging(dst: &Path, dir: &Path) -> io::Result<(File, PathBuf)> {
    let mut n = 1u32;
    loop {
        let mut name = dst.as_os_str().to_owned();
        name.push(format!("#{n}"));
        let path = PathBuf::from(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.exists() => {
                create_dir_durably(dir)?
            }
            Err(e) => return Err(e),
        }
    }
}

/// `create_dir_all`, with every directory it made fsync'd into its parent.
pub(crate) fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_durably(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write all of `data` at the start of the empty file `f`: the aligned
/// prefix with `O_DIRECT` where possible, the rest buffered.
fn write_all(mut f: &File, data: &[u8]) -> io::Result<()> {
    let aligned = data.len() / ALIGN * ALIGN;
    let mut off = 0;
    if data.len() >= DIRECT_MIN && set_direct(f, true).is_ok() {
        off = BOUNCE_BUF.with(|b| write_direct(f, &data[..aligned], &mut b.borrow_mut()));
        set_direct(f, false)?;
    }
    // The file position is at `off`: whatever O_DIRECT did not write.
    f.write_all(&data[off..])
}

/// Write `data` (a multiple of ALIGN long) with O_DIRECT from the file's
/// current position; returns how much was written. Stops early, without an
/// error, where O_DIRECT refuses (EINVAL) or writes short, so the caller
/// finishes buffered; other errors are left for the buffered write to meet.
fn write_direct(mut f: &File, data: &[u8], bounce: &mut Vec<Block>) -> usize {
    if bounce.is_empty() {
        bounce.resize(BOUNCE / ALIGN, Block([0; ALIGN]));
    }
    // SAFETY: `Block` is a plain byte array with no padding; the Vec's
    // memory is initialised, 4096-aligned and `bounce.len() * ALIGN` bytes.
    let buf: &mut [u8] = unsafe {
        std::slice::from_raw_parts_mut(bounce.as_mut_ptr().cast::<u8>(), bounce.len() * ALIGN)
    };
    let mut off = 0;
    while off < data.len() {
        let n = (data.len() - off).min(buf.len());
        buf[..n].copy_from_slice(&data[off..off + n]);
        let mut done = 0;
        while done < n {
            match f.write(&buf[done..n]) {
                Ok(w) if w > 0 && w % ALIGN == 0 => done += w,
                Ok(w) => return off + done + w,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return off + done,
            }
        }
        off += n;
    }
    off
}

fn set_direct(f: &File, on: bool) -> io::Result<()> {
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    #[test]
    fn writes_every_size_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        for (i, n) in [
            0,
            1,
            4095,
            4096,
            DIRECT_MIN - 1,
            DIRECT_MIN,
            DIRECT_MIN + 4097,
            5 * BOUNCE + 123,
        ]
        .into_iter()
        .enumerate()
        {
            let dst = dir.path().join(format!("packs/{i:02}/obj"));
            let data = bytes(n);
            assert!(put_new(&dst, &data).unwrap(), "size {n}");
            assert_eq!(std::fs::read(&dst).unwrap(), data, "size {n}");
            // Create-only: the second put leaves the first object alone.
            assert!(!put_new(&dst, b"other").unwrap());
            assert_eq!(std::fs::read(&dst).unwrap(), data);
            let names: Vec<_> = std::fs::read_dir(dst.parent().unwrap()).unwrap().collect();
            assert_eq!(names.len(), 1, "no staging file left for size {n}");
        }
    }

    #[test]
    fn a_leftover_staging_file_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("obj");
        std::fs::write(dir.path().join("obj#1"), b"crashed").unwrap();
        let data = bytes(DIRECT_MIN + 5);
        assert!(put_new(&dst, &data).unwrap());
        assert_eq!(std::fs::read(&dst).unwrap(), data);
        assert_eq!(std::fs::read(dir.path().join("obj#1")).unwrap(), b"crashed");
    }
}

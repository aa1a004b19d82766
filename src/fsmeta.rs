//! File metadata the standard library does not cover: extended attributes,
//! nanosecond timestamps without following symlinks, device nodes.
//!
//! Thin, safe wrappers over libc; every call takes a path and returns
//! `io::Result`. Nothing here decides policy (which errors to ignore is the
//! caller's choice).

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::repo::tree::Timestamp;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn cbytes(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains NUL"))
}

fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA))
}

/// Every extended attribute of `path` (not following a final symlink),
/// sorted by name. A filesystem without xattrs gives an empty list.
pub fn list_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = cpath(path)?;
    let mut names = vec![0u8; 1024];
    let n = loop {
        let r = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => {
                let need = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
                if need < 0 {
                    return Err(io::Error::last_os_error());
                }
                names.resize(need as usize + 64, 0);
            }
            _ if unsupported(&e) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        match get_xattr(path, name) {
            Ok(Some(v)) => out.push((name.to_vec(), v)),
            Ok(None) => {}
            Err(e) if unsupported(&e) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// One attribute's value; `None` if it vanished.
pub fn get_xattr(path: &Path, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let c = cpath(path)?;
    let cn = cbytes(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        let r =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => {
                let need =
                    unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), std::ptr::null_mut(), 0) };
                if need < 0 {
                    return Err(io::Error::last_os_error());
                }
                buf.resize(need as usize + 64, 0);
            }
            Some(libc::ENODATA) => return Ok(None),
            _ => return Err(e),
        }
    }
}

pub fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cpath(path)?;
    let cn = cbytes(name)?;
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Set atime and mtime to `mtime` without following a final symlink.
pub fn set_times(path: &Path, mtime: Timestamp) -> io::Result<()> {
    let c = cpath(path)?;
    let ts = libc::timespec {
        tv_sec: mtime.secs as libc::time_t,
        tv_nsec: mtime.nanos as libc::c_long,
    };
    let times = [ts, ts];
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Create a fifo, socket or device node.
pub fn mknod(path: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let c = cpath(path)?;
    let r = unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Bytes of an `OsStr`, for tree entry names.
pub fn name_bytes(n: &OsStr) -> &[u8] {
    n.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattrs_and_times_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        match set_xattr(&f, b"user.test", b"value") {
            Ok(()) => {
                assert_eq!(
                    list_xattrs(&f).unwrap(),
                    vec![(b"user.test".to_vec(), b"value".to_vec())]
                );
            }
            Err(e) if unsupported(&e) => {}
            Err(e) => panic!("{e}"),
        }
        let t = Timestamp {
            secs: 1_000_000_000,
            nanos: 123_456_789,
        };
        set_times(&f, t).unwrap();
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_000_000_000, 123_456_789));
    }
}

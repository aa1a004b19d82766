//! Working below a directory handle: the few calls `restore` and `backup`
//! need that `rustix` does not give in one piece.
//!
//! Everything here takes an open directory and one name in it (or a path
//! of names below it) and never follows a symlink at any of those names:
//! a name swapped for a symlink fails the call (ELOOP or ENOTDIR), it is
//! never written through. Only the directory handle a caller starts from
//! may have been reached through a symlink. Thin wrappers; which errors to
//! ignore is the caller's choice.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;

/// Flags for a directory below the start: never a symlink.
const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Open `path` as a directory, following symlinks: for the target a user
/// names, which is theirs to point anywhere.
pub fn open_start(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    Ok(rfs::open(path, flags, Mode::empty())?)
}

/// Open the directory `name` of `dir`; a symlink there is refused.
pub fn open_dir(dir: impl AsFd, name: &[u8]) -> io::Result<OwnedFd> {
    Ok(rfs::openat(dir, name, DIR, Mode::empty())?)
}

/// Open the directory `rel` below `dir` one name at a time, none of them
/// followed if it is a symlink.
pub fn open_below(dir: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    let mut fd = dir.try_clone()?;
    for name in rel.iter() {
        fd = open_dir(&fd, name.as_bytes())?;
    }
    Ok(fd)
}

/// Create the file `name` in `dir`, which must not exist (not even as a
/// symlink), readable and writable by its owner only until its own mode is
/// set.
pub fn create_new(dir: impl AsFd, name: &[u8]) -> io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(File::from(rfs::openat(
        dir,
        name,
        flags,
        Mode::from_raw_mode(0o600),
    )?))
}

/// Whether the directory open at `dir` has no entries.
pub fn is_empty(dir: impl AsFd) -> io::Result<bool> {
    for e in rfs::Dir::read_from(dir)? {
        let e = e?;
        if !matches!(e.file_name().to_bytes(), b"." | b"..") {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Remove `name` from `dir` and, if it is a directory, all below it, each
/// directory opened by its handle (a symlink inside is removed, never
/// followed). Holds one handle per level.
pub fn remove_tree(dir: impl AsFd, name: &[u8]) -> io::Result<()> {
    let dir = dir.as_fd();
    let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::Directory {
        return Ok(rfs::unlinkat(dir, name, AtFlags::empty())?);
    }
    let sub = open_dir(dir, name)?;
    let mut names = Vec::new();
    for e in rfs::Dir::read_from(&sub)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if !matches!(n, b"." | b"..") {
            names.push(n.to_vec());
        }
    }
    for n in names {
        remove_tree(&sub, &n)?;
    }
    Ok(rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

/// Set the mode of `name` in `dir`, which must not be a symlink (EOPNOTSUPP
/// if it is). Linux's `fchmodat` has no such flag before `fchmodat2`; the C
/// library's `fchmodat` gives it (it opens `name` with `O_PATH|O_NOFOLLOW`
/// and changes the file that handle holds), which is why this one call goes
/// through libc and not rustix (whose raw syscall refuses the flag). For
/// fifos, sockets and device nodes, which cannot be opened to `fchmod`.
pub fn chmod_nofollow(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<()> {
    let c = cname(name)?;
    let r = unsafe {
        libc::fchmodat(
            dir.as_raw_fd(),
            c.as_ptr(),
            mode as libc::mode_t,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Set the xattr `key` of `name` in `dir` without following `name` if it is
/// a symlink. Linux has no `lsetxattrat` before 6.13 and a symlink cannot
/// be opened for `fsetxattr` (an `O_PATH` handle is refused with EBADF), so
/// the path is `/proc/self/fd/DIR/name`: the kernel resolves the `DIR`
/// part to the directory the handle holds (whatever has since been moved
/// or swapped at its old path), and `lsetxattr` leaves the last name
/// unfollowed. Without `/proc` this fails (ENOENT) and nothing is written.
pub fn lsetxattr_at(dir: BorrowedFd<'_>, name: &[u8], key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    Ok(rfs::lsetxattr(
        path.as_slice(),
        key,
        value,
        rfs::XattrFlags::empty(),
    )?)
}

/// The names in the directory open at `dir`, `.` and `..` left out, in
/// the order the filesystem gives them.
pub fn names(dir: impl AsFd) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for e in rfs::Dir::read_from(dir)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if !matches!(n, b"." | b"..") {
            names.push(n.to_vec());
        }
    }
    Ok(names)
}

/// Open the file `name` of `dir` for reading, with `extra` flags; a
/// symlink there is refused (ELOOP), never followed, and a terminal never
/// becomes the controlling one.
pub fn open_read(dir: impl AsFd, name: &[u8], extra: OFlags) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC | extra;
    Ok(File::from(rfs::openat(dir, name, flags, Mode::empty())?))
}

/// The target of the symlink `name` of `dir`.
pub fn read_link(dir: impl AsFd, name: &[u8]) -> io::Result<Vec<u8>> {
    Ok(rfs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// Every extended attribute of the file open at `fd`, sorted by name. A
/// filesystem without xattrs gives an empty list.
pub fn xattrs(fd: impl AsFd) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let fd = fd.as_fd();
    let mut names = vec![0u8; 1024];
    let n = loop {
        match rfs::flistxattr(fd, &mut names[..]) {
            Ok(n) => break n,
            Err(Errno::RANGE) => {
                let need = rfs::flistxattr_query(fd)?;
                names.resize(need + 64, 0);
            }
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let mut value = vec![0u8; 256];
        loop {
            match rfs::fgetxattr(fd, name, &mut value[..]) {
                Ok(len) => {
                    value.truncate(len);
                    out.push((name.to_vec(), value));
                    break;
                }
                Err(Errno::RANGE) => {
                    let need = rfs::fgetxattr_query(fd, name)?;
                    value.resize(need + 64, 0);
                }
                // Removed since it was listed.
                Err(Errno::NODATA | Errno::NOTSUP) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every extended attribute of `name` in `dir`, not following `name` if it
/// is a symlink: through `/proc/self/fd/DIR/name`, as [`lsetxattr_at`]
/// writes them (a symlink, fifo or device node cannot be opened to ask its
/// handle). Without `/proc` this fails (ENOENT).
pub fn lxattrs_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    crate::fsmeta::list_xattrs(Path::new(std::ffi::OsStr::from_bytes(&path)))
}

fn cname(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from(Errno::INVAL))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A symlink at any name below the start is refused, not followed:
    /// as a directory on the way, as the file to create, and inside what
    /// is removed (the symlink goes, what it points to stays).
    #[test]
    fn a_symlinked_name_is_never_followed() {
        let work = tempfile::tempdir().unwrap();
        let (start, outside) = (work.path().join("start"), work.path().join("outside"));
        fs::create_dir_all(start.join("a/b")).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("kept"), b"x").unwrap();
        symlink(&outside, start.join("a/link")).unwrap();
        let root = open_start(&start).unwrap();
        assert!(open_below(&root, Path::new("a/b")).is_ok());
        let e = open_below(&root, Path::new("a/link")).unwrap_err();
        assert!(
            matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)),
            "{e}"
        );
        let a = open_dir(&root, b"a").unwrap();
        let e = create_new(&a, b"link").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");
        assert!(chmod_nofollow(a.as_fd(), b"link", 0o700).is_err());
        remove_tree(&root, b"a").unwrap();
        assert!(!start.join("a").exists());
        assert_eq!(fs::read(outside.join("kept")).unwrap(), b"x");
    }
}

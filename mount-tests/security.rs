//! Security checks on a real mount: nothing the user wrote (names, paths,
//! contents) appears in any stored object; the cache is private (0700
//! directories, 0600 files); the mount is not `allow_other` by default;
//! the passphrase appears in no process's argv, in no log and in no stored
//! object.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use support::*;

fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &fs::Metadata)) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let md = fs::symlink_metadata(e.path()).unwrap();
        f(&e.path(), &md);
        if md.is_dir() {
            walk(&e.path(), f);
        }
    }
}

#[test]
fn nothing_leaks_and_the_cache_is_private() {
    if !fuse_ready("nothing_leaks_and_the_cache_is_private") {
        return;
    }
    for store in stores("mount-security") {
        eprintln!("== {} store", store.label);
        let work = tempfile::tempdir().unwrap();
        let s = Secrate::new(&store.url);
        s.init();
        let cache = work.path().join("cache");
        let mut m = Mount::new(&s, &work.path().join("mnt"), &cache, &[]);

        // Distinctive names and contents (compressible text, so that a
        // missing encryption would show them verbatim).
        let name = "SecretProjectNameQuartz";
        let text = "the launch code is TANGERINE-LIGHTHOUSE-4471 ".repeat(200);
        fs::create_dir_all(m.path(&format!("{name}/plans"))).unwrap();
        fs::write(m.path(&format!("{name}/plans/budget-{name}.txt")), &text).unwrap();
        std::os::unix::fs::symlink(format!("/home/{name}"), m.path("link-to-home")).unwrap();
        xattr_set(
            &m.path(&format!("{name}/plans")),
            "user.note",
            name.as_bytes(),
        );

        // Not allow_other: the kernel's options for this mount.
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = info
            .lines()
            .find(|l| l.contains(m.mnt.to_str().unwrap()))
            .expect("the mount is in mountinfo");
        assert!(!line.contains("allow_other"), "{line}");

        // The daemon's argv and environment-free command line.
        let pid = m.pid.expect("the mount's pid");
        let argv = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(
            !contains(&argv, PASSPHRASE.as_bytes()),
            "passphrase in argv"
        );
        let env = fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(
            !contains(&env, PASSPHRASE.as_bytes()),
            "passphrase in the daemon's environment"
        );

        m.snapshot();
        m.umount();

        // The store: no name, path, xattr, symlink target, content or
        // passphrase in any object.
        let objects = store_objects(&store.url);
        assert!(objects.len() > 4);
        for (obj, bytes) in &objects {
            for needle in [
                name,
                "TANGERINE-LIGHTHOUSE",
                "budget-",
                PASSPHRASE,
                "user.note",
            ] {
                assert!(
                    !contains(bytes, needle.as_bytes()),
                    "{obj} contains {needle:?}"
                );
            }
        }

        // The cache: 0700 directories, 0600 files, no passphrase anywhere
        // (the log included).
        let mode = fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "cache dir mode {mode:o}");
        let mut files = 0;
        walk(&cache, &mut |p, md| {
            let mode = md.permissions().mode() & 0o777;
            if md.is_dir() {
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
            } else if md.is_file() {
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
                let b = fs::read(p).unwrap();
                assert!(
                    !contains(&b, PASSPHRASE.as_bytes()),
                    "passphrase in {}",
                    p.display()
                );
                files += 1;
            }
        });
        assert!(files > 0);
        assert!(!m.log().is_empty());
    }
}

fn xattr_set(path: &Path, name: &str, value: &[u8]) {
    let p = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "setxattr {name} on {}", path.display());
}

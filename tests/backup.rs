//! `secrate backup` through the real binary: `--one-file-system` over a
//! real mount, and a backup that cannot read everything (run as `nobody`)
//! marking its snapshot `partial`. Both need root (to mount, to switch
//! users); without it they say so and pass.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;

fn is_root() -> bool {
    secrate::fsmeta::is_root()
}

/// A tmpfs mounted for the test; unmounted when dropped, also when the
/// test fails.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mode: u32) -> Tmpfs {
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size=1m,mode={mode:o}"))
            .arg("secrate-test")
            .arg(at)
            .output()
            .expect("run mount");
        assert!(o.status.success(), "mount: {}", stderr(&o));
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// With `-x`, a directory on another filesystem inside the source is
/// saved as an empty directory with its own mode; without it, its entries
/// are saved too. Before, there was no such option: a backup of `/` walked
/// `/proc` and `/sys`.
#[test]
fn one_file_system_saves_a_mount_point_empty() {
    if !is_root() {
        eprintln!("one_file_system_saves_a_mount_point_empty: needs root to mount, skipped");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(src.join("mnt")).unwrap();
    fs::write(src.join("a"), "on the source's filesystem").unwrap();
    let _mounted = Tmpfs::mount(&src.join("mnt"), 0o710);
    fs::create_dir(src.join("mnt").join("sub")).unwrap();
    fs::write(src.join("mnt").join("sub").join("inside"), "another fs").unwrap();
    let s = Secrate::new(&format!("file://{}/store", work.path().display()));
    s.init();
    let source = src.to_str().unwrap();

    s.ok(&["backup", "-q", "-x", source]);
    let out = work.path().join("out-x");
    s.ok(&["restore", "latest", out.to_str().unwrap()]);
    assert_eq!(
        fs::read(out.join("a")).unwrap(),
        b"on the source's filesystem"
    );
    let mnt = out.join("mnt");
    assert!(mnt.is_dir());
    assert_eq!(fs::read_dir(&mnt).unwrap().count(), 0);
    assert_eq!(
        fs::metadata(&mnt).unwrap().permissions().mode() & 0o7777,
        0o710
    );

    s.ok(&["backup", "-q", "--one-file-system", source]);
    s.ok(&["backup", "-q", source]);
    let out = work.path().join("out-all");
    s.ok(&["restore", "latest", out.to_str().unwrap()]);
    assert_eq!(
        fs::read(out.join("mnt").join("sub").join("inside")).unwrap(),
        b"another fs"
    );
    let help = s.ok(&["backup", "--help"]);
    assert!(help.contains("--one-file-system"), "{help}");
}

//! An inode record of the mount's cache (`meta.redb`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::live::record::Inode;

fuzz_target!(|data: &[u8]| {
    if let Ok(i) = Inode::decode(data) {
        let _ = (i.dir_tree(), i.is_dirty_file(), i.is_staged(), i.chunks());
    }
});

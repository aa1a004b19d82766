//! A tree blob (one directory), after the blob is opened.
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::repo::tree::Tree;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Tree::decode(data) {
        for e in &t.entries {
            let _ = (e.chunks(), e.subtree());
            assert!(t.find(&e.name).is_some());
        }
    }
});

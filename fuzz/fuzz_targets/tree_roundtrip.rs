//! Round trip: a tree that decodes encodes back to the same bytes (the
//! encoding is canonical) and decodes again to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::repo::tree::Tree;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = Tree::decode(data) else {
        return;
    };
    let enc = t.encode();
    assert_eq!(enc, data, "encode(decode(x)) != x");
    assert_eq!(Tree::decode(&enc).expect("re-encoded tree decodes"), t);
});

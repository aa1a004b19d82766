//! Round trip: a tree that decodes encodes back to the same bytes (the
//! encoding is canonical) and decodes again to the same value. A version 1
//! tree (still read, never written) encodes as version 2: only the value
//! must survive.
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::repo::tree::Tree;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = Tree::decode(data) else {
        return;
    };
    let enc = t.encode();
    if data[0] != 1 {
        assert_eq!(enc, data, "encode(decode(x)) != x");
    }
    assert_eq!(Tree::decode(&enc).expect("re-encoded tree decodes"), t);
});

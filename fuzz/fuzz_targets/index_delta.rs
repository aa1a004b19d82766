//! An index delta's plaintext (`index/<id>`, after the sealed envelope).
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::repo::index::{decode_delta, Index};

fuzz_target!(|data: &[u8]| {
    if let Ok(packs) = decode_delta(data) {
        // What load_index does next with a delta that decoded.
        let mut ix = Index::new();
        for p in &packs {
            ix.add_pack(p);
        }
    }
});

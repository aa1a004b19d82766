//! A blob's plaintext body (stored or LZ4), as opened from a pack.
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::repo::pack::{decode_blob_body, MAX_BLOB};

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = decode_blob_body(data) {
        assert!(raw.len() <= MAX_BLOB.max(data.len()));
    }
});

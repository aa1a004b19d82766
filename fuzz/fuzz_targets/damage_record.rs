//! A damage record's plaintext (`damage/<id>`, after the sealed envelope):
//! it decodes or fails, never panics, and what decodes is canonical (encodes
//! to the same bytes).
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::repo::damage::DamageRecord;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = DamageRecord::decode(data) {
        assert_eq!(r.encode(), data, "a damage record that decodes is canonical");
    }
});

//! age parsing and decryption of hostile bytes with a fixed X25519 identity
//! (pack headers, wrapped pack keys and metadata envelopes all go through it).
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::crypto::age_decrypt;
use secrate_fuzz::keys;

fuzz_target!(|data: &[u8]| {
    let _ = age_decrypt(keys().meta_identity(), data);
});

//! The keyring plaintext sealed inside a key object.
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::repo::keys::decode_keyring;

fuzz_target!(|data: &[u8]| {
    let _ = decode_keyring(data);
});

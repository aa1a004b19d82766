//! `keys/<id>`: the plaintext header of a key object.
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::repo::keys::KeyObject;

fuzz_target!(|data: &[u8]| {
    let _ = KeyObject::decode(data);
});

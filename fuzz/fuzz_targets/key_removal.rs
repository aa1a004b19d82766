//! `keys-removed/<id>`: a key removal record.
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::repo::keys::KeyRemoval;

fuzz_target!(|data: &[u8]| {
    let _ = KeyRemoval::decode(data);
});

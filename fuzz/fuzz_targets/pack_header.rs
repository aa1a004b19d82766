//! A decrypted pack header. Input: the pack's size (u64 LE), where its
//! header starts (u64 LE), then the header plaintext.
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::crypto::Id;
use secrate::repo::pack::decode_header;
use secrate_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let size = input.u64();
    let header_start = input.u64();
    let plain = input.rest();
    if let Ok(info) = decode_header(plain, Id([0; 32]), size, header_start) {
        for b in &info.blobs {
            assert!(b.offset as u64 + b.length as u64 <= header_start);
        }
    }
});

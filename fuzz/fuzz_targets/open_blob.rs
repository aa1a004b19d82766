//! One sealed blob opened with a fixed pack key. Input: the blob kind (low
//! bit of one byte), its 32-byte id, then the sealed bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::crypto::{BlobKind, Id};
use secrate::repo::pack::open_blob;
use secrate_fuzz::{keys, pack_key, Input};

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let kind = BlobKind::from_u8(input.u8() & 1).expect("0 or 1");
    let id = Id(input.array());
    let _ = open_blob(keys(), pack_key(), kind, &id, input.rest());
});

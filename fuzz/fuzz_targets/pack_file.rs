//! A whole pack file as a hostile store serves it, read the way
//! `Repository::read_pack_header` and `read_blob` read it: magic, trailer,
//! header range, age-encrypted header (fixed keyring), header, wrapped pack
//! key, then every blob it lists.
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::crypto::{age_decrypt, Id, PackKey};
use secrate::repo::pack::{check_magic, decode_header, header_range, open_blob, HEADER_OFFSET};
use secrate_fuzz::keys;

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let _ = check_magic(&data[..data.len().min(HEADER_OFFSET)]);
    let size = data.len() as u64;
    let Ok(range) = header_range(data, size) else {
        return;
    };
    assert!(range.start >= HEADER_OFFSET as u64 && range.start <= range.end);
    assert_eq!(range.end + 4, size);
    let header = &data[range.start as usize..range.end as usize];
    let Ok(plain) = age_decrypt(keys.meta_identity(), header) else {
        return;
    };
    let Ok(info) = decode_header(&plain, Id::of_object(data), size, range.start) else {
        return;
    };
    let Some(identity) = keys.pack_key_identity(info.kind) else {
        return;
    };
    let Ok(key) = age_decrypt(identity, &info.wrapped_key) else {
        return;
    };
    let Some(key) = PackKey::from_bytes(&key) else {
        return;
    };
    for b in &info.blobs {
        let sealed = &data[b.offset as usize..(b.offset as usize + b.length as usize)];
        let _ = open_blob(keys, &key, info.kind, &b.id, sealed);
    }
});

//! Round trips of the other objects with an encoder. The first byte picks
//! the kind; whatever decodes must encode to something that decodes to the
//! same value, and (every encoding but the inode record's is canonical) to
//! the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::flush::outbox::Item;
use secrate::live::record::Inode;
use secrate::repo::config::Config;
use secrate::repo::index::{decode_delta, encode_delta};
use secrate::repo::keys::KeyObject;
use secrate::repo::lock::LockInfo;
use secrate::repo::snapshot::Snapshot;

fn check<T: PartialEq + std::fmt::Debug, E>(
    data: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, E>,
    encode: impl Fn(&T) -> Vec<u8>,
    canonical: bool,
) {
    let Ok(v) = decode(data) else {
        return;
    };
    let enc = encode(&v);
    if canonical {
        assert_eq!(enc, data, "encode(decode(x)) != x");
    }
    match decode(&enc) {
        Ok(w) => assert_eq!(w, v, "decode(encode(v)) != v"),
        Err(_) => panic!("encode(decode(x)) does not decode"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else {
        return;
    };
    match which % 7 {
        0 => check(data, Snapshot::decode, Snapshot::encode, true),
        1 => check(data, LockInfo::decode, LockInfo::encode, true),
        2 => check(data, Item::decode, Item::encode, true),
        3 => check(data, Inode::decode, Inode::encode, false),
        4 => check(data, Config::decode, Config::encode, true),
        5 => check(data, KeyObject::decode, KeyObject::encode, true),
        _ => check(data, decode_delta, |p| encode_delta(p), true),
    }
});

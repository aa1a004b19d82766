//! An outbox item of the mount's cache (`meta.redb`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::flush::outbox::Item;

fuzz_target!(|data: &[u8]| {
    let _ = Item::decode(data);
});

//! The writer lock's plaintext (`locks/writer`), then its description.
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::repo::lock::LockInfo;

fuzz_target!(|data: &[u8]| {
    if let Ok(l) = LockInfo::decode(data) {
        let _ = l.describe();
    }
});

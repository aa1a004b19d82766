//! A snapshot's plaintext (`snapshots/<id>`), then what `secrate snapshots`
//! shows of it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::repo::snapshot::Snapshot;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Snapshot::decode(data) {
        let _ = s.time_rfc3339();
    }
});

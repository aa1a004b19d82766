//! The envelope of every metadata object (magic, version, age ciphertext to
//! the fixed keyring's metadata key), then the decoder of its kind, as
//! index deltas, snapshots and locks are read.
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::repo::{index, lock, sealed, snapshot};
use secrate_fuzz::keys;

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    if data.starts_with(snapshot::MAGIC) {
        if let Ok(p) = sealed::open_any(keys, snapshot::MAGIC, snapshot::VERSIONS, data) {
            let _ = snapshot::Snapshot::decode(&p);
        }
    } else if data.starts_with(lock::MAGIC) {
        if let Ok(p) = sealed::open(keys, lock::MAGIC, lock::VERSION, data) {
            let _ = lock::LockInfo::decode(&p);
        }
    } else if let Ok(p) = sealed::open(keys, index::MAGIC, index::VERSION, data) {
        let _ = index::decode_delta(&p);
    }
});

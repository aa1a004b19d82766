//! `keys-removed/<id>` and `snapshots-forgotten/<id>`: removal records
//! (one format, two kinds), and `snapshots-forgotten/set-<hash>`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::repo::removal::{ForgottenSet, Removal, Removed};

fuzz_target!(|data: &[u8]| {
    let _ = Removal::decode(Removed::Key, data);
    let _ = Removal::decode(Removed::Snapshot, data);
    let _ = ForgottenSet::decode(data);
});

//! `config`: the one plaintext object, read before any key is unlocked.
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::repo::config::Config;

fuzz_target!(|data: &[u8]| {
    let _ = Config::decode(data);
});

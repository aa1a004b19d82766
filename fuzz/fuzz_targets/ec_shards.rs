//! Erasure-coded shards as stores hold them, some of them of other
//! versions of the object or forged: `ec::verify` on each, then
//! `ec::rebuild` on the sound ones. Input: K, M (u8 each), then shards,
//! each as a u16 LE length and that many bytes (at most K+M of them, the
//! i-th at store i). Never a panic; a rebuilt object is as long as its
//! header says and, when verified, hashes to its digest.
#![no_main]
use libfuzzer_sys::fuzz_target;
use secrate::crypto::Id;
use secrate::store::ec::{self, EcParams};
use secrate_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let p = EcParams {
        k: input.u8(),
        m: input.u8(),
    };
    if p.validate().is_err() {
        return;
    }
    let mut raw: Vec<&[u8]> = Vec::new();
    let mut rest = input.rest();
    while raw.len() < p.total() && rest.len() >= 2 {
        let n = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        let n = n.min(rest.len() - 2);
        raw.push(&rest[2..2 + n]);
        rest = &rest[2 + n..];
    }
    let sound: Vec<ec::Shard<'_>> = raw
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            ec::verify(b)
                .ok()
                .filter(|s| s.header.params == p && s.header.index as usize == i)
        })
        .collect();
    for (a, b) in raw.iter().zip(raw.iter().skip(1)) {
        let _ = ec::same_shard(a, b);
    }
    if let Ok(r) = ec::rebuild(p, &sound) {
        assert!(sound.iter().any(|s| s.header.len == r.data.len() as u64));
        if r.verified {
            let d = Id::of_object(&r.data).0;
            assert!(sound.iter().any(|s| s.digest == Some(d)));
        }
    }
});

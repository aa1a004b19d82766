//! Helpers for the flusher's unit tests: one machine's cache over a
//! repository, as a mount would set it up (no FUSE, no threads).

use std::sync::Arc;

use crate::blobs::BlobReader;
use crate::flush::Flusher;
use crate::live::data::Times;
use crate::live::{Live, NewNode, ROOT};
use crate::repo::lock::WriterLock;
use crate::repo::Repository;

/// One machine's cache over the repository.
pub(crate) struct Machine {
    pub dir: tempfile::TempDir,
    pub live: Arc<Live>,
    pub reader: Arc<BlobReader>,
    pub flusher: Arc<Flusher>,
}

pub(crate) fn machine(repo: &Arc<Repository>) -> Machine {
    let dir = tempfile::tempdir().unwrap();
    open(dir, repo, None)
}

fn open(dir: tempfile::TempDir, repo: &Arc<Repository>, lock: Option<WriterLock>) -> Machine {
    let live = Arc::new(Live::open(dir.path()).unwrap());
    let reader = BlobReader::new(repo.clone(), dir.path(), 1 << 30).unwrap();
    let flusher =
        Flusher::new(live.clone(), reader.clone(), repo.clone(), lock, "t".into()).unwrap();
    Machine {
        dir,
        live,
        reader,
        flusher,
    }
}

impl Machine {
    /// The same cache started again over `repo` (a fresh view of the
    /// store), holding `lock`, as a mount after a stop would.
    pub fn restart(self, repo: &Arc<Repository>, lock: Option<WriterLock>) -> Machine {
        let Machine {
            dir,
            live,
            reader,
            flusher,
        } = self;
        flusher.stop();
        reader.stop();
        drop(flusher);
        drop(reader);
        live.commit(true).unwrap();
        drop(live);
        open(dir, repo, lock)
    }
}

pub(crate) fn mkfile(m: &Machine, name: &[u8], data: &[u8]) -> u64 {
    mkfile_in(m, ROOT, name, data)
}

pub(crate) fn mkfile_in(m: &Machine, dir: u64, name: &[u8], data: &[u8]) -> u64 {
    let (ino, _) = m
        .live
        .create_node(dir, name, NewNode::test_file(), false)
        .unwrap();
    m.live.write(ino, 0, data, Times::Now, &*m.reader).unwrap();
    ino
}

/// `n` bytes that do not compress or repeat (distinct chunks).
pub(crate) fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A second process's view of the same store.
pub(crate) fn reopen(r: &Repository) -> Arc<Repository> {
    let r = Repository::open(
        r.store().clone(),
        &crate::repo::Secret::Passphrase("pw".to_string().into()),
    )
    .unwrap();
    r.load_index().unwrap();
    Arc::new(r)
}

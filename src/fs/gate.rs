//! A reply gate, for a view of names the kernel caches (`.history`'s list
//! of snapshots, a read-only mount's live tree) that another thread
//! changes and then tells the kernel about (`inval_entry`, `inval_inode`).
//!
//! A request that hands the kernel names or inodes from the view holds the
//! gate shared until its reply is sent. The changing thread takes it
//! exclusively before it tells the kernel: every reply made from the old
//! view is in the kernel by then, so none lands after the invalidation and
//! caches a name that is gone. Replies made after see the new view.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

#[derive(Default)]
pub struct ReplyGate(RwLock<()>);

impl ReplyGate {
    /// Held by a request from before it reads the view until its reply is
    /// sent.
    pub fn answering(&self) -> RwLockReadGuard<'_, ()> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Held while the view changes: requests wait until it is dropped.
    pub fn closed(&self) -> RwLockWriteGuard<'_, ()> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until the replies under way are sent.
    pub fn drain(&self) {
        drop(self.closed());
    }
}

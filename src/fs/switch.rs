//! Moving a serving read-only mount's live tree to another snapshot.
//!
//! A read-only mount follows the store (`Flusher::start_following`); when
//! a newer snapshot appears, the mount makes it the live tree while the
//! kernel holds names, attributes and pages of the old one. The switch
//! changes only what differs (`live::diff`): a subtree with the same tree
//! id in both snapshots keeps its inodes and numbers, and with them what
//! the kernel caches for it (names, attributes, pages), which stays true.
//! An entry that changed, came or went gets a new number or none (the
//! counter never goes back), so nothing cached under an old number can
//! pass for new content; what the kernel must drop is what it holds under
//! numbers that stay: the changed names in kept directories and those
//! directories' attributes. Files open at the switch keep reading what
//! they opened.
//!
//! Order, and why: the switch takes `gate` exclusively, so every reply
//! made from the old tree (LOOKUP, READDIRPLUS hold the gate shared from
//! their look at the tree until their reply is sent) reaches the kernel
//! before the switch, and every later one sees the new tree. Only then,
//! holding nothing, it tells the kernel to drop the changed names: the
//! kernel may wait, while it handles that, for requests about those
//! directories that request threads must answer, so a lock they need held
//! here would deadlock. Between the two, for as long as the notifications
//! take, a name the kernel cached may still show the old tree: its
//! attributes, or the content of a file of the old tree that is still
//! open (kept). A request that reaches the mount with a number of the old
//! tree that is gone gets ESTALE (`SecrateFs::errno_about`), on which the
//! kernel walks the path again: a program never gets ENOENT for a name
//! every snapshot has.

use std::sync::{Arc, OnceLock};

use fuser::{INodeNo, Notifier};

use crate::blobs::BlobReader;
use crate::crypto::Id;
use crate::live::diff::switch_snapshot;
use crate::live::import::Import;
use crate::live::{Live, LiveResult};
use crate::repo::snapshot::Snapshot;

/// What a switch of the live tree needs from the filesystem.
pub struct LiveSwitch {
    pub(super) live: Arc<Live>,
    pub(super) reader: Arc<BlobReader>,
    pub(super) gate: Arc<super::gate::ReplyGate>,
    pub(super) notifier: Arc<OnceLock<Notifier>>,
}

impl LiveSwitch {
    /// Make snapshot `id` the live tree and tell the kernel. The caller
    /// makes sure nothing in the live tree is unsealed. On failure the live
    /// tree stays as it was.
    pub fn to_snapshot(&self, id: &Id, snap: &Snapshot) -> LiveResult<Import> {
        // Tree packs are fetched before the gate: requests wait only for
        // the switch itself.
        self.reader.fetch_tree_packs()?;
        let import = {
            let _g = self.gate.closed();
            let i = switch_snapshot(&self.live, &self.reader, id, snap)?;
            self.live.commit(true)?;
            i
        };
        if let Some(n) = self.notifier.get() {
            // The attributes (times, link count) of the directories kept,
            // and anything cached for them; then each changed name the
            // kernel may hold (a directory's drops what it cached below).
            // One it does not hold gives ENOENT: nothing to do.
            for dir in &import.changed_dirs {
                let _ = n.inval_inode(INodeNo(*dir), 0, 0);
            }
            for (dir, name) in &import.changed_names {
                let _ = n.inval_entry(
                    INodeNo(*dir),
                    std::os::unix::ffi::OsStrExt::from_bytes(name.as_slice()),
                );
            }
        }
        Ok(import)
    }
}

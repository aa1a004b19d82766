//! UPLOAD: outbox items to the store, in order, until none are left.

use std::sync::atomic::Ordering;
use std::time::Duration;

use redb::ReadableTable;

use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::flush::outbox::{self, Item, ItemKind};
use crate::flush::verify::Confirmed;
use crate::flush::{live_err, Flusher};
use crate::live::cache_err;
use crate::repo::pack::pack_id_from_name;

/// Packs uploaded at once.
const PARALLEL: usize = 4;

/// Passes over the outbox one `upload_pending` makes at most.
const MAX_PASSES: usize = 1000;

/// The longest wait between upload attempts while the store fails. Each
/// attempt already spends ~20 s retrying inside the store layer, so a store
/// that comes back is found within about 30 s; one failed burst of requests
/// per ~50 s costs nothing worth saving.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Flusher {
    pub(crate) fn upload_loop(&self) {
        let mut backoff = Duration::from_secs(1);
        loop {
            {
                let w = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
                let (mut w, _) = self
                    .wake
                    .1
                    .wait_timeout_while(w, Duration::from_secs(5), |woken| !*woken)
                    .unwrap_or_else(|e| e.into_inner());
                *w = false;
            }
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            match self.upload_pending() {
                Ok(()) => {
                    backoff = Duration::from_secs(1);
                    if let Err(e) = self.evict_to_budget() {
                        crate::log!("warning: evicting cached data: {e}");
                    }
                }
                Err(e) => {
                    crate::log!("warning: upload: {e} (retrying in {} s)", backoff.as_secs());
                    // A new seal, `secrate snapshot` or the unmount (a kick)
                    // ends the wait early; the flag stays set, so the wait
                    // at the top of the loop returns at once and clears it.
                    let w = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = self
                        .wake
                        .1
                        .wait_timeout_while(w, backoff, |woken| !*woken)
                        .unwrap_or_else(|e| e.into_inner());
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Upload everything in the outbox now, in order. Stops at the first
    /// failure (the next call resumes there). An item found damaged is set
    /// aside and replaced, and a snapshot confirmed whole first where
    /// something may have taken what it names (src/flush/verify.rs); then
    /// the outbox is read again.
    pub fn upload_pending(&self) -> Result<()> {
        let _one = self.upload_mutex.lock().unwrap_or_else(|e| e.into_inner());
        // Each pass that starts again removed or replaced an item; a disk
        // that damages every file written to it would go on for ever.
        for _ in 0..MAX_PASSES {
            if !self.upload_run()? {
                return Ok(());
            }
        }
        let e = Error::Invalid(format!(
            "the outbox changed under {MAX_PASSES} upload passes in a row (damaged items set \
             aside and replaced): the cache disk may be failing"
        ));
        self.record_err(&e);
        Err(e)
    }

    /// One pass over the outbox; true if it changed under the pass (start
    /// again).
    fn upload_run(&self) -> Result<bool> {
        let items = self.live.tx(|tx| outbox::items(tx)).map_err(live_err)?;
        let mut i = 0;
        while i < items.len() {
            // A run of packs goes up in parallel; index deltas and snapshots
            // wait for everything before them.
            let mut j = i;
            while j < items.len() && j - i < PARALLEL && items[j].1.kind == ItemKind::Pack {
                j += 1;
            }
            if j == i {
                j = i + 1;
            }
            let batch = &items[i..j];
            let mut again = false;
            if let [(seq, item)] = batch {
                if item.kind == ItemKind::Snapshot {
                    match self.confirm_snapshot(*seq, item) {
                        Ok(Confirmed::Untouched) => {}
                        Ok(Confirmed::Whole) => again = true,
                        Ok(Confirmed::Refused) => return Ok(true),
                        Err(e) => {
                            self.record_err(&e);
                            return Err(e);
                        }
                    }
                }
            }
            let results: Vec<Result<()>> = std::thread::scope(|s| {
                let hs: Vec<_> = batch
                    .iter()
                    .map(|(_, item)| s.spawn(move || self.upload_item(item)))
                    .collect();
                hs.into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(Error::Invalid("an upload thread panicked".into()))
                        })
                    })
                    .collect()
            });
            for ((seq, item), r) in batch.iter().zip(&results) {
                match r {
                    Ok(()) => self.finish_item(*seq, item)?,
                    Err(Error::OutboxDamaged { .. }) => {
                        self.set_aside_damaged(*seq, item)?;
                        again = true;
                    }
                    Err(_) => {}
                }
            }
            let failed = results.into_iter().find(|r| {
                r.as_ref()
                    .is_err_and(|e| !matches!(e, Error::OutboxDamaged { .. }))
            });
            if let Some(Err(e)) = failed {
                self.record_err(&e);
                return Err(e);
            }
            self.record_ok();
            if again {
                return Ok(true);
            }
            i = j;
        }
        Ok(false)
    }

    pub(crate) fn upload_item(&self, item: &Item) -> Result<()> {
        if item.kind == ItemKind::Snapshot {
            self.check_lock()?;
        }
        let path = outbox::file_for(self.live.dir(), &item.name);
        self.repo.put_sealed(&item.name, &path)
    }

    pub(crate) fn finish_item(&self, seq: u64, item: &Item) -> Result<()> {
        let snap_id = item.name.strip_prefix("snapshots/").and_then(Id::from_hex);
        self.live
            .tx(|tx| {
                outbox::remove(tx, seq)?;
                match item.kind {
                    // A stored pack stays listed until an index delta in the
                    // store lists it: until then a restarted mount finds its
                    // blobs only through this table.
                    ItemKind::Pack => {}
                    ItemKind::Index => {
                        let waiting: std::collections::HashSet<Id> = outbox::items(tx)?
                            .iter()
                            .filter(|(_, i)| i.kind == ItemKind::Pack)
                            .filter_map(|(_, i)| pack_id_from_name(&i.name))
                            .collect();
                        let mut t = tx
                            .txn()
                            .open_table(outbox::OUTBOX_PACKS)
                            .map_err(cache_err)?;
                        let mut done = Vec::new();
                        for r in t.iter().map_err(cache_err)? {
                            let (k, _) = r.map_err(cache_err)?;
                            let id = Id(k.value().try_into().map_err(cache_err)?);
                            if !waiting.contains(&id) {
                                done.push(id);
                            }
                        }
                        for id in done {
                            t.remove(&id.0[..]).map_err(cache_err)?;
                        }
                    }
                    ItemKind::Snapshot => {
                        if let Some(id) = snap_id {
                            let mut t = tx
                                .txn()
                                .open_table(outbox::PENDING_SNAPSHOTS)
                                .map_err(cache_err)?;
                            t.remove(&id.0[..]).map_err(cache_err)?;
                        }
                        let up = tx.state_u64("uploaded_gen")?.max(item.gen);
                        tx.set_state_u64("uploaded_gen", up)?;
                    }
                }
                Ok(())
            })
            .map_err(live_err)?;
        // Durable before the file goes: a crash must not bring back an
        // item whose file is gone (it could never be uploaded again).
        self.live.commit(true).map_err(live_err)?;
        if let Some(id) = pack_id_from_name(&item.name) {
            self.reader.remove_outbox(&id);
        }
        if let Some(id) = snap_id {
            let mut snaps = self.snapshots.write().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = snaps.iter_mut().find(|s| s.id == id) {
                s.uploaded = true;
            }
        }
        let _ = std::fs::remove_file(outbox::file_for(self.live.dir(), &item.name));
        self.notify_progress();
        Ok(())
    }
}

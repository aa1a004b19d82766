//! Leaving stores out of a replicated set (`secrate sync --leave-out`).
//!
//! The one-URL form follows the `stores` object, so a set could grow or be
//! replaced from the command line but never shrink to one store. Here the
//! set is shrunk only after every store that stays is seen to hold every
//! object (names and sizes, or every copy read with `read_data`); then the
//! left-out stores that answer lose their `stores` object first (each
//! becomes a plain copy, no longer naming the set), and last the stores
//! that stay get the new list (none when one stays: a single store has no
//! `stores` object). Stopped at any point, every store that stays still
//! opens the whole repository, and running it again finishes the job.

use super::layout::{self, Mode};
use super::{normalize, Slot, Store};
use crate::error::{Error, Result};

/// What `leave_out` did (or, with `dry_run`, would do).
#[derive(Debug, Default)]
pub struct LeaveReport {
    /// The stores that stay, in order.
    pub kept: Vec<String>,
    /// The stores left out, and whether their `stores` object was removed
    /// (false: the store did not answer; it is left as it was).
    pub left: Vec<(String, bool)>,
}

impl Store {
    /// Leave the stores `urls` out of this replicated set (see the module
    /// comment). Errors, changing nothing, if a URL is not in the set, if
    /// no store would stay, for erasure coding, or if a store that stays
    /// misses or holds damaged any object.
    pub fn leave_out(
        &self,
        urls: &[String],
        read_data: bool,
        dry_run: bool,
    ) -> Result<LeaveReport> {
        let set = self.layout().describe();
        let out: Vec<String> = urls.iter().map(|u| normalize(u)).collect::<Result<_>>()?;
        match self.mode {
            Mode::Replicas => {}
            Mode::Single => {
                return Err(Error::Invalid(format!(
                    "{} is a single store: there is no other store to leave out",
                    self.url
                )))
            }
            Mode::Ec(p) => {
                return Err(Error::Invalid(format!(
                    "the repository is erasure-coded {p} ({set}): every store holds a shard, so none can be left out; replace a store instead (docs/DURABILITY.md)"
                )))
            }
        }
        for u in &out {
            if !self.slots.iter().any(|s| &s.url == u) {
                return Err(Error::Invalid(format!(
                    "{u} is not one of this repository's stores ({set})"
                )));
            }
        }
        let (left, kept): (Vec<&Slot>, Vec<&Slot>) =
            self.slots.iter().partition(|s| out.contains(&s.url));
        if kept.is_empty() {
            return Err(Error::Invalid(format!(
                "leaving out every store ({set}) would leave the repository nowhere: keep at least one"
            )));
        }
        let audit = self.audit(read_data)?;
        for r in audit.stores.iter().filter(|r| !out.contains(&r.url)) {
            let why = if let Some(why) = r.unavailable.as_ref().or(r.gone.as_ref()) {
                format!("cannot be read ({why})")
            } else if !(r.missing.is_empty() && r.corrupt.is_empty() && r.removed.is_empty()) {
                format!(
                    "misses {} and holds {} damaged of {} objects",
                    r.missing.len(),
                    r.corrupt.len(),
                    audit.objects
                )
            } else {
                continue;
            };
            return Err(Error::Invalid(format!(
                "the store {} that would stay {why}: run `secrate sync` first (nothing was changed)",
                r.url
            )));
        }
        // An object a removal record names that a store left out holds
        // and a store that stays lacks: lost with that store if the record
        // is forged (no key checks it here), and no store that stays
        // "misses" it. `sync` deletes it (record checked) or copies it.
        if let Some((r, n)) = audit
            .stores
            .iter()
            .filter(|r| out.contains(&r.url))
            .find_map(|r| r.removed.first().map(|n| (r, n)))
        {
            return Err(Error::Invalid(format!(
                "the store {} that would be left out holds {n}, which a removal record names and a store that stays lacks: run `secrate sync` first (nothing was changed)",
                r.url
            )));
        }
        let mut report = LeaveReport {
            kept: kept.iter().map(|s| s.url.clone()).collect(),
            left: Vec::new(),
        };
        for s in left {
            let gone = match s.b(layout::NAME) {
                Ok(_) if !s.present() => false,
                Ok(b) if !dry_run => b.delete(layout::NAME).is_ok(),
                Ok(_) => true,
                Err(_) => false,
            };
            report.left.push((s.url.clone(), gone));
        }
        if dry_run {
            return Ok(report);
        }
        if let [one] = kept.as_slice() {
            one.b(layout::NAME)?.delete(layout::NAME)?;
        } else {
            let slots = kept.into_iter().cloned().collect();
            Store::from_slots(Mode::Replicas, slots).record_layout()?;
        }
        Ok(report)
    }
}

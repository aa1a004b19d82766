//! `secrate unlock`: remove the writer lock of a writer that is gone. A
//! mount that stopped without unmounting keeps its lock until a mount of
//! the same cache uploads what it sealed (see `repo/lock.rs`); when that
//! cache is gone for good, this gives its snapshots up and frees the
//! repository for other writers.

use super::Globals;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(g: &Globals, _a: Args) -> anyhow::Result<i32> {
    let repo = g.open_repo()?;
    match repo.unlock()? {
        None => outln!("the repository is not locked")?,
        Some(held) => {
            outln!("removed the lock of {}", held.describe())?;
            if !held.outbox.is_empty() {
                outln!(
                    "snapshots that mount sealed but did not upload (outbox {}) are no longer \
                     protected: a prune may remove data they need",
                    held.outbox
                )?;
            }
        }
    }
    Ok(0)
}

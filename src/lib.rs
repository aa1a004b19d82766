//! secrate: a filesystem with its whole history inside it.
//!
//! Layers, top to bottom (dependencies point downward only):
//! `ops` (backup, restore, check) → `repo` (the format: packs, index, trees,
//! snapshots, keys, locks) → `crypto` / `chunk` → `store` (object stores by
//! URL). The CLI (`src/cli`, binary only) is the one place that prints.

pub mod blobs;
pub mod chunk;
pub mod control;
pub mod crypto;
pub mod deep;
pub mod error;
pub mod flush;
pub mod fs;
pub mod fsat;
pub mod fsmeta;
pub mod live;
#[macro_use]
pub mod log;
pub mod mount;
pub mod ops;
pub mod progress;
pub mod repo;
pub mod space;
pub mod store;
pub mod uncached;

pub use error::{Error, Result};

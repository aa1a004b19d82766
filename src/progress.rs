//! Progress reporting as an interface the core calls and the CLI draws.
//!
//! The library never prints. Long operations take a `&dyn Progress`; the CLI
//! implements it with bars on a terminal, tests and scripts pass `Quiet`.

pub trait Progress: Send + Sync {
    /// A phase starts; `total` in bytes when known.
    fn start(&self, _phase: &str, _total: Option<u64>) {}
    /// `bytes` more are done.
    fn advance(&self, _bytes: u64) {}
    /// Something went wrong but the operation goes on.
    fn warn(&self, _message: &str) {}
    /// The phase is over.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct Quiet;

impl Progress for Quiet {}

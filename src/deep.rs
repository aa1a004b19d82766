//! Stacks deep enough for deep trees.
//!
//! Trees are walked recursively: backup, restore, check, the seal and a
//! mount's import go one stack frame (or a few) per directory level. A
//! thread's default 2 MiB ran out at about 1,000 levels in backup (a real
//! directory that deep aborted the process), and a mount takes directories
//! as deep as anyone makes them. Threads that walk trees get this much
//! stack instead: address space only, memory is used as far as a walk goes
//! down (a few KiB per level: backup's walk takes about 4.8 KiB in a release
//! build), so 256 MiB is room for about 50,000 levels. Backup and restore
//! check what is left before each level down and stop there with an error.

use crate::{Error, Result};

pub const STACK: usize = 256 << 20;

/// Run `f` on a thread with a deep stack and wait for it; a panic in `f`
/// goes on in the caller.
pub fn run<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|s| {
        let name = std::thread::current()
            .name()
            .unwrap_or("secrate-deep")
            .to_string();
        let h = std::thread::Builder::new()
            .name(name)
            .stack_size(STACK)
            .spawn_scoped(s, f)
            .map_err(|e| Error::Invalid(format!("cannot start a thread: {e}")))?;
        Ok(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })
}

/// A rayon pool of `threads` threads with deep stacks.
pub fn pool(threads: usize, name: &'static str) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .stack_size(STACK)
        .thread_name(move |i| format!("{name}{i}"))
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start {name} threads: {e}")))
}

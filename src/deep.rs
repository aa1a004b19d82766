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

/// Stack a walk leaves unused below the directory it stops at: room for
/// what is done below the last level entered (reading, chunking and sealing
/// a file, storing a tree), with a wide margin. A level takes about 4.8 KiB
/// (a release build), so a walk stops at about 54,000 levels on the
/// reading threads' 256 MiB (`crate::deep`); the open files limit (one
/// handle per level) often stops it first.
pub const STACK_RESERVE: usize = 4 << 20;

/// Bytes of stack left to the calling thread below the current frame;
/// `None` if the thread's stack cannot be asked for. Its bounds are asked
/// once per thread. The walk checks it before going a level down, so a
/// tree deeper than the stack is a reported error, never a crash.
pub fn stack_left() -> Option<usize> {
    thread_local! {
        static LOW: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    }
    let low = match LOW.get() {
        Some(low) => low,
        None => {
            let low = stack_low()?;
            LOW.set(Some(low));
            low
        }
    };
    let here = 0u8;
    // Stacks grow down on every target this builds for.
    Some((std::ptr::addr_of!(here) as usize).saturating_sub(low))
}

/// The lowest address of the calling thread's stack, its guard pages
/// left out (glibc leaves them out already; counted twice, to be safe).
#[cfg(target_os = "linux")]
fn stack_low() -> Option<usize> {
    // SAFETY: `attr` is filled by pthread_getattr_np before it is read
    // and destroyed once; the other pointers are to locals.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let mut guard: libc::size_t = 0;
        let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0
            && libc::pthread_attr_getguardsize(&attr, &mut guard) == 0;
        libc::pthread_attr_destroy(&mut attr);
        ok.then(|| addr as usize + guard)
    }
}

#[cfg(not(target_os = "linux"))]
fn stack_low() -> Option<usize> {
    None
}

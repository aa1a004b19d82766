//! The `secrate` command.

mod cli;

fn main() {
    limit_malloc_arenas();
    // Commands walk trees recursively (check, ls, forget, prune...): the
    // whole command runs on a deep stack (see `secrate::deep`).
    let code = secrate::deep::run(cli::run).unwrap_or_else(|e| {
        // Not `eprintln!`, which panics when stderr fails.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "secrate: {e}");
        1
    });
    std::process::exit(code);
}

/// glibc's malloc gives each thread that contends for it an arena of its
/// own, up to 8 per core, and memory freed in one arena is not reused by
/// the others. A mount's threads (FUSE, seal, upload, read-ahead, rayon)
/// take turns allocating and freeing cache entries, so the arenas
/// fragment: a 12-minute soak (scripts/soak.sh, docs/benchmarks.md) leveled
/// off at 440-490 MiB resident for a heap of about 180 MiB, and at
/// 165-190 MiB with two arenas. `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` in the
/// environment still decide, for whoever wants to tune it.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned = std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
        if !tuned {
            // SAFETY: mallopt only sets a malloc parameter; called first
            // thing in main, before any other thread exists.
            unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
        }
    }
}

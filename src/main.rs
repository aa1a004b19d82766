//! The `secrate` command.

mod cli;

fn main() {
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

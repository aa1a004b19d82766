//! The mount's log: one timestamped line per event on stderr, which a
//! background mount redirects to `mount.log` in its cache directory.
//! (Commands print through the CLI; only the long-running mount logs.)

/// Never fails and never panics: a log that cannot be written (a terminal
/// hung up, a full disk under `mount.log`, `2>/dev/full`) loses the line,
/// and the mount goes on (its unmount and last upload most of all).
pub fn line(msg: std::fmt::Arguments) {
    use std::io::Write;
    let now = crate::repo::lock::now_ns();
    let _ = writeln!(
        std::io::stderr(),
        "{} {msg}",
        crate::repo::snapshot::format_time(now)
    );
}

/// `log!("…", args)`: a timestamped line in the mount's log.
#[macro_export]
macro_rules! log {
    ($($t:tt)*) => { $crate::log::line(format_args!($($t)*)) };
}

#[cfg(test)]
mod tests {
    /// A log line written to a stderr that fails (here `/dev/full`) is
    /// lost, not a panic. Runs itself again in a child process, whose
    /// stderr is `/dev/full` and whose output the harness does not capture.
    #[test]
    fn logging_to_a_failing_stderr_does_not_panic() {
        const NAME: &str = "log::tests::logging_to_a_failing_stderr_does_not_panic";
        if std::env::var_os("SECRATE_TEST_LOG_CHILD").is_some() {
            crate::log!("a line nobody can read");
            return;
        }
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            eprintln!("SKIPPED: no /dev/full");
            return;
        };
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env("SECRATE_TEST_LOG_CHILD", "1")
            .stderr(full)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{}: {stdout}",
            out.status
        );
    }
}

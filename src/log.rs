//! The mount's log: one timestamped line per event on stderr, which a
//! background mount redirects to `mount.log` in its cache directory.
//! (Commands print through the CLI; only the long-running mount logs.)

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

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
    rotate_if_big();
}

/// The log file stderr writes to, and the size past which it is rotated.
static ROTATE: OnceLock<(PathBuf, u64)> = OnceLock::new();

/// A mount logs for as long as it runs, for months maybe (an upload
/// retried through a week offline, retention each minute): its log must
/// not grow without bound outside `--cache-size`. Once stderr (the file
/// `path`) holds `limit` bytes, it becomes `path.1` (replacing the one
/// before) and a new `path` is started: at most twice `limit` on disk.
pub fn rotate_at(path: PathBuf, limit: u64) {
    let _ = ROTATE.set((path, limit));
}

fn rotate_if_big() {
    static ROTATING: Mutex<()> = Mutex::new(());
    let Some((path, limit)) = ROTATE.get() else {
        return;
    };
    let size = || {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        (unsafe { libc::fstat(2, &mut st) } == 0).then_some(st.st_size as u64)
    };
    if size().is_none_or(|s| s < *limit) {
        return;
    }
    let _one = ROTATING.lock().unwrap_or_else(|e| e.into_inner());
    if size().is_none_or(|s| s < *limit) {
        return;
    }
    let mut old = path.clone().into_os_string();
    old.push(".1");
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::rename(path, &old).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
    });
    // Failing, the log goes on in the file it was (renamed or not).
    if let Ok(f) = opened {
        use std::os::fd::AsRawFd;
        unsafe { libc::dup2(f.as_raw_fd(), 2) };
    }
}

/// `log!("…", args)`: a timestamped line in the mount's log.
#[macro_export]
macro_rules! log {
    ($($t:tt)*) => { $crate::log::line(format_args!($($t)*)) };
}

/// `1 snapshot`, `3 snapshots`: a count and its noun, plural unless the
/// count is one (a noun ending in a consonant and `y` takes `ies`).
pub fn count<N: Copy + std::fmt::Display + PartialEq + From<u8>>(n: N, noun: &str) -> String {
    if n == N::from(1) {
        return format!("{n} {noun}");
    }
    match noun.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'i', 'o', 'u']) => format!("{n} {stem}ies"),
        _ => format!("{n} {noun}s"),
    }
}

/// The word of two that agrees with a count: `agree(n, "is", "are")`.
pub fn agree<'a, N: PartialEq + From<u8>>(n: N, one: &'a str, many: &'a str) -> &'a str {
    if n == N::from(1) {
        one
    } else {
        many
    }
}

#[cfg(test)]
mod tests {
    /// A log past its limit is rotated: every line lands in `mount.log` or
    /// `mount.log.1`, each at most a line past the limit, the oldest
    /// lines dropped with the file before. Runs itself again in a child
    /// process, whose stderr is the log.
    #[test]
    fn a_big_log_is_rotated() {
        const NAME: &str = "log::tests::a_big_log_is_rotated";
        const LIMIT: u64 = 10_000;
        if let Some(path) = std::env::var_os("SECRATE_TEST_ROTATE_CHILD") {
            super::rotate_at(path.into(), LIMIT);
            for i in 0..1000 {
                crate::log!("line {i:04} of a log that would grow for ever");
            }
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mount.log");
        let log = std::fs::File::create(&path).unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env("SECRATE_TEST_ROTATE_CHILD", &path)
            .stderr(log)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let now = std::fs::read_to_string(&path).unwrap();
        let before = std::fs::read_to_string(dir.path().join("mount.log.1")).unwrap();
        for (name, text) in [("mount.log", &now), ("mount.log.1", &before)] {
            assert!(
                text.len() as u64 <= LIMIT + 100,
                "{name}: {} bytes",
                text.len()
            );
        }
        assert!(now.contains("line 0999 "), "{now}");
        // The two files hold the last lines, in order, none lost between.
        let lines: Vec<&str> = before.lines().chain(now.lines()).collect();
        let numbers: Vec<u32> = lines
            .iter()
            .filter_map(|l| l.split("line ").nth(1)?.get(..4)?.parse().ok())
            .collect();
        assert!(numbers.len() > 100, "{lines:?}");
        let first = numbers[0];
        assert_eq!(numbers, (first..1000).collect::<Vec<u32>>());
    }

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

//! The mount's log: one timestamped line per event on stderr, which a
//! background mount redirects to `mount.log` in its cache directory.
//! (Commands print through the CLI; only the long-running mount logs.)

pub fn line(msg: std::fmt::Arguments) {
    let now = crate::repo::lock::now_ns();
    eprintln!("{} {msg}", crate::repo::snapshot::format_time(now));
}

/// `log!("…", args)`: a timestamped line in the mount's log.
#[macro_export]
macro_rules! log {
    ($($t:tt)*) => { $crate::log::line(format_args!($($t)*)) };
}

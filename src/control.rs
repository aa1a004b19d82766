//! The control socket of a running mount: how `secrate umount`, `snapshot`
//! and `status` talk to the process serving a mountpoint.
//!
//! One JSON request per connection, answered by JSON lines: zero or more
//! `progress` events, then one `done` or `error`. The socket lives in the
//! cache directory (0700); the mount's source name in /proc/self/mountinfo
//! (`secrate:<cache dir>`) leads a client from a mountpoint to it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const SOCKET: &str = "control.sock";
pub const FSNAME_PREFIX: &str = "secrate:";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Forget the outbox problems listed (those `status` showed).
    ClearProblems {
        seen: Vec<String>,
    },
    Snapshot {
        wait: bool,
    },
    Umount,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Progress {
        pending_objects: u64,
        pending_bytes: u64,
        error: Option<String>,
        phase: String,
    },
    Sealed {
        id: Option<String>,
    },
    Status {
        status: serde_json::Value,
    },
    /// Outbox problems forgotten and damaged items deleted.
    Cleared {
        problems: u64,
        items: u64,
    },
    Done,
    Error {
        message: String,
    },
}

pub fn send(stream: &mut UnixStream, e: &Event) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(e).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// Undo mountinfo's octal escapes (`\040` is a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every secrate mount: its mount point and its cache directory.
fn secrate_mounts() -> Result<Vec<(PathBuf, PathBuf)>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("/proc/self/mountinfo", e))?;
    let mut mounts = Vec::new();
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < dash + 3 || fields.len() < 5 {
            continue;
        }
        let point = unescape(fields[4]);
        let source = unescape(fields[dash + 2]);
        if let Some(dir) = source.strip_prefix(FSNAME_PREFIX) {
            mounts.push((PathBuf::from(point), PathBuf::from(dir)));
        }
    }
    Ok(mounts)
}

/// `path` made canonical, or where it cannot be (a path through a mount
/// whose process is gone answers nothing) absolute.
fn full_path(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// The mount point of the secrate mount that `path` is, or is inside of
/// (the innermost); `None` if there is none (or no `/proc`).
pub fn mount_holding(path: &Path) -> Option<PathBuf> {
    let path = full_path(path);
    secrate_mounts()
        .ok()?
        .into_iter()
        .map(|(point, _)| point)
        .filter(|point| path.starts_with(point))
        .max_by_key(|point| point.as_os_str().len())
}

/// The cache directory of the secrate mount at `mountpoint`.
pub fn cache_dir_of(mountpoint: &Path) -> Result<PathBuf> {
    let mp = full_path(mountpoint);
    let mut enclosing: Option<PathBuf> = None;
    for (point, dir) in secrate_mounts()? {
        if point == mp {
            return Ok(dir);
        }
        if mp.starts_with(&point)
            && enclosing
                .as_ref()
                .is_none_or(|e| point.as_os_str().len() > e.as_os_str().len())
        {
            enclosing = Some(point);
        }
    }
    // `cd ~/secrate/project && secrate snapshot .` is a natural thing to try.
    if let Some(point) = enclosing {
        let point = point.display();
        return Err(Error::Invalid(format!(
            "{} is inside the secrate mount at {point}, not a mount itself: give {point}",
            mountpoint.display()
        )));
    }
    Err(Error::Invalid(format!(
        "{} is not a secrate mount",
        mountpoint.display()
    )))
}

/// Send `req` to the mount at `mountpoint`; `on_event` sees every event.
/// Returns Ok when the mount answers `done`.
pub fn call(mountpoint: &Path, req: &Request, on_event: &mut dyn FnMut(&Event)) -> Result<()> {
    let sock = cache_dir_of(mountpoint)?.join(SOCKET);
    let mut s = UnixStream::connect(&sock).map_err(|e| {
        Error::Invalid(format!(
            "cannot reach the secrate process serving {} ({e}); it may have died: unmount with `fusermount3 -uz {}` and mount again",
            mountpoint.display(),
            mountpoint.display()
        ))
    })?;
    let mut line = serde_json::to_vec(req).map_err(|e| Error::Invalid(e.to_string()))?;
    line.push(b'\n');
    s.write_all(&line).map_err(|e| Error::io(&sock, e))?;
    for line in BufReader::new(s).lines() {
        let line = line.map_err(|e| Error::io(&sock, e))?;
        let ev: Event = serde_json::from_str(&line)
            .map_err(|e| Error::Invalid(format!("bad answer from the mount: {e}")))?;
        on_event(&ev);
        match ev {
            Event::Done => return Ok(()),
            Event::Error { message } => return Err(Error::Invalid(message)),
            _ => {}
        }
    }
    Err(Error::Invalid(format!(
        "the secrate process serving {} stopped before answering",
        mountpoint.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("plain"), "plain");
        assert_eq!(unescape("end\\04"), "end\\04");
    }

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Status,
            Request::ClearProblems {
                seen: vec!["a".into(), "b c".into()],
            },
            Request::Snapshot { wait: true },
            Request::Umount,
        ] {
            let s = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        }
    }
}

//! Snapshot objects (`snapshots/<id>`): one point in time of one source.
//!
//! A snapshot names its root tree and carries what `secrate snapshots` shows
//! (time, host, source, counts). It is written last, after every pack and
//! index delta it depends on, so a snapshot in the store is always complete.

use crate::crypto::Id;
use crate::repo::codec::{bad, Dec, DecodeResult, Enc};
use crate::repo::tree::Timestamp;

pub const MAGIC: &[u8; 7] = b"SECRATS";
pub const VERSION: u8 = 1;

pub fn snapshot_name(id: &Id) -> String {
    format!("snapshots/{}", id.to_hex())
}

/// Who made a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Origin {
    Backup = 0,
    Mount = 1,
}

/// Attributes of the snapshot's root directory itself (its entries are in
/// the root tree; the directory has no parent tree to hold these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RootMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Nanoseconds since the Unix epoch, UTC.
    pub time_ns: i64,
    pub host: String,
    pub user: String,
    /// The backed-up directory, or the mount's label.
    pub source: String,
    pub origin: Origin,
    pub root: Id,
    pub root_meta: RootMeta,
    pub parent: Option<Id>,
    pub files: u64,
    pub dirs: u64,
    /// Logical bytes of all files.
    pub bytes: u64,
    /// Bytes this snapshot added to the store (sealed packs).
    pub added_bytes: u64,
    pub tags: Vec<String>,
}

/// At most 65535 bytes, cut at a character boundary (the field is UTF-8).
fn short_str(s: &str) -> &[u8] {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s.as_bytes()[..end]
}

#[cfg(test)]
impl Snapshot {
    /// A snapshot of `root` for tests: host "h", user "u", source "/s",
    /// nothing counted.
    pub fn test(time_ns: i64, origin: Origin, root: Id) -> Snapshot {
        Snapshot {
            time_ns,
            host: "h".into(),
            user: "u".into(),
            source: "/s".into(),
            origin,
            root,
            root_meta: Default::default(),
            parent: None,
            files: 0,
            dirs: 0,
            bytes: 0,
            added_bytes: 0,
            tags: vec![],
        }
    }
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::with_capacity(256);
        e.i64(self.time_ns)
            .bytes16(short_str(&self.host))
            .bytes16(short_str(&self.user))
            .bytes16(short_str(&self.source))
            .u8(self.origin as u8)
            .raw(&self.root.0)
            .u32(self.root_meta.mode)
            .u32(self.root_meta.uid)
            .u32(self.root_meta.gid)
            .i64(self.root_meta.mtime.secs)
            .u32(self.root_meta.mtime.nanos);
        match &self.parent {
            Some(p) => e.u8(1).raw(&p.0),
            None => e.u8(0),
        };
        e.u64(self.files)
            .u64(self.dirs)
            .u64(self.bytes)
            .u64(self.added_bytes)
            .u32(self.tags.len() as u32);
        for t in &self.tags {
            e.bytes16(short_str(t));
        }
        e.finish()
    }

    pub fn decode(b: &[u8]) -> DecodeResult<Snapshot> {
        let mut d = Dec::new(b);
        let time_ns = d.i64()?;
        let host = d.string16()?;
        let user = d.string16()?;
        let source = d.string16()?;
        let origin = match d.u8()? {
            0 => Origin::Backup,
            1 => Origin::Mount,
            o => return bad(format!("unknown origin {o}")),
        };
        let root = Id(d.array()?);
        let root_meta = RootMeta {
            mode: d.u32()?,
            uid: d.u32()?,
            gid: d.u32()?,
            mtime: Timestamp {
                secs: d.i64()?,
                nanos: d.u32()?,
            },
        };
        if root_meta.mode & !0o7777 != 0 || root_meta.mtime.nanos >= 1_000_000_000 {
            return bad("root attributes out of range");
        }
        let parent = match d.u8()? {
            0 => None,
            1 => Some(Id(d.array()?)),
            _ => return bad("bad parent flag"),
        };
        let (files, dirs, bytes, added_bytes) = (d.u64()?, d.u64()?, d.u64()?, d.u64()?);
        let n = d.count(2)?;
        let mut tags = Vec::with_capacity(n);
        for _ in 0..n {
            tags.push(d.string16()?);
        }
        d.finish()?;
        Ok(Snapshot {
            time_ns,
            host,
            user,
            source,
            origin,
            root,
            root_meta,
            parent,
            files,
            dirs,
            bytes,
            added_bytes,
            tags,
        })
    }

    /// RFC 3339 UTC with seconds, e.g. `2026-11-22T17:45:03Z`.
    pub fn time_rfc3339(&self) -> String {
        format_time(self.time_ns)
    }
}

/// Like [`format_time`], from seconds: a file's mtime may lie past 2262,
/// where nanoseconds overflow an i64. Beyond the years ±9999 it is
/// `@SECONDS`.
pub fn format_secs(secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => t
            .format(&time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .unwrap_or_else(|_| format!("@{secs}")),
        Err(_) => format!("@{secs}"),
    }
}

pub fn format_time(time_ns: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(time_ns as i128)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample() -> Snapshot {
        Snapshot {
            time_ns: 1_000_000_000,
            host: "h".into(),
            user: "u".into(),
            source: "/s".into(),
            origin: Origin::Backup,
            root: Id([1; 32]),
            root_meta: RootMeta {
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: Timestamp { secs: 2, nanos: 0 },
            },
            parent: None,
            files: 2,
            dirs: 3,
            bytes: 4,
            added_bytes: 5,
            tags: vec!["t".into()],
        }
    }

    #[test]
    fn test_vector() {
        let b = sample().encode();
        let expect = [
            "00ca9a3b00000000", // time
            "010068",
            "010075",
            "0200",
            "2f73", // host, user, source
            "00",   // origin
            "0101010101010101010101010101010101010101010101010101010101010101",
            "ed010000",
            "00000000",
            "00000000",
            "0200000000000000",
            "00000000", // root attributes
            "00",       // no parent
            "0200000000000000",
            "0300000000000000",
            "0400000000000000",
            "0500000000000000",
            "01000000",
            "010074", // tags
        ]
        .concat();
        assert_eq!(hex::encode(&b), expect);
        assert_eq!(Snapshot::decode(&b).unwrap(), sample());
        assert_eq!(sample().time_rfc3339(), "1970-01-01T00:00:01Z");
    }

    #[test]
    fn long_strings_are_cut_on_char_boundaries() {
        let mut s = sample();
        s.source = "é".repeat(40_000);
        let d = Snapshot::decode(&s.encode()).unwrap();
        assert!(d.source.len() <= 65535 && d.source.chars().all(|c| c == 'é'));
    }

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Snapshot::decode(&b);
        }
    }
}

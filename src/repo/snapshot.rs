//! Snapshot objects (`snapshots/<id>`): one point in time of one source.
//!
//! A snapshot names its root tree and carries what `secrate snapshots` shows
//! (time, host, source, counts). It is written last, after every pack and
//! index delta it depends on, so a snapshot in the store is always complete.

use crate::crypto::Id;
use crate::repo::codec::{bad, Dec, DecodeResult, Enc};
use crate::repo::tree::Timestamp;

pub const MAGIC: &[u8; 7] = b"SECRATS";
/// The version of a snapshot whose root has no xattrs.
pub const VERSION: u8 = 1;
/// The version of one whose root has xattrs (they follow the tags): an
/// older secrate refuses it by its version instead of calling the bytes
/// after the tags damage.
pub const VERSION_ROOT_XATTRS: u8 = 2;
/// Every version this secrate reads.
pub const VERSIONS: &[u8] = &[VERSION, VERSION_ROOT_XATTRS];

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
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RootMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timestamp,
    /// Sorted by name, as a tree entry's.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
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
    /// The version its encoding is sealed with.
    pub fn version(&self) -> u8 {
        if self.root_meta.xattrs.is_empty() {
            VERSION
        } else {
            VERSION_ROOT_XATTRS
        }
    }

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
        if !self.root_meta.xattrs.is_empty() {
            e.u16(self.root_meta.xattrs.len() as u16);
            for (k, v) in &self.root_meta.xattrs {
                e.bytes16(k).bytes32(v);
            }
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
        let mut root_meta = RootMeta {
            mode: d.u32()?,
            uid: d.u32()?,
            gid: d.u32()?,
            mtime: Timestamp {
                secs: d.i64()?,
                nanos: d.u32()?,
            },
            xattrs: Vec::new(),
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
        // The root's xattrs (version 2), if any: at least one.
        if d.remaining() > 0 {
            let nx = d.u16()? as usize;
            if nx == 0 {
                return bad("an empty list of root xattrs");
            }
            root_meta.xattrs.reserve(nx.min(d.remaining() / 6));
            for _ in 0..nx {
                let k = d.bytes16()?.to_vec();
                let v = d.bytes32()?.to_vec();
                root_meta.xattrs.push((k, v));
            }
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
                xattrs: Vec::new(),
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

    /// Root xattrs follow the tags and make the snapshot version 2; without
    /// them the bytes are version 1's, unchanged.
    #[test]
    fn root_xattrs_round_trip_after_the_tags() {
        let plain = sample();
        assert_eq!(plain.version(), VERSION);
        let mut s = sample();
        s.root_meta.xattrs = vec![
            (b"user.a".to_vec(), b"1".to_vec()),
            (b"user.b".to_vec(), vec![]),
        ];
        assert_eq!(s.version(), VERSION_ROOT_XATTRS);
        let b = s.encode();
        let base = plain.encode();
        assert_eq!(&b[..base.len()], &base[..]);
        assert_eq!(
            hex::encode(&b[base.len()..]),
            [
                "0200",
                "0600",
                "757365722e61",
                "01000000",
                "31",
                "0600",
                "757365722e62",
                "00000000"
            ]
            .concat()
        );
        assert_eq!(Snapshot::decode(&b).unwrap(), s);
        // A count of zero, or a list cut short: refused.
        let mut zero = base.clone();
        zero.extend_from_slice(&[0, 0]);
        assert!(Snapshot::decode(&zero).is_err());
        assert!(Snapshot::decode(&b[..b.len() - 1]).is_err());
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

//! Object stores opened from URLs, behind one small synchronous interface.
//!
//! `Store` wraps an `object_store` backend (`file://`, `s3://`, `gs://`,
//! `az://`, `memory://`) under a prefix, retries transient errors with
//! exponential backoff, offers create-only puts for objects that must never
//! be overwritten, and makes `file://` puts durable (fsync) before they
//! return. Everything above this module is synchronous; the async backends
//! run on one shared tokio runtime. Never call a `Store` method from inside
//! that runtime.
//!
//! This module knows nothing of the repository format: it moves named bytes.

mod faults;
mod url;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};

pub use self::faults::FaultConfig;
pub use self::url::{default_store_url, StoreUrl};

/// One object as listed.
#[derive(Clone, Debug)]
pub struct ObjectInfo {
    /// Name relative to the store's prefix, e.g. `packs/ab/ab12…`.
    pub name: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// The shared runtime for async backends.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .thread_name("secrate-io")
            .enable_all()
            .build()
            .expect("the tokio runtime starts")
    })
}

#[derive(Clone)]
pub struct Store {
    url: String,
    inner: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    /// Set for `file://` stores: the directory, for fsync after puts.
    local_root: Option<PathBuf>,
    retry: RetryPolicy,
}

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // About 20 s of trying before an error reaches the caller.
        RetryPolicy {
            attempts: 8,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl Store {
    /// Open the store at `url`. With `create`, a missing `file://` directory
    /// is created; without it, a missing directory means "no repository".
    pub fn open(url: &str, create: bool) -> Result<Store> {
        let parsed = StoreUrl::parse(url)?;
        let (inner, prefix, local_root) = parsed.build(create)?;
        let inner = match FaultConfig::from_env()? {
            Some(f) => faults::wrap(inner, f),
            None => inner,
        };
        Ok(Store {
            url: parsed.display(),
            inner,
            prefix,
            local_root,
            retry: RetryPolicy::default(),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Store {
        self.retry = retry;
        self
    }

    /// The URL as shown to users (never with credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, name: &str) -> ObjPath {
        let mut p = self.prefix.clone();
        for part in name.split('/') {
            p = p.clone().join(part);
        }
        p
    }

    fn store_err(&self, name: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::Missing {
                url: self.url.clone(),
                object: name.to_string(),
            },
            e => Error::Store {
                url: self.url.clone(),
                object: name.to_string(),
                reason: one_line(&e),
            },
        }
    }

    /// Run `op` with retries on transient errors.
    fn retrying<T, F, Fut>(&self, name: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        let mut delay = self.retry.first_delay;
        let mut attempt = 1;
        loop {
            match runtime().block_on(op()) {
                Ok(v) => return Ok(v),
                Err(e) if is_transient(&e) && attempt < self.retry.attempts => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(self.retry.max_delay);
                    attempt += 1;
                }
                Err(e) => return Err(self.store_err(name, e)),
            }
        }
    }

    pub fn get(&self, name: &str) -> Result<Bytes> {
        let path = self.path(name);
        self.retrying(name, || async {
            self.inner.get(&path).await?.bytes().await
        })
    }

    pub fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.path(name);
        let want = range.end - range.start;
        let b = self.retrying(name, || self.inner.get_range(&path, range.clone()))?;
        if b.len() as u64 != want {
            return Err(Error::corrupt(
                name,
                format!("asked for {want} bytes, the store returned {}", b.len()),
            ));
        }
        Ok(b)
    }

    pub fn head(&self, name: &str) -> Result<Option<ObjectInfo>> {
        let path = self.path(name);
        match self.retrying(name, || self.inner.head(&path)) {
            Ok(m) => Ok(Some(ObjectInfo {
                name: name.to_string(),
                size: m.size,
                modified: m.last_modified.into(),
            })),
            Err(Error::Missing { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Write `name`, replacing whatever is there.
    pub fn put(&self, name: &str, data: Bytes) -> Result<()> {
        let path = self.path(name);
        self.retrying(name, || {
            self.inner.put(&path, PutPayload::from(data.clone()))
        })?;
        self.make_durable(name)
    }

    /// Write `name` only if it does not exist. Returns false if it did.
    ///
    /// A retried create can find the object its own first attempt wrote; for
    /// content-addressed objects that is the same bytes and counts as created
    /// by the caller's own logic (callers compare contents when it matters).
    pub fn put_new(&self, name: &str, data: Bytes) -> Result<bool> {
        let path = self.path(name);
        let opts = || PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let r = self.retrying(name, || {
            self.inner
                .put_opts(&path, PutPayload::from(data.clone()), opts())
        });
        match r {
            Ok(_) => {
                self.make_durable(name)?;
                Ok(true)
            }
            Err(Error::Store { reason, .. }) if reason.starts_with(ALREADY_EXISTS) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `put_new` with the content of a local file. A `file://` store on the
    /// same filesystem gets a hard link (no copy, atomic, create-only); any
    /// other store gets the bytes.
    pub fn put_file_new(&self, name: &str, path: &std::path::Path) -> Result<bool> {
        if let Some(root) = &self.local_root {
            let dst = root.join(name);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            match std::fs::hard_link(path, &dst) {
                Ok(()) => {
                    if let Some(parent) = dst.parent() {
                        sync_path(parent)?;
                    }
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
                // Another filesystem, or links not allowed: copy.
                Err(_) => {}
            }
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        self.put_new(name, Bytes::from(bytes))
    }

    pub fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        match self.retrying(name, || self.inner.delete(&path)) {
            Ok(()) | Err(Error::Missing { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every object under `dir` (e.g. `packs`), with names relative to the
    /// store's prefix.
    pub fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        let path = self.path(dir);
        let strip = format!("{}/", self.prefix);
        let metas = self.retrying(dir, || self.inner.list(Some(&path)).try_collect::<Vec<_>>())?;
        Ok(metas
            .into_iter()
            .map(|m| {
                let full = m.location.to_string();
                let name = if self.prefix.as_ref().is_empty() {
                    full
                } else {
                    full.strip_prefix(&strip).unwrap_or(&full).to_string()
                };
                ObjectInfo {
                    name,
                    size: m.size,
                    modified: m.last_modified.into(),
                }
            })
            .collect())
    }

    /// `file://` puts are renamed into place but not fsync'd by
    /// object_store; the outbox may be dropped right after an upload, so
    /// make the object durable before reporting success.
    fn make_durable(&self, name: &str) -> Result<()> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let path = root.join(name);
        sync_path(&path)?;
        if let Some(parent) = path.parent() {
            sync_path(parent)?;
        }
        Ok(())
    }
}

fn sync_path(path: &std::path::Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

const ALREADY_EXISTS: &str = "already exists";

fn is_transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    !matches!(
        e,
        E::NotFound { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::NotImplemented { .. }
            | E::NotSupported { .. }
            | E::InvalidPath { .. }
            | E::UnknownConfigurationKey { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
    )
}

/// object_store errors nest their causes; users get the innermost reason on
/// one line. `AlreadyExists` and `Precondition` (S3's answer to a create
/// that lost) both map to "already exists".
fn one_line(e: &object_store::Error) -> String {
    if matches!(
        e,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }
    ) {
        return ALREADY_EXISTS.to_string();
    }
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = s.to_string();
        src = s.source();
    }
    msg.lines().next().unwrap_or("").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_basics() {
        let s = Store::open("memory://store-basics", true).unwrap();
        assert!(s.get("a/b").unwrap_err().is_missing());
        s.put("a/b", Bytes::from_static(b"hello")).unwrap();
        assert_eq!(&s.get("a/b").unwrap()[..], b"hello");
        assert_eq!(&s.get_range("a/b", 1..3).unwrap()[..], b"el");
        assert!(!s.put_new("a/b", Bytes::from_static(b"x")).unwrap());
        assert!(s.put_new("a/c", Bytes::from_static(b"x")).unwrap());
        let mut names: Vec<_> = s.list("a").unwrap().into_iter().map(|o| o.name).collect();
        names.sort();
        assert_eq!(names, ["a/b", "a/c"]);
        s.delete("a/b").unwrap();
        s.delete("a/b").unwrap();
        assert!(s.head("a/b").unwrap().is_none());
        assert_eq!(s.head("a/c").unwrap().unwrap().size, 1);
    }

    /// Runs against the S3 server that scripts/test.sh starts.
    #[test]
    fn s3_store_basics_when_configured() {
        let Ok(base) = std::env::var("SECRATE_TEST_S3_URL") else {
            eprintln!("SECRATE_TEST_S3_URL not set; scripts/test.sh sets it");
            return;
        };
        let url = format!(
            "{base}/store-basics-{}",
            hex::encode(crate::crypto::random_bytes::<4>())
        );
        let s = Store::open(&url, true).unwrap();
        assert!(s.get("a/b").unwrap_err().is_missing());
        assert!(s.put_new("a/b", Bytes::from_static(b"hello")).unwrap());
        assert!(!s.put_new("a/b", Bytes::from_static(b"other")).unwrap());
        assert_eq!(&s.get("a/b").unwrap()[..], b"hello");
        assert_eq!(&s.get_range("a/b", 1..3).unwrap()[..], b"el");
        let l = s.list("a").unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].name, "a/b");
        s.delete("a/b").unwrap();
        assert!(s.head("a/b").unwrap().is_none());
    }

    #[test]
    fn file_store_create_only_and_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/repo", dir.path().display());
        assert!(Store::open(&url, false).is_err());
        let s = Store::open(&url, true).unwrap();
        assert!(s.put_new("config", Bytes::from_static(b"1")).unwrap());
        assert!(!s.put_new("config", Bytes::from_static(b"2")).unwrap());
        assert_eq!(&s.get("config").unwrap()[..], b"1");
        s.put("packs/aa/x", Bytes::from_static(b"p")).unwrap();
        let l = s.list("packs").unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].name, "packs/aa/x");
        assert!(dir.path().join("repo/packs/aa/x").exists());
        let local = dir.path().join("local");
        std::fs::write(&local, b"linked").unwrap();
        assert!(s.put_file_new("packs/bb/y", &local).unwrap());
        assert!(!s.put_file_new("packs/bb/y", &local).unwrap());
        assert_eq!(&s.get("packs/bb/y").unwrap()[..], b"linked");
    }
}

//! One object store under one URL: the old single `Store`, unchanged in
//! behaviour. `Store` (mod.rs) puts one or several of these behind the
//! replica or erasure-coding layer.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::faults::{self, FaultConfig};
use super::url::StoreUrl;
use super::{runtime, ObjectInfo, RetryPolicy};
use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Backend {
    url: String,
    inner: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    /// Set for `file://` stores: the directory, for fsync after puts.
    local_root: Option<PathBuf>,
    /// `file://` without injected faults: create-only puts bypass
    /// object_store and the page cache (`local.rs`).
    direct_puts: bool,
    retry: RetryPolicy,
}

impl Backend {
    /// Open the store at `url`. With `create`, a missing `file://` directory
    /// is created; without it, a missing directory means "no repository".
    pub fn open(url: &str, create: bool) -> Result<Backend> {
        let parsed = StoreUrl::parse(url)?;
        let (inner, prefix, local_root) = parsed.build(create)?;
        let faults = FaultConfig::from_env()?;
        let direct_puts = local_root.is_some() && faults.is_none();
        let inner = match faults {
            Some(f) => faults::wrap(inner, f),
            None => inner,
        };
        Ok(Backend {
            url: parsed.display(),
            inner,
            prefix,
            local_root,
            direct_puts,
            retry: RetryPolicy::default(),
        })
    }

    /// This backend behind the fault layer (tests).
    #[cfg(test)]
    pub(crate) fn with_faults(mut self, faults: FaultConfig) -> Backend {
        self.inner = faults::wrap(self.inner, faults);
        self.direct_puts = false;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Backend {
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
        let b = match runtime().block_on(self.inner.get_range(&path, range.clone())) {
            Ok(b) => b,
            Err(e) => {
                // A range past the end of an object cut short fails like
                // any error on some stores (`file://`): retried, it would
                // fail again only after the whole backoff. One look at the
                // object's length tells.
                if !matches!(e, object_store::Error::NotFound { .. }) {
                    if let Ok(m) = runtime().block_on(self.inner.head(&path)) {
                        if m.size < range.end {
                            return Err(Error::corrupt(
                                name,
                                format!(
                                    "it is {} bytes long, too short for bytes {}..{}",
                                    m.size, range.start, range.end
                                ),
                            ));
                        }
                    }
                }
                self.retrying(name, || self.inner.get_range(&path, range.clone()))?
            }
        };
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

    /// A `file://` store whose directory went away while in use is missing,
    /// as it is at open: a write must not quietly make a new, empty one (on
    /// an unmounted disk's mount point, that would be the root filesystem).
    fn still_there(&self, name: &str) -> Result<()> {
        match &self.local_root {
            Some(_) if self.is_gone() => Err(Error::Store {
                url: self.url.clone(),
                object: name.to_string(),
                reason: "its directory does not exist".into(),
            }),
            _ => Ok(()),
        }
    }

    /// Is this a `file://` store whose directory is not there?
    pub fn is_gone(&self) -> bool {
        self.local_root.as_ref().is_some_and(|r| !r.is_dir())
    }

    /// Write `name`, replacing whatever is there.
    pub fn put(&self, name: &str, data: Bytes) -> Result<()> {
        self.still_there(name)?;
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
        self.still_there(name)?;
        if let (true, Some(root)) = (self.direct_puts, &self.local_root) {
            return super::local::put_new(&root.join(name), &data).map_err(|e| Error::Store {
                url: self.url.clone(),
                object: name.to_string(),
                reason: e.to_string(),
            });
        }
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
    pub fn put_file_new(
        &self,
        name: &str,
        path: &std::path::Path,
        read: &(dyn Fn() -> Result<Bytes> + Sync),
    ) -> Result<bool> {
        self.still_there(name)?;
        if let Some(root) = &self.local_root {
            let dst = root.join(name);
            if let Some(parent) = dst.parent() {
                // A new directory's own name is synced too: the outbox
                // copy is deleted once this returns.
                super::local::create_dir_durably(parent).map_err(|e| Error::io(parent, e))?;
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
        self.put_new(name, read()?)
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
        self.list_under(dir, Some(path))
    }

    /// Every object in the store (under its prefix).
    pub fn list_all(&self) -> Result<Vec<ObjectInfo>> {
        let path = (!self.prefix.as_ref().is_empty()).then(|| self.prefix.clone());
        self.list_under("(all objects)", path)
    }

    fn list_under(&self, what: &str, path: Option<ObjPath>) -> Result<Vec<ObjectInfo>> {
        let strip = format!("{}/", self.prefix);
        let metas = self.retrying(what, || {
            self.inner.list(path.as_ref()).try_collect::<Vec<_>>()
        })?;
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

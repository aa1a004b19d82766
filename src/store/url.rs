//! Store URLs: which backend, which bucket, which prefix.
//!
//! `file:///abs/path` (a bare absolute path works too), `s3://bucket/prefix`
//! (credentials, region and endpoint from the `AWS_*` variables, including
//! `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP`), `gs://bucket/prefix`,
//! `az://container/prefix`, and `memory://name` (process-local, for tests).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub enum StoreUrl {
    File(PathBuf),
    S3 { bucket: String, prefix: String },
    Gcs { bucket: String, prefix: String },
    Azure { container: String, prefix: String },
    Memory { name: String, prefix: String },
}

/// `file://$XDG_DATA_HOME/secrate/store`, falling back to `~/.local/share`.
pub fn default_store_url() -> String {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"));
    format!("file://{}", base.join("secrate/store").display())
}

fn split_bucket(rest: &str) -> (String, String) {
    let rest = rest.trim_end_matches('/');
    match rest.split_once('/') {
        Some((b, p)) => (b.to_string(), p.trim_matches('/').to_string()),
        None => (rest.to_string(), String::new()),
    }
}

/// `p` absolute, with `.`, `..` and symlinks resolved as far as it exists
/// (the rest may not yet: a cache or store directory made later).
pub fn resolved(p: &Path) -> PathBuf {
    use std::path::Component;
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut cur = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => cur.push(c.as_os_str()),
            Component::CurDir => {}
            // `cur` is canonical where it exists, so its parent is too.
            Component::ParentDir => {
                cur.pop();
            }
            Component::Normal(n) => {
                cur.push(n);
                if let Ok(real) = fs::canonicalize(&cur) {
                    cur = real;
                }
            }
        }
    }
    cur
}

impl StoreUrl {
    /// Where the objects land, for telling two URLs of one place apart
    /// from two places: a `file://` directory with symlinks, `.` and a
    /// trailing `/` resolved; bucket URLs as displayed (already trimmed).
    pub fn place(&self) -> String {
        match self {
            StoreUrl::File(p) => format!("file://{}", resolved(p).display()),
            _ => self.display(),
        }
    }

    pub fn parse(url: &str) -> Result<StoreUrl> {
        let bad = |why: &str| Error::Invalid(format!("cannot use store URL {url:?}: {why}"));
        if url.starts_with('/') {
            return Ok(StoreUrl::File(PathBuf::from(url)));
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected file://, s3://, gs://, az:// or memory://"))?;
        let (bucket, prefix) = split_bucket(rest);
        let need_bucket = |b: &str| {
            if b.is_empty() {
                Err(bad("the bucket name is missing"))
            } else {
                Ok(())
            }
        };
        match scheme {
            "file" => {
                let p = PathBuf::from(rest);
                if !p.is_absolute() {
                    return Err(bad("a file:// URL needs an absolute path (file:///path)"));
                }
                Ok(StoreUrl::File(p))
            }
            "s3" | "s3a" => {
                need_bucket(&bucket)?;
                Ok(StoreUrl::S3 { bucket, prefix })
            }
            "gs" => {
                need_bucket(&bucket)?;
                Ok(StoreUrl::Gcs { bucket, prefix })
            }
            "az" | "azure" | "abfs" => {
                need_bucket(&bucket)?;
                Ok(StoreUrl::Azure {
                    container: bucket,
                    prefix,
                })
            }
            "memory" => Ok(StoreUrl::Memory {
                name: bucket,
                prefix,
            }),
            _ => Err(bad("unknown scheme")),
        }
    }

    pub fn display(&self) -> String {
        let join = |s: &str, b: &str, p: &str| {
            if p.is_empty() {
                format!("{s}://{b}")
            } else {
                format!("{s}://{b}/{p}")
            }
        };
        match self {
            StoreUrl::File(p) => format!("file://{}", p.display()),
            StoreUrl::S3 { bucket, prefix } => join("s3", bucket, prefix),
            StoreUrl::Gcs { bucket, prefix } => join("gs", bucket, prefix),
            StoreUrl::Azure { container, prefix } => join("az", container, prefix),
            StoreUrl::Memory { name, prefix } => join("memory", name, prefix),
        }
    }

    pub(super) fn build(
        &self,
        create: bool,
    ) -> Result<(Arc<dyn ObjectStore>, ObjPath, Option<PathBuf>)> {
        let url = self.display();
        let fail = |e: object_store::Error| Error::Store {
            url: url.clone(),
            object: String::new(),
            reason: format!("cannot open it: {e}"),
        };
        let prefix = |p: &str| {
            ObjPath::parse(p)
                .map_err(|e| Error::Invalid(format!("cannot use store URL {url:?}: {e}")))
        };
        match self {
            StoreUrl::File(dir) => {
                if let Some(file) = file_in_the_way(dir) {
                    return Err(Error::Invalid(format!(
                        "{} is a file, not a directory (a file:// store is a directory)",
                        file.display()
                    )));
                }
                if !dir.is_dir() {
                    if !create {
                        return Err(Error::NoRepository { url });
                    }
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                }
                let fs = LocalFileSystem::new_with_prefix(dir).map_err(fail)?;
                Ok((Arc::new(fs), ObjPath::default(), Some(dir.clone())))
            }
            StoreUrl::S3 { bucket, prefix: p } => {
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(backend_retry());
                if let Some(ep) =
                    env_any(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"])
                {
                    b = b.with_endpoint(ep);
                }
                if env_any(&["AWS_ALLOW_HTTP"]).is_some_and(|v| v == "true" || v == "1") {
                    b = b.with_allow_http(true);
                }
                if env_any(&["AWS_REGION", "AWS_DEFAULT_REGION"]).is_none() {
                    b = b.with_region("us-east-1");
                }
                let s = b.build().map_err(fail)?;
                Ok((Arc::new(s), prefix(p)?, None))
            }
            StoreUrl::Gcs { bucket, prefix: p } => {
                let s = GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(backend_retry())
                    .build()
                    .map_err(fail)?;
                Ok((Arc::new(s), prefix(p)?, None))
            }
            StoreUrl::Azure {
                container,
                prefix: p,
            } => {
                let s = MicrosoftAzureBuilder::from_env()
                    .with_container_name(container)
                    .with_retry(backend_retry())
                    .build()
                    .map_err(fail)?;
                Ok((Arc::new(s), prefix(p)?, None))
            }
            StoreUrl::Memory { name, prefix: p } => {
                static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
                let mut m = STORES
                    .get_or_init(Default::default)
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let s = m
                    .entry(name.clone())
                    .or_insert_with(|| Arc::new(InMemory::new()))
                    .clone();
                Ok((s, prefix(p)?, None))
            }
        }
    }
}

fn env_any(keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// The path, or the nearest existing ancestor of it, when that is not a
/// directory: a file:// store can be neither there nor under it (`mkdir`
/// would say "File exists" or "Not a directory", opening it "no
/// repository").
fn file_in_the_way(p: &Path) -> Option<&Path> {
    for a in p.ancestors() {
        match fs::metadata(a) {
            Ok(m) if m.is_dir() => return None,
            Ok(_) => return Some(a),
            Err(_) => {}
        }
    }
    None
}

/// The HTTP backends retry a little themselves; `Store` retries longer on top.
fn backend_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: Duration::from_secs(60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            StoreUrl::parse("file:///a/b").unwrap(),
            StoreUrl::File("/a/b".into())
        );
        assert_eq!(
            StoreUrl::parse("/a/b").unwrap(),
            StoreUrl::File("/a/b".into())
        );
        assert_eq!(
            StoreUrl::parse("s3://bkt/some/prefix/").unwrap(),
            StoreUrl::S3 {
                bucket: "bkt".into(),
                prefix: "some/prefix".into()
            }
        );
        assert!(matches!(
            StoreUrl::parse("gs://b").unwrap(),
            StoreUrl::Gcs { .. }
        ));
        assert!(matches!(
            StoreUrl::parse("az://c/p").unwrap(),
            StoreUrl::Azure { .. }
        ));
        assert!(matches!(
            StoreUrl::parse("memory://x").unwrap(),
            StoreUrl::Memory { .. }
        ));
        assert!(StoreUrl::parse("file://relative").is_err());
        assert!(StoreUrl::parse("s3://").is_err());
        assert!(StoreUrl::parse("ftp://x").is_err());
        assert!(StoreUrl::parse("nothing").is_err());
        assert_eq!(StoreUrl::parse("s3://b/p").unwrap().display(), "s3://b/p");
    }

    /// A file where the store's directory should be, or above it: one
    /// sentence naming the file, with or without `create` (was "File
    /// exists (os error 17)", "Not a directory (os error 20)", or "no
    /// repository").
    #[test]
    fn a_file_where_the_directory_should_be_is_named() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        fs::write(&f, b"x").unwrap();
        let want = format!(
            "{} is a file, not a directory (a file:// store is a directory)",
            f.display()
        );
        for dir in [f.clone(), f.join("sub"), f.join("sub/deeper")] {
            for create in [true, false] {
                let e = StoreUrl::File(dir.clone()).build(create).err().unwrap();
                assert_eq!(e.to_string(), want, "{} create={create}", dir.display());
            }
        }
        assert!(StoreUrl::File(t.path().join("new")).build(true).is_ok());
        assert!(matches!(
            StoreUrl::File(t.path().join("none"))
                .build(false)
                .err()
                .unwrap(),
            Error::NoRepository { .. }
        ));
    }
}

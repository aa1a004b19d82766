//! Fault injection for tests and benchmarks: a store layer that fails,
//! slows down, or goes away on demand.
//!
//! Enabled only by `SECRATE_FAULTS`, a comma-separated list:
//! `error_rate=0.2` (fraction of operations failing with a transient error),
//! `latency_ms=50` (added to every operation), `down_file=/path` (while that
//! file exists every operation fails, as if the store were unreachable),
//! `reads_of=packs` (the faults hit only reads of objects in that folder:
//! the store lists and writes, but cannot serve those objects).
//! Injected errors are `Generic`, which the retry layer treats as transient.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use rand::Rng;

use crate::error::Error;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultConfig {
    pub error_rate: f64,
    pub latency: Duration,
    pub down_file: Option<PathBuf>,
    /// Only reads of objects in this folder fail (`None`: every operation).
    pub reads_of: Option<String>,
}

impl FaultConfig {
    pub fn from_env() -> crate::error::Result<Option<FaultConfig>> {
        match std::env::var("SECRATE_FAULTS") {
            Ok(s) if !s.trim().is_empty() => FaultConfig::parse(&s).map(Some),
            _ => Ok(None),
        }
    }

    pub fn parse(s: &str) -> crate::error::Result<FaultConfig> {
        let mut c = FaultConfig::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || Error::Invalid(format!("SECRATE_FAULTS: cannot read {part:?}"));
            let (k, v) = part.split_once('=').ok_or_else(bad)?;
            match k {
                "error_rate" => {
                    c.error_rate = v.parse().map_err(|_| bad())?;
                    if !(0.0..=1.0).contains(&c.error_rate) {
                        return Err(bad());
                    }
                }
                "latency_ms" => c.latency = Duration::from_millis(v.parse().map_err(|_| bad())?),
                "down_file" => c.down_file = Some(PathBuf::from(v)),
                "reads_of" => c.reads_of = Some(v.trim_matches('/').to_string()),
                _ => return Err(bad()),
            }
        }
        Ok(c)
    }
}

pub fn wrap(inner: Arc<dyn ObjectStore>, config: FaultConfig) -> Arc<dyn ObjectStore> {
    Arc::new(FaultyStore { inner, config })
}

#[derive(Debug)]
struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    config: FaultConfig,
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

impl FaultyStore {
    /// Whether `reads_of` leaves this operation alone.
    fn spares(&self, op: &str, location: Option<&Path>) -> bool {
        self.config.reads_of.as_deref().is_some_and(|dir| {
            op != "get" || !location.is_some_and(|l| l.parts().any(|p| p.as_ref() == dir))
        })
    }

    async fn before(&self, op: &str, location: Option<&Path>) -> Result<()> {
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        if self.spares(op, location) {
            return Ok(());
        }
        if let Some(f) = &self.config.down_file {
            if f.exists() {
                return Err(injected(op, "store is down (injected)"));
            }
        }
        if self.config.error_rate > 0.0 && rand::thread_rng().gen_bool(self.config.error_rate) {
            return Err(injected(op, "transient error (injected)"));
        }
        Ok(())
    }
}

fn injected(op: &str, what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "faults",
        source: format!("{op}: {what}").into(),
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.before("put", Some(location)).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.before("put", Some(location)).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.before("get", Some(location)).await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.before("get", Some(location)).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        if !self.spares("delete", None)
            && self.config.down_file.as_ref().is_some_and(|f| f.exists())
        {
            return futures::stream::once(async {
                Err(injected("delete", "store is down (injected)"))
            })
            .boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        if self.spares("list", None) {
            return self.inner.list(prefix);
        }
        if self.config.down_file.as_ref().is_some_and(|f| f.exists()) {
            return futures::stream::once(async {
                Err(injected("list", "store is down (injected)"))
            })
            .boxed();
        }
        if self.config.error_rate > 0.0 && rand::thread_rng().gen_bool(self.config.error_rate) {
            return futures::stream::once(async {
                Err(injected("list", "transient error (injected)"))
            })
            .boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.before("list", None).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.before("copy", Some(from)).await?;
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let c = FaultConfig::parse("error_rate=0.2, latency_ms=5,down_file=/tmp/x").unwrap();
        assert_eq!(c.error_rate, 0.2);
        assert_eq!(c.latency, Duration::from_millis(5));
        assert_eq!(c.down_file.as_deref(), Some(std::path::Path::new("/tmp/x")));
        assert!(FaultConfig::parse("error_rate=2").is_err());
        assert!(FaultConfig::parse("bogus=1").is_err());
        let c = FaultConfig::parse("error_rate=1,reads_of=packs/").unwrap();
        assert_eq!(c.reads_of.as_deref(), Some("packs"));
    }
}

//! The library's error type.
//!
//! Every variant names the object, path or URL it is about, and its message is
//! one sentence a user can act on. The CLI prints `Display` and exits non-zero;
//! nothing in the library panics on input from a store, a disk or a user.

use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed (after retries) for a reason other than a missing
    /// object. `object` empty: no one object (connecting, opening); the
    /// reason says what was being done.
    #[error("store error at {url}{}: {reason}", on_object(object))]
    Store {
        url: String,
        object: String,
        reason: String,
    },

    /// An object the repository needs is not in the store.
    #[error("object {object} is missing from the store at {url}")]
    Missing { url: String, object: String },

    /// Data `secrate repair` found lost for good and recorded: a range of a
    /// file marked lost (`Id::LOST`) in its chunk list.
    #[error("{what} was lost from the store (recorded by `secrate repair`)")]
    Lost { what: String },

    /// An object exists but does not decode, decrypt or verify.
    #[error("object {object} is corrupt: {reason}")]
    Corrupt { object: String, reason: String },

    /// A sealed object waiting in the local outbox no longer holds the
    /// bytes its name was made from: the local disk changed it after the
    /// seal. It was not uploaded.
    #[error("{}: the sealed copy of {object} waiting for upload is damaged (its bytes no longer hash to its name); it was not uploaded", path.display())]
    OutboxDamaged { path: PathBuf, object: String },

    #[error("wrong passphrase (or key) for the repository at {url}")]
    WrongKey { url: String },

    #[error("no repository at {url} (create one with `secrate init`)")]
    NoRepository { url: String },

    #[error("a repository already exists at {url}")]
    RepositoryExists { url: String },

    #[error("the repository at {url} is locked by {holder}")]
    Locked { url: String, holder: String },

    #[error("this key can write but not read file contents ({what})")]
    WriteOnly { what: String },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Bad input from the user: one sentence saying what is wrong.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn is_missing(&self) -> bool {
        matches!(self, Error::Missing { .. })
    }

    /// The object is gone, or its bytes fail to verify: what no retry
    /// changes. Any other error (a store that fails, a key that cannot
    /// read) says nothing about the data.
    pub fn is_damage(&self) -> bool {
        matches!(self, Error::Missing { .. } | Error::Corrupt { .. })
    }
}

fn on_object(object: &str) -> String {
    if object.is_empty() {
        String::new()
    } else {
        format!(" on {object}")
    }
}

/// Attach a path to an `io::Result`.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

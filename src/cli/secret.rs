//! Passphrases and recovery keys: from a file, the environment, or a prompt.
//!
//! Never from argv (it shows in `ps`); never echoed, logged or stored.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{bail, Context};
use zeroize::Zeroizing;

use secrate::repo::Secret;

use super::Globals;

fn read_file(path: &Path, what: &str) -> anyhow::Result<Zeroizing<String>> {
    warn_if_others_can_read(path, what);
    let s = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} file {}", path.display()))?,
    );
    let trimmed = s.strip_suffix('\n').unwrap_or(&s);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    if trimmed.is_empty() {
        bail!("the {what} file {} is empty", path.display());
    }
    Ok(Zeroizing::new(trimmed.to_string()))
}

/// A secret in a file every user can read is theirs too: say so on
/// stderr, and go on (ssh refuses such a key file; a secrate secret file
/// may be shared with a group on purpose, so group-readable is not
/// warned about).
fn warn_if_others_can_read(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(md) = std::fs::metadata(path) else {
        return;
    };
    let mode = md.permissions().mode() & 0o777;
    if md.is_file() && mode & 0o004 != 0 {
        errln!(
            "warning: the {what} file {} can be read by every user (mode {mode:04o}): `chmod go-r` it",
            path.display()
        );
    }
}

fn prompt(text: &str) -> anyhow::Result<Zeroizing<String>> {
    if !std::io::stdin().is_terminal() {
        bail!("no passphrase given: set SECRATE_PASSPHRASE, use --passphrase-file, or run on a terminal");
    }
    Ok(Zeroizing::new(
        rpassword::prompt_password(text).context("cannot read the passphrase")?,
    ))
}

/// The passphrase for a new repository or key: asked twice on a terminal.
pub fn new_passphrase(g: &Globals, file: Option<&Path>) -> anyhow::Result<Zeroizing<String>> {
    if let Some(f) = file.or(g.passphrase_file.as_deref()) {
        return read_file(f, "passphrase");
    }
    if let Ok(p) = std::env::var("SECRATE_PASSPHRASE") {
        if !p.is_empty() {
            return Ok(Zeroizing::new(p));
        }
    }
    let a = prompt("New passphrase: ")?;
    if a.is_empty() {
        bail!("the passphrase may not be empty");
    }
    let b = prompt("Repeat the passphrase: ")?;
    if a != b {
        bail!("the two passphrases differ");
    }
    Ok(a)
}

/// A new passphrase for `key add`/`passwd`: from `file`, else a prompt
/// (twice). Never from the environment (that holds the current one).
pub fn new_passphrase_only(file: Option<&Path>) -> anyhow::Result<Zeroizing<String>> {
    if let Some(f) = file {
        return read_file(f, "new passphrase");
    }
    if !std::io::stdin().is_terminal() {
        bail!("no new passphrase given: use --new-passphrase-file or run on a terminal");
    }
    let a = Zeroizing::new(
        rpassword::prompt_password("New passphrase: ").context("cannot read the passphrase")?,
    );
    if a.is_empty() {
        bail!("the passphrase may not be empty");
    }
    let b = Zeroizing::new(
        rpassword::prompt_password("Repeat the new passphrase: ")
            .context("cannot read the passphrase")?,
    );
    if a != b {
        bail!("the two passphrases differ");
    }
    Ok(a)
}

/// What unlocks an existing repository.
pub fn for_open(g: &Globals) -> anyhow::Result<Secret> {
    if let Some(f) = &g.recovery_key_file {
        return Ok(Secret::RecoveryKey(read_file(f, "recovery key")?));
    }
    if let Ok(k) = std::env::var("SECRATE_RECOVERY_KEY") {
        if !k.is_empty() {
            return Ok(Secret::RecoveryKey(Zeroizing::new(k.trim().to_string())));
        }
    }
    if let Some(f) = &g.passphrase_file {
        return Ok(Secret::Passphrase(read_file(f, "passphrase")?));
    }
    if let Ok(p) = std::env::var("SECRATE_PASSPHRASE") {
        if !p.is_empty() {
            return Ok(Secret::Passphrase(Zeroizing::new(p)));
        }
    }
    Ok(Secret::Passphrase(prompt("Passphrase: ")?))
}

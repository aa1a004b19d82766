//! `secrate key list | add | remove | passwd | recovery`.

use std::path::PathBuf;

use clap::Subcommand;

use secrate::repo::keys::KeyKind;
use secrate::repo::snapshot::format_secs;
use secrate::repo::{Secret, DEFAULT_KDF_LOG_N};

use super::{secret, Globals};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: KeyCmd,
}

#[derive(Subcommand)]
enum KeyCmd {
    /// List the keys that open this repository.
    List,
    /// Add a passphrase (from --new-passphrase-file or a prompt).
    Add {
        /// A key that can back up and add snapshots but not read file contents back.
        #[arg(long)]
        write_only: bool,
        /// Read the new passphrase from this file.
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
        /// scrypt work factor (log2 N) for the new passphrase.
        #[arg(long, default_value_t = DEFAULT_KDF_LOG_N, value_parser = clap::value_parser!(u8).range(10..=20))]
        kdf_work_factor: u8,
    },
    /// Remove a key by id (a prefix is enough); never the last one that can read.
    Remove { id: String },
    /// Change the passphrase you unlocked with (re-wraps the keyring; data is untouched).
    Passwd {
        /// Read the new passphrase from this file (else a prompt).
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
        #[arg(long, default_value_t = DEFAULT_KDF_LOG_N, value_parser = clap::value_parser!(u8).range(10..=20))]
        kdf_work_factor: u8,
    },
    /// Create a new recovery key and print it once.
    Recovery {
        #[arg(long)]
        write_only: bool,
    },
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let repo = g.open_repo()?;
    match a.cmd {
        KeyCmd::List => {
            outln!(
                "{:<3}{:<18} {:<11} {:<10} CREATED",
                "",
                "ID",
                "KIND",
                "ACCESS"
            )?;
            // A removed key still held by a store that missed the delete
            // opens nothing: not listed.
            let removed = repo.removed_keys()?;
            let mut marked = false;
            for (name, k) in repo.list_keys()? {
                if removed.contains(&name) {
                    continue;
                }
                let k = match k {
                    Ok(k) => k,
                    Err(e) => {
                        outln!(
                            "{:<3}{:<18} damaged: {e}",
                            "",
                            name.trim_start_matches("keys/")
                        )?;
                        continue;
                    }
                };
                // Only the key used now is known to open this repository;
                // one the secret opened on the way may be another's.
                let mark = if name == repo.key_name() {
                    "*"
                } else if repo.foreign_keys().contains(&name) {
                    marked = true;
                    "!"
                } else {
                    ""
                };
                outln!(
                    "{:<3}{:<18} {:<11} {:<10} {}",
                    mark,
                    name.trim_start_matches("keys/"),
                    k.kind.name(),
                    if k.write_only { "write-only" } else { "full" },
                    format_secs(k.created)
                )?;
            }
            outln!("(* = the key used now; the others are not checked: only their own secret opens them)")?;
            if marked {
                outln!("(! = opens the keyring of another repository, not this one: remove it)")?;
            }
        }
        KeyCmd::Add {
            write_only,
            new_passphrase_file,
            kdf_work_factor,
        } => {
            let p = secret::new_passphrase_only(new_passphrase_file.as_deref())?;
            let id = repo.add_key(&Secret::Passphrase(p), write_only, kdf_work_factor)?;
            outln!(
                "added {} passphrase key {id}",
                if write_only { "write-only" } else { "full" }
            )?;
        }
        KeyCmd::Remove { id } => {
            let name = repo.remove_key(&id)?;
            outln!("removed key {}", name.trim_start_matches("keys/"))?;
        }
        KeyCmd::Passwd {
            new_passphrase_file,
            kdf_work_factor,
        } => {
            let keys = repo.list_keys()?;
            let current = keys
                .iter()
                .find(|(n, _)| n == repo.key_name())
                .and_then(|(_, k)| k.as_ref().ok())
                .ok_or_else(|| anyhow::anyhow!("the key you unlocked with is gone"))?;
            if current.kind != KeyKind::Passphrase {
                anyhow::bail!(
                    "you unlocked with a recovery key: use `secrate key add` to add a passphrase"
                );
            }
            let p = secret::new_passphrase_only(new_passphrase_file.as_deref())?;
            let id = repo.add_key(&Secret::Passphrase(p), current.write_only, kdf_work_factor)?;
            repo.retire_key(repo.key_name())?;
            outln!(
                "passphrase changed (key {id} replaces {})",
                repo.key_name().trim_start_matches("keys/")
            )?;
        }
        KeyCmd::Recovery { write_only } => {
            let (name, text) = repo.add_recovery_key(write_only)?;
            outln!("added recovery key {}", name.trim_start_matches("keys/"))?;
            outln!("Recovery key (shown only now; keep it on paper):")?;
            outln!()?;
            outln!("    {}", text.as_str())?;
            outln!()?;
        }
    }
    Ok(0)
}

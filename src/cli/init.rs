//! `secrate init`: create a repository and show its recovery key once.

use secrate::crypto::ChunkerParams;
use secrate::repo::{InitOptions, Repository, DEFAULT_KDF_LOG_N};

use super::{secret, Globals};

#[derive(clap::Args)]
pub struct Args {
    /// scrypt work factor (log2 N) for the passphrase; lower is faster and weaker.
    #[arg(long, default_value_t = DEFAULT_KDF_LOG_N, value_parser = clap::value_parser!(u8).range(10..=20))]
    kdf_work_factor: u8,
    /// Chunk sizes in bytes: min, average and max (fixed for the repository's life).
    #[arg(long, value_name = "MIN,AVG,MAX", hide = true)]
    chunk_sizes: Option<String>,
    /// Target pack size in bytes (1 MiB to 128 MiB; tests use small packs).
    #[arg(long, value_name = "BYTES", hide = true, value_parser = clap::value_parser!(u32).range(1 << 20..=128 << 20))]
    pack_size: Option<u32>,
    /// Do nothing (and succeed) if the store already holds a repository.
    #[arg(long)]
    if_missing: bool,
}

/// A `file://` repository wants a directory of its own: `init` into one
/// that holds other things (`--store file://$HOME`, a typo) would put
/// `config`, `keys/`, `packs/`… among them. One that holds a repository is
/// left to the check after (`RepositoryExists`, `--if-missing`).
fn refuse_a_directory_in_use(dir: &std::path::Path) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // missing: created; unreadable: the open says why
    };
    let names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.is_empty() || names.iter().any(|n| n == "config") {
        return Ok(());
    }
    let mut shown: Vec<&str> = names.iter().map(String::as_str).take(3).collect();
    shown.sort();
    anyhow::bail!(
        "{} is not empty ({}{}): a repository needs a directory of its own; give a new or empty one",
        dir.display(),
        shown.join(", "),
        if names.len() > 3 { ", …" } else { "" }
    )
}

pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let chunker = match &a.chunk_sizes {
        None => ChunkerParams::DEFAULT,
        Some(s) => {
            let v: Vec<u32> = s
                .split(',')
                .map(|x| x.trim().parse())
                .collect::<Result<_, _>>()
                .map_err(|_| anyhow::anyhow!("--chunk-sizes wants three numbers: MIN,AVG,MAX"))?;
            match v[..] {
                [min, avg, max] => ChunkerParams { min, avg, max },
                _ => anyhow::bail!("--chunk-sizes wants three numbers: MIN,AVG,MAX"),
            }
        }
    };
    for url in g.store_urls() {
        if let Ok(secrate::store::StoreUrl::File(dir)) = secrate::store::StoreUrl::parse(&url) {
            refuse_a_directory_in_use(&dir)?;
        }
    }
    let store = g.open_store(true)?;
    if Repository::read_config(&store).is_ok() {
        if a.if_missing {
            return Ok(0);
        }
        anyhow::bail!(secrate::Error::RepositoryExists {
            url: store.url().into()
        });
    }
    let pass = secret::new_passphrase(g, None)?;
    let mut opts = InitOptions {
        chunker,
        kdf_log_n: a.kdf_work_factor,
        ..Default::default()
    };
    if let Some(p) = a.pack_size {
        opts.pack_target = p;
    }
    let (repo, recovery) = Repository::init(store, &pass, opts)?;
    outln!(
        "created repository {} at {}",
        repo.config().repo_id_hex(),
        repo.url()
    )?;
    outln!()?;
    outln!("Recovery key (shown only now): it opens this repository if the passphrase is lost.")?;
    outln!("Write it on paper and keep it somewhere safe; use it with --recovery-key-file or SECRATE_RECOVERY_KEY.")?;
    outln!()?;
    outln!("    {}", recovery.as_str())?;
    outln!()?;
    Ok(0)
}

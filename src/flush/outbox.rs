//! The outbox: sealed objects waiting for upload, as durable local files
//! listed in `meta.redb` in the order they must reach the store.
//!
//! A seal writes its packs, then its index delta, then its snapshot object
//! into `outbox/` (each fsync'd), and lists them all in one transaction. The
//! uploader takes items in sequence order, so the store never holds a
//! snapshot before what it references. A file in `outbox/` that no item
//! lists is the leftover of a seal that did not commit; start-up removes it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use redb::{ReadableTable, TableDefinition};

use crate::live::{cache_err, LiveResult, Tx};
use crate::repo::codec::{bad, Dec, DecodeResult, Enc};

/// seq → item.
pub(crate) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// Pack id → its index entry (an index delta of one pack), for packs not
/// yet uploaded: their blobs are read from the outbox meanwhile.
pub(crate) const OUTBOX_PACKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("outbox_packs");
/// Snapshot id → plaintext snapshot, for snapshots sealed but not uploaded.
pub(crate) const PENDING_SNAPSHOTS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("pending_snapshots");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemKind {
    Pack = 0,
    Index = 1,
    Snapshot = 2,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub kind: ItemKind,
    /// The seal that produced it.
    pub gen: u64,
    /// The object's name in the store.
    pub name: String,
    pub size: u64,
}

impl Item {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u8(1)
            .u8(self.kind as u8)
            .u64(self.gen)
            .bytes16(self.name.as_bytes())
            .u64(self.size);
        e.finish()
    }

    pub fn decode(b: &[u8]) -> DecodeResult<Item> {
        let mut d = Dec::new(b);
        if d.u8()? != 1 {
            return bad("unknown outbox item version");
        }
        let kind = match d.u8()? {
            0 => ItemKind::Pack,
            1 => ItemKind::Index,
            2 => ItemKind::Snapshot,
            _ => return bad("unknown outbox item kind"),
        };
        let item = Item {
            kind,
            gen: d.u64()?,
            name: d.string16()?,
            size: d.u64()?,
        };
        d.finish()?;
        Ok(item)
    }
}

/// Where an object waits: `outbox/<name with / as _>`.
pub fn file_for(dir: &Path, name: &str) -> PathBuf {
    dir.join("outbox").join(name.replace('/', "_"))
}

/// Write a file and make it durable before anything lists it.
pub fn write_durable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        crate::space::check(dir, bytes.len() as u64, crate::space::Use::Outbox)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(p) = path.parent() {
        fs::File::open(p)?.sync_all()?;
    }
    Ok(())
}

pub fn create_tables(tx: &Tx) -> LiveResult<()> {
    tx.txn().open_table(OUTBOX).map_err(cache_err)?;
    tx.txn().open_table(OUTBOX_PACKS).map_err(cache_err)?;
    tx.txn().open_table(PENDING_SNAPSHOTS).map_err(cache_err)?;
    Ok(())
}

/// Every item in upload order.
pub fn items(tx: &Tx) -> LiveResult<Vec<(u64, Item)>> {
    let t = tx.txn().open_table(OUTBOX).map_err(cache_err)?;
    let mut out = Vec::new();
    for r in t.iter().map_err(cache_err)? {
        let (k, v) = r.map_err(cache_err)?;
        let item = Item::decode(v.value())
            .map_err(|e| crate::live::LiveError::Cache(format!("outbox item: {e}")))?;
        out.push((k.value(), item));
    }
    Ok(out)
}

pub fn push(tx: &mut Tx, item: &Item) -> LiveResult<u64> {
    let seq = tx.state_u64("outbox_seq")? + 1;
    tx.set_state_u64("outbox_seq", seq)?;
    let mut t = tx.txn().open_table(OUTBOX).map_err(cache_err)?;
    t.insert(seq, item.encode().as_slice()).map_err(cache_err)?;
    Ok(seq)
}

/// Put `item` in the place of item `seq` (sealed again after damage).
pub fn replace(tx: &Tx, seq: u64, item: &Item) -> LiveResult<()> {
    let mut t = tx.txn().open_table(OUTBOX).map_err(cache_err)?;
    t.insert(seq, item.encode().as_slice()).map_err(cache_err)?;
    Ok(())
}

pub fn remove(tx: &Tx, seq: u64) -> LiveResult<()> {
    let mut t = tx.txn().open_table(OUTBOX).map_err(cache_err)?;
    t.remove(seq).map_err(cache_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_round_trip() {
        let i = Item {
            kind: ItemKind::Snapshot,
            gen: 3,
            name: "snapshots/ab".into(),
            size: 9,
        };
        assert_eq!(Item::decode(&i.encode()).unwrap(), i);
        assert!(Item::decode(&i.encode()[1..]).is_err());
    }
}

//! When a disk goes bad: `dfs repair` (a stopped node's damaged index, rebuilt from the chunks
//! on disk and, once the node runs, from its peers).

use std::path::PathBuf;

use crate::api::client::default_data_dir;
use crate::datadir::DataDir;
use crate::store::{self, StoreError};

use super::{Error, Result};

pub(super) const REPAIR_HELP: &str = "\
Examples:
  dfs repair --data-dir ~/dfs1            after `dfs node` refused to start: \"the index ... is damaged\"
  dfs repair --data-dir ~/dfs1 --force    rebuild an index that opens but is known to be wrong

Run it on a stopped node. It renames the index to index.redb.damaged-<time> (nothing is
deleted), verifies every chunk file against its hash (good ones are kept in store/orphans/,
damaged ones go to store/damaged/) and creates an empty index. Then start the node as usual: it
gets its records back from its peers (anti-entropy) and takes the kept chunks instead of
downloading them again. Records and small files that no peer has are lost with the index.";

/// `dfs repair [--data-dir DIR] [--force]`.
pub(super) fn repair(data_dir: Option<PathBuf>, force: bool) -> Result<()> {
    let dir = DataDir::new(data_dir.unwrap_or_else(default_data_dir));
    let store_dir = dir.store();
    if !store_dir.is_dir() {
        return Err(Error::Usage(format!(
            "{} holds no store; give the data dir of a node with --data-dir",
            dir.path().display()
        )));
    }
    let running = |_| {
        Error::Failed(format!(
            "a node is running on {}; stop it before repairing its store",
            dir.path().display()
        ))
    };
    match store::diagnose(&store_dir) {
        Ok(None) if !force => {
            println!(
                "the index {} is healthy: nothing to repair (--force rebuilds it anyway)",
                store_dir.join(store::INDEX_FILE).display()
            );
            return Ok(());
        }
        Ok(None) => println!("the index is healthy; rebuilding it anyway (--force)"),
        Ok(Some(reason)) => println!("the index is damaged: {reason}"),
        Err(StoreError::Locked(p)) => return Err(running(p)),
        Err(e) => return Err(Error::Failed(format!("cannot examine the store: {e}"))),
    }
    let report = store::repair(&store_dir).map_err(|e| match e {
        StoreError::Locked(p) => running(p),
        e => Error::Failed(format!("repair failed: {e}")),
    })?;
    if let Some(old) = &report.old_index {
        println!("moved the old index to {}", old.display());
    }
    println!(
        "kept {} verified chunk files ({} bytes) in {} for the node to reuse",
        report.adopted,
        report.adopted_bytes,
        store_dir.join(store::ORPHANS_DIR).display()
    );
    if report.damaged > 0 {
        println!(
            "moved {} damaged chunk files to {}",
            report.damaged,
            store_dir.join(store::DAMAGED_DIR).display()
        );
    }
    println!(
        "created an empty index; start the node (with its usual --bootstrap): it gets the records back from its peers"
    );
    Ok(())
}

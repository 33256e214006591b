//! The `public` and `lookout` schemas: Lookout's tables as DataFusion sees them.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::Result;
use lookout_storage::{Storage, StorageError};

use crate::provider::{LookoutTable, storage_err};

/// Lists and opens tables from the storage manifest at each lookup, so every
/// query sees the tables and files in force when it is planned.
#[derive(Debug)]
pub(crate) struct LookoutSchema {
    storage: Storage,
}

impl LookoutSchema {
    pub(crate) fn new(storage: Storage) -> Self {
        LookoutSchema { storage }
    }
}

#[async_trait]
impl SchemaProvider for LookoutSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.storage.table_names().unwrap_or_default();
        names.retain(|n| !n.starts_with(SYSTEM_PREFIX));
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if name.starts_with(SYSTEM_PREFIX) {
            return Ok(None);
        }
        open_table(&self.storage, name)
    }

    fn table_exist(&self, name: &str) -> bool {
        !name.starts_with(SYSTEM_PREFIX) && self.storage.table(name).is_ok()
    }
}

fn open_table(storage: &Storage, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
    match storage.snapshot(name) {
        Ok(snapshot) => Ok(Some(Arc::new(LookoutTable::new(
            storage.clone(),
            snapshot,
        )?))),
        Err(StorageError::TableNotFound(_)) => Ok(None),
        Err(e) => Err(storage_err(e)),
    }
}

/// Prefix of the storage names of tables in the `lookout` schema.
pub(crate) const SYSTEM_PREFIX: &str = "lookout.";

/// The `lookout` schema: tables Lookout's own components keep (their storage
/// names carry the `lookout.` prefix) and the views they define.
#[derive(Debug)]
pub(crate) struct SystemSchema {
    lookout: crate::Lookout,
}

impl SystemSchema {
    pub(crate) fn new(lookout: crate::Lookout) -> Self {
        SystemSchema { lookout }
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .lookout
            .storage()
            .table_names()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| n.strip_prefix(SYSTEM_PREFIX).map(str::to_string))
            .collect();
        names.extend(self.lookout.view_names());
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(sql) = self.lookout.view(name) {
            let plan = crate::Session::new(self.lookout.clone())
                .logical_plan(&sql)
                .await
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            return Ok(Some(Arc::new(datafusion::catalog::view::ViewTable::new(
                plan,
                Some(sql),
            ))));
        }
        open_table(self.lookout.storage(), &format!("{SYSTEM_PREFIX}{name}"))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.lookout.view(name).is_some()
            || self
                .lookout
                .storage()
                .table(&format!("{SYSTEM_PREFIX}{name}"))
                .is_ok()
    }
}

//! The `public` schema: Lookout's tables as DataFusion sees them.

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
        self.storage.table_names().unwrap_or_default()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match self.storage.snapshot(name) {
            Ok(snapshot) => Ok(Some(Arc::new(LookoutTable::new(
                self.storage.clone(),
                snapshot,
            )?))),
            Err(StorageError::TableNotFound(_)) => Ok(None),
            Err(e) => Err(storage_err(e)),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.storage.table(name).is_ok()
    }
}

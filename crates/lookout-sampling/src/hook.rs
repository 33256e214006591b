//! How sampling takes part in every write: rows of a sampled table go to its
//! held area, stamped with their arrival; dropping a sampled table drops
//! what sampling keeps.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use lookout_query::ext::{IngestHook, Redirect};
use lookout_query::{Ingest, Result};
use lookout_storage::Storage;

use crate::decide::Decisions;
use crate::policy::{held_rows, held_table, is_sampling};

/// Sends a sampled table's rows to its held area.
#[derive(Debug)]
pub(crate) struct SamplingHook {
    pub(crate) decisions: Arc<Decisions>,
}

#[async_trait]
impl IngestHook for SamplingHook {
    fn redirect(&self, storage: &Storage, table: &str) -> Result<Option<Arc<dyn Redirect>>> {
        let name = held_table(table);
        match storage.table(&name) {
            Ok(def) if def.derived.as_ref().is_some_and(is_sampling) => {
                Ok(Some(Arc::new(HeldArea {
                    schema: def.schema()?,
                    name,
                })))
            }
            _ => Ok(None),
        }
    }

    async fn dropping(&self, ingest: &Ingest, table: &str) -> Result<()> {
        crate::statements::drop_sampling_of(ingest, &self.decisions, table).await
    }
}

/// A sampled table's held area.
#[derive(Debug)]
struct HeldArea {
    name: String,
    schema: SchemaRef,
}

impl Redirect for HeldArea {
    fn target(&self) -> &str {
        &self.name
    }

    fn rows(&self, rows: &RecordBatch, arrived: i64) -> Result<RecordBatch> {
        held_rows(rows, &self.schema, arrived)
    }
}

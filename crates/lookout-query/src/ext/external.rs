//! Formats `CREATE EXTERNAL TABLE ... STORED AS <format>` reads: data
//! another system writes, read in place at every query.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;

use crate::ServerFile;
use crate::error::Result;

/// A reader of one external format. The core checks the location against
/// the server's file access rules before it calls either method, and keeps
/// the columns `schema` returned with the table's definition.
#[async_trait]
pub trait ExternalFormat: Send + Sync + std::fmt::Debug {
    /// The columns of the table at `location` as it is now.
    async fn schema(&self, location: &ServerFile) -> Result<SchemaRef>;

    /// A provider that reads the table's current contents at each scan and
    /// presents them as `columns` (the columns recorded at creation).
    fn open(&self, location: ServerFile, columns: SchemaRef) -> Result<Arc<dyn TableProvider>>;
}

//! Cursors: `DECLARE`, and the portals the extended protocol reads them through.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::sql::sqlparser::ast::{self, Statement};

use super::Session;
use crate::error::SqlState;
use crate::error::{QueryError, Result};
use crate::ext::{Output, ident_name};

impl Session {
    pub(super) async fn declare_cursor(&mut self, declare: ast::Declare) -> Result<()> {
        let statement = ast::Statement::Declare {
            stmts: vec![declare.clone()],
        }
        .to_string();
        let (Some(query), [name]) = (declare.for_query, declare.names.as_slice()) else {
            return Err(QueryError::unsupported(
                "DECLARE supports cursors: DECLARE name CURSOR FOR query",
            ));
        };
        if declare.scroll == Some(true) {
            return Err(QueryError::unsupported(
                "SCROLL cursors are not supported; cursors scan forward only",
            ));
        }
        let holdable = declare.hold == Some(true);
        if !holdable && !self.in_transaction() {
            return Err(QueryError::new(
                SqlState::NoActiveSqlTransaction,
                "DECLARE CURSOR can only be used in transaction blocks (or declare it WITH HOLD)",
            ));
        }
        let prepared = self.plan(Statement::Query(query)).await?;
        let Output::Rows { schema, stream } = self.run_plan(&prepared, None).await? else {
            return Err(QueryError::syntax(
                "a cursor needs a query that returns rows",
            ));
        };
        let in_block = self.in_transaction();
        self.cursors.declare(
            &ident_name(name),
            statement,
            holdable,
            in_block,
            schema,
            stream,
        )
    }

    /// Up to `count` rows (all if `None`) of the cursor `name`, as the
    /// extended protocol's Execute of it as a portal returns them.
    pub async fn execute_cursor_portal(
        &mut self,
        name: &str,
        count: Option<usize>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let interrupt = self.interrupt();
        let cursors = Arc::clone(&self.cursors);
        let fetch = cursors.fetch(name, count);
        match interrupt {
            None => fetch.await,
            Some(interrupt) => tokio::select! {
                fetched = fetch => fetched,
                reason = interrupt => Err(crate::interrupt::canceled(reason)),
            },
        }
    }

    /// The columns of the cursor `name` declared with SQL `DECLARE`, which
    /// the extended protocol may describe as a portal, as in PostgreSQL.
    pub fn cursor_schema(&self, name: &str) -> Result<SchemaRef> {
        self.cursors.schema(name)
    }
}

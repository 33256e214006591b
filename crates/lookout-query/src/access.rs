//! What a session may do: read, write, or administer.
//!
//! The server sets a session's access from the role its user logged in with;
//! the embedded library and a server without authentication run with
//! [`Access::Admin`].

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::sql::sqlparser::ast::{CopySource, CopyTarget, Statement};

use crate::error::SqlState;
use crate::error::{QueryError, Result};
use crate::ext::{Access, Command};

/// The access a command needs; `restricted` tells the `lookout` schema
/// tables only admins may touch.
pub(crate) fn required(command: &Command, restricted: impl Fn(&str) -> bool) -> Access {
    match command {
        Command::Sql(statement) if touches(statement, restricted) => Access::Admin,
        Command::Sql(statement) => required_for_statement(statement),
        Command::Extension(statement) => statement.access(),
    }
}

/// Whether a statement names a restricted `lookout.<table>`.
fn touches(statement: &Statement, restricted: impl Fn(&str) -> bool) -> bool {
    datafusion::sql::sqlparser::ast::visit_relations(statement, |name| {
        let parts: Vec<String> = name
            .0
            .iter()
            .filter_map(|p| p.as_ident().map(|i| i.value.to_lowercase()))
            .collect();
        match parts.as_slice() {
            [.., schema, table] if schema == "lookout" && restricted(table) => {
                std::ops::ControlFlow::Break(())
            }
            _ => std::ops::ControlFlow::Continue(()),
        }
    })
    .is_break()
}

fn required_for_statement(statement: &Statement) -> Access {
    match statement {
        // EXPLAIN ANALYZE runs the statement.
        Statement::Explain {
            analyze: true,
            statement,
            ..
        } => required_for_statement(statement),
        Statement::Query(_)
        | Statement::Explain { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::Set(_)
        | Statement::Reset(_)
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. } => Access::Read,
        Statement::Copy { source, target, .. } => {
            let file = matches!(target, CopyTarget::File { .. } | CopyTarget::Program { .. });
            match source {
                _ if file => Access::Admin,
                // COPY (query) TO STDOUT and COPY table TO STDOUT only read.
                CopySource::Query(_) => Access::Read,
                CopySource::Table { .. } if matches!(target, CopyTarget::Stdout) => Access::Read,
                CopySource::Table { .. } => Access::Write,
            }
        }
        _ => Access::Write,
    }
}

/// Fails with 42501 unless `granted` covers what `command` needs.
pub(crate) fn check(
    user: &str,
    granted: Access,
    command: &Command,
    restricted: impl Fn(&str) -> bool,
) -> Result<()> {
    let needed = required(command, restricted);
    if needed <= granted {
        return Ok(());
    }
    Err(denied(user, granted, needed))
}

/// Who runs a statement. Each execution carries it in its DataFusion
/// session configuration, so that the tables a plan really reads and writes,
/// after name resolution (search path, views, COPY's generated query), are
/// checked, not only the names the statement's text spells.
#[derive(Debug)]
pub(crate) struct Principal {
    user: String,
    access: Access,
    lookout: crate::Lookout,
}

impl Principal {
    pub(crate) fn new(user: &str, access: Access, lookout: crate::Lookout) -> Principal {
        Principal {
            user: user.to_string(),
            access,
            lookout,
        }
    }

    /// Fails with 42501 unless this principal may `needed` the table with
    /// storage name `table`; restricted `lookout` tables need an admin, and
    /// so does writing any `lookout` table directly.
    pub(crate) fn check_table(&self, table: &str, needed: Access) -> Result<()> {
        self.require(match table.strip_prefix(crate::ext::SYSTEM_PREFIX) {
            Some(t) if self.lookout.is_restricted(t) => Access::Admin,
            // Lookout's own tables (alert rules and log, silences, review
            // queues, sampling state) change only through their statements,
            // which write them with the engine's rights: a plain INSERT or
            // DELETE could plant an alert rule or rewrite history.
            Some(_) if needed >= Access::Write => Access::Admin,
            _ => needed,
        })
    }

    /// Fails with 42501 unless this principal has `needed`.
    fn require(&self, needed: Access) -> Result<()> {
        if needed <= self.access {
            Ok(())
        } else {
            Err(denied(&self.user, self.access, needed))
        }
    }
}

/// Checks the principal of the execution `state` belongs to (none: an
/// internal plan, which runs with the engine's own rights).
pub(crate) fn authorize(
    state: &dyn datafusion::catalog::Session,
    table: &str,
    needed: Access,
) -> datafusion::error::Result<()> {
    match state.config().get_extension::<Principal>() {
        Some(p) => p
            .check_table(table, needed)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e))),
        None => Ok(()),
    }
}

/// A table only admins may read, such as `pg_catalog.pg_authid`.
#[derive(Debug)]
pub(crate) struct AdminOnly(Arc<dyn TableProvider>);

impl AdminOnly {
    pub(crate) fn new(table: Arc<dyn TableProvider>) -> AdminOnly {
        AdminOnly(table)
    }
}

#[async_trait::async_trait]
impl TableProvider for AdminOnly {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> datafusion::datasource::TableType {
        self.0.table_type()
    }

    async fn scan(
        &self,
        state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[datafusion::logical_expr::Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        if let Some(p) = state.config().get_extension::<Principal>() {
            p.require(Access::Admin)
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        }
        self.0.scan(state, projection, filters, limit).await
    }
}

fn denied(user: &str, granted: Access, needed: Access) -> QueryError {
    let what = match needed {
        Access::Read => "read",
        Access::Write => "write or change tables",
        Access::Admin => "manage alerts and roles, or read and write server files",
    };
    QueryError::new(
        SqlState::InsufficientPrivilege,
        format!(
            "permission denied: role \"{user}\" ({}) may not {what}",
            granted.role_name()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::dialect::Postgres;
    use datafusion::sql::sqlparser::parser::Parser;

    fn needs(sql: &str) -> Access {
        let statement = Parser::parse_sql(&Postgres, sql).expect("parses").remove(0);
        required(&Command::Sql(statement), |t| t == "roles")
    }

    #[test]
    fn statements_need_the_right_access() {
        assert_eq!(needs("SELECT 1"), Access::Read);
        assert_eq!(needs("EXPLAIN SELECT 1"), Access::Read);
        assert_eq!(needs("COPY (SELECT 1) TO STDOUT"), Access::Read);
        assert_eq!(needs("COPY t TO STDOUT"), Access::Read);
        assert_eq!(needs("SET statement_timeout = 10"), Access::Read);
        assert_eq!(needs("INSERT INTO t VALUES (1)"), Access::Write);
        assert_eq!(
            needs("EXPLAIN ANALYZE INSERT INTO t VALUES (1)"),
            Access::Write
        );
        assert_eq!(needs("COPY t FROM STDIN"), Access::Write);
        assert_eq!(needs("CREATE TABLE t (ts TIMESTAMPTZ)"), Access::Write);
        assert_eq!(needs("COPY t FROM '/etc/passwd'"), Access::Admin);
        assert_eq!(needs("COPY t TO '/tmp/x.csv'"), Access::Admin);
        assert_eq!(needs("SELECT * FROM lookout.roles"), Access::Admin);
        assert_eq!(needs("SELECT * FROM lookout.alerts"), Access::Read);
    }
}

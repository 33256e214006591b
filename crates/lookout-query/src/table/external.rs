//! External tables: `CREATE EXTERNAL TABLE name STORED AS <format>
//! LOCATION '<path>'` records a table another system writes; every query
//! reads its current contents in place, through the [`ExternalFormat`] an
//! extension registered for the format.
//!
//! The location is a server path, so creating one is an administrator's
//! statement checked against the same file access rules as server-side
//! `COPY` (`[server] allowed_dirs`); reading one afterwards is a plain read,
//! open to every role, and checks the location again (the rules may have
//! changed since).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::sqlparser::ast::{Ident, ObjectName, ObjectNamePart};
use lookout_storage::{ColumnDef, ExternalTable, schema_of};

use crate::error::{QueryError, Result, SqlState};
use crate::ext::names::SYSTEM_PREFIX;
use crate::ext::{Access, ExtStatement, ExternalFormat, Output, SqlSession, Words, quote_ident};
use crate::ext::{quote_literal, table_name};

/// Parses `CREATE EXTERNAL TABLE` and `DROP EXTERNAL TABLE`; `None` for
/// any other statement.
pub(crate) fn parse(lookout: &crate::Lookout, sql: &str) -> Option<Result<Box<dyn ExtStatement>>> {
    let mut w = Words::new(sql).ok()?;
    if w.eat_words(&["CREATE", "EXTERNAL", "TABLE"]) {
        Some(parse_create(lookout, w).map(|s| Box::new(s) as Box<dyn ExtStatement>))
    } else if w.eat_words(&["DROP", "EXTERNAL", "TABLE"]) {
        Some(parse_drop(lookout, w).map(|s| Box::new(s) as Box<dyn ExtStatement>))
    } else {
        None
    }
}

fn parse_create(lookout: &crate::Lookout, mut w: Words<'_>) -> Result<CreateExternal> {
    let if_not_exists = w.eat_words(&["IF", "NOT", "EXISTS"]);
    let name = public_name(&mut w)?;
    w.expect_word("STORED")?;
    w.expect_word("AS")?;
    let format = w.name()?.to_lowercase();
    w.expect_word("LOCATION")?;
    let location = w.string("a location string")?;
    w.expect_end()?;
    Ok(CreateExternal {
        lookout: lookout.clone(),
        name,
        format,
        location,
        if_not_exists,
    })
}

fn parse_drop(lookout: &crate::Lookout, mut w: Words<'_>) -> Result<DropExternal> {
    let if_exists = w.eat_words(&["IF", "EXISTS"]);
    let name = public_name(&mut w)?;
    w.expect_end()?;
    Ok(DropExternal {
        lookout: lookout.clone(),
        name,
        if_exists,
    })
}

/// A table name in the `public` schema, as `CREATE TABLE` takes it.
fn public_name(w: &mut Words<'_>) -> Result<String> {
    let dotted = w.dotted_name()?;
    let parts = dotted
        .split('.')
        .map(|p| ObjectNamePart::Identifier(Ident::with_quote('"', p)))
        .collect();
    let name = table_name(&ObjectName(parts))?;
    if name.starts_with(SYSTEM_PREFIX) {
        return Err(QueryError::new(
            SqlState::InsufficientPrivilege,
            format!("external tables are created in the public schema, not as \"{dotted}\""),
        ));
    }
    Ok(name)
}

/// An external table for planning: its recorded columns. Each scan checks
/// the location against the file access rules of the moment and reads the
/// data as it is then; listing the catalog never touches the data, so a
/// table whose location went away fails only the queries that read it.
#[derive(Debug)]
pub(crate) struct ExternalProvider {
    lookout: crate::Lookout,
    name: String,
    table: ExternalTable,
    schema: SchemaRef,
}

impl ExternalProvider {
    pub(crate) fn new(lookout: crate::Lookout, name: &str, table: ExternalTable) -> Result<Self> {
        let schema = schema_of(&table.columns)?;
        Ok(ExternalProvider {
            lookout,
            name: name.to_string(),
            table,
            schema,
        })
    }
}

#[async_trait]
impl TableProvider for ExternalProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let external = |e: QueryError| DataFusionError::External(Box::new(e));
        let format = installed(&self.lookout, &self.table.format).map_err(external)?;
        let location = self
            .lookout
            .options()
            .file_access
            .check(&self.table.location)
            .map_err(external)?;
        let reader = format
            .open(location, Arc::clone(&self.schema))
            .map_err(external)?;
        reader.scan(state, projection, filters, limit).await
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        _input: Arc<dyn ExecutionPlan>,
        _insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Err(self.read_only("insert into"))
    }

    async fn delete_from(
        &self,
        _state: &dyn Session,
        _filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Err(self.read_only("delete from"))
    }

    async fn update(
        &self,
        _state: &dyn Session,
        _assignments: Vec<(String, Expr)>,
        _filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Err(self.read_only("update"))
    }

    async fn truncate(&self, _state: &dyn Session) -> DfResult<Arc<dyn ExecutionPlan>> {
        Err(self.read_only("truncate"))
    }
}

impl ExternalProvider {
    /// The error for a write: the engine that owns the data writes it.
    fn read_only(&self, verb: &str) -> DataFusionError {
        DataFusionError::External(Box::new(QueryError::new(
            SqlState::WrongObjectType,
            format!(
                "cannot {verb} external table {}: it is read-only, written by the engine that owns it",
                quote_ident(&self.name)
            ),
        )))
    }
}

fn installed(lookout: &crate::Lookout, format: &str) -> Result<Arc<dyn ExternalFormat>> {
    lookout.external_format(format).ok_or_else(|| {
        QueryError::new(
            SqlState::FeatureNotSupported,
            format!("external tables STORED AS {format} are not supported (supported: DELTA)"),
        )
    })
}

/// `CREATE EXTERNAL TABLE [IF NOT EXISTS] name STORED AS format LOCATION 'path'`.
#[derive(Debug)]
struct CreateExternal {
    lookout: crate::Lookout,
    name: String,
    format: String,
    location: String,
    if_not_exists: bool,
}

impl fmt::Display for CreateExternal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CREATE EXTERNAL TABLE {}{} STORED AS {} LOCATION {}",
            if self.if_not_exists {
                "IF NOT EXISTS "
            } else {
                ""
            },
            quote_ident(&self.name),
            self.format.to_uppercase(),
            quote_literal(&self.location)
        )
    }
}

#[async_trait]
impl ExtStatement for CreateExternal {
    fn access(&self) -> Access {
        Access::Admin
    }

    async fn execute(&self, _session: &mut dyn SqlSession) -> Result<Output> {
        let format = installed(&self.lookout, &self.format)?;
        let location = self.lookout.options().file_access.check(&self.location)?;
        let schema = format.schema(&location).await?;
        let columns: Vec<ColumnDef> = schema
            .fields()
            .iter()
            .map(|f| ColumnDef::from_field(f))
            .collect();
        // The definition keeps types as text: refuse one that does not
        // read back as itself rather than answer with another type later.
        let kept = schema_of(&columns)?;
        for (field, back) in schema.fields().iter().zip(kept.fields()) {
            if field.data_type() != back.data_type() {
                return Err(QueryError::new(
                    SqlState::FeatureNotSupported,
                    format!(
                        "column \"{}\" of type {} cannot be read from an external table",
                        field.name(),
                        field.data_type()
                    ),
                ));
            }
        }
        let table = ExternalTable {
            format: self.format.clone(),
            location: location.path().to_string_lossy().into_owned(),
            columns,
        };
        self.lookout
            .storage()
            .create_external_table(&self.name, table, self.if_not_exists)
            .await?;
        Ok(Output::Command {
            tag: "CREATE EXTERNAL TABLE",
            rows: None,
        })
    }
}

/// `DROP EXTERNAL TABLE [IF EXISTS] name`: forgets the definition; the
/// data stays where it is.
#[derive(Debug)]
struct DropExternal {
    lookout: crate::Lookout,
    name: String,
    if_exists: bool,
}

impl fmt::Display for DropExternal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DROP EXTERNAL TABLE {}{}",
            if self.if_exists { "IF EXISTS " } else { "" },
            quote_ident(&self.name)
        )
    }
}

#[async_trait]
impl ExtStatement for DropExternal {
    fn access(&self) -> Access {
        Access::Admin
    }

    async fn execute(&self, _session: &mut dyn SqlSession) -> Result<Output> {
        self.lookout
            .storage()
            .drop_external_table(&self.name, self.if_exists)
            .await?;
        Ok(Output::Command {
            tag: "DROP EXTERNAL TABLE",
            rows: None,
        })
    }
}

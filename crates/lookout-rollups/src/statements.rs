//! `CREATE ROLLUP`, `DROP ROLLUP` and `SHOW ROLLUPS`, parsed once into
//! typed statements.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use futures::StreamExt;
use lookout_query::ext::{Access, ExtStatement, Output, SqlExtension, quote_ident, quoted_table};
use lookout_query::{Lookout, QueryError, Result, SqlSession};
use lookout_storage::{CreateTable, Derivation, Storage, StorageError};

use crate::derive::{Combiner, KIND, fit, is_rollup};
use crate::grammar::{BUCKET_COLUMN, RollupDef, parse_create, parse_drop, starts_with_words};
use lookout_query::SqlState;

/// The statement extension.
#[derive(Debug)]
pub(crate) struct RollupStatements {
    pub(crate) lookout: Lookout,
}

impl SqlExtension for RollupStatements {
    fn parse(&self, sql: &str) -> Option<Result<Box<dyn ExtStatement>>> {
        let statement = if starts_with_words(sql, "show", "rollups") {
            Ok(RollupStatement::Show)
        } else if starts_with_words(sql, "drop", "rollup") {
            parse_drop(sql).map(|(name, if_exists)| RollupStatement::Drop { name, if_exists })
        } else if starts_with_words(sql, "create", "rollup") {
            parse_create(sql).map(|(rollup, if_not_exists)| RollupStatement::Create {
                rollup,
                if_not_exists,
            })
        } else {
            return None;
        };
        Some(statement.map(|statement| {
            Box::new(Parsed {
                lookout: self.lookout.clone(),
                statement,
            }) as Box<dyn ExtStatement>
        }))
    }
}

/// One rollup statement.
#[derive(Debug)]
enum RollupStatement {
    Create {
        rollup: RollupDef,
        if_not_exists: bool,
    },
    Drop {
        name: String,
        if_exists: bool,
    },
    Show,
}

/// A rollup statement with the database it changes.
#[derive(Debug)]
struct Parsed {
    lookout: Lookout,
    statement: RollupStatement,
}

impl fmt::Display for Parsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.statement {
            RollupStatement::Create {
                rollup,
                if_not_exists,
            } => {
                let definition = rollup.to_sql();
                match (if_not_exists, definition.strip_prefix("CREATE ROLLUP ")) {
                    (true, Some(rest)) => write!(f, "CREATE ROLLUP IF NOT EXISTS {rest}"),
                    _ => f.write_str(&definition),
                }
            }
            RollupStatement::Drop { name, if_exists } => {
                let if_exists = if *if_exists { "IF EXISTS " } else { "" };
                write!(f, "DROP ROLLUP {if_exists}{}", quote_ident(name))
            }
            RollupStatement::Show => f.write_str("SHOW ROLLUPS"),
        }
    }
}

#[async_trait]
impl ExtStatement for Parsed {
    fn access(&self) -> Access {
        match self.statement {
            RollupStatement::Show => Access::Read,
            _ => Access::Write,
        }
    }

    fn schema(&self) -> Option<SchemaRef> {
        matches!(self.statement, RollupStatement::Show).then(show_schema)
    }

    async fn execute(&self, session: &mut dyn SqlSession) -> Result<Output> {
        let storage = self.lookout.storage();
        match &self.statement {
            RollupStatement::Show => show_rollups(storage),
            RollupStatement::Drop { name, if_exists } => {
                drop_rollup(storage, name, *if_exists).await
            }
            RollupStatement::Create {
                rollup,
                if_not_exists,
            } => create_rollup(&self.lookout, session, rollup, *if_not_exists).await,
        }
    }
}

fn command(tag: &'static str) -> Output {
    Output::Command { tag, rows: None }
}

fn show_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", arrow::datatypes::DataType::Utf8, false),
        Field::new("source", arrow::datatypes::DataType::Utf8, false),
        Field::new("definition", arrow::datatypes::DataType::Utf8, false),
    ]))
}

fn show_rollups(storage: &Storage) -> Result<Output> {
    let manifest = storage.manifest()?;
    let (mut names, mut sources, mut definitions) = (Vec::new(), Vec::new(), Vec::new());
    for entry in manifest.tables.values() {
        if let Some(d) = entry.def.derived.as_ref().filter(|d| is_rollup(d)) {
            names.push(entry.def.name.clone());
            sources.push(d.source.clone());
            definitions.push(d.definition.clone());
        }
    }
    let schema = show_schema();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(arrow::array::StringArray::from(names)),
            Arc::new(arrow::array::StringArray::from(sources)),
            Arc::new(arrow::array::StringArray::from(definitions)),
        ],
    )?;
    Ok(Output::from_batches(schema, vec![batch]))
}

async fn drop_rollup(storage: &Storage, name: &str, if_exists: bool) -> Result<Output> {
    match storage.table(name) {
        Ok(def) if def.derived.as_ref().is_some_and(is_rollup) => {
            storage.drop_table(name, false).await?;
        }
        Ok(_) => {
            return Err(QueryError::new(
                SqlState::WrongObjectType,
                format!("\"{name}\" is a table, not a rollup; use DROP TABLE"),
            ));
        }
        Err(StorageError::TableNotFound(_)) if if_exists => {}
        Err(StorageError::TableNotFound(_)) => {
            return Err(QueryError::new(
                SqlState::UndefinedObject,
                format!("rollup \"{name}\" does not exist"),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(command("DROP ROLLUP"))
}

async fn create_rollup(
    lookout: &Lookout,
    session: &dyn SqlSession,
    rollup: &RollupDef,
    if_not_exists: bool,
) -> Result<Output> {
    let ingest = lookout.ingest();
    let storage = ingest.storage();
    let source = storage.table(&rollup.source)?;
    if source.derived.is_some() {
        return Err(QueryError::unsupported(format!(
            "\"{}\" is a rollup; rollups of rollups are not supported (merge it with a query instead)",
            source.name
        )));
    }
    if rollup.every < 1_000_000 {
        return Err(QueryError::new(
            SqlState::InvalidParameterValue,
            format!(
                "a rollup bucket must be at least a second, not '{}'",
                rollup.every_text
            ),
        ));
    }
    // The rollup table's columns, from the delta query over no rows; this
    // also checks every expression against the source's columns.
    let empty = RecordBatch::new_empty(source.schema()?);
    let shape = rollup.delta(&source, vec![empty]).await?;
    let fields: Vec<Field> = shape
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let f = f.as_ref().clone();
            if f.name() == BUCKET_COLUMN {
                f.with_nullable(false)
            } else {
                f
            }
        })
        .collect();
    let schema = Schema::new(fields);
    let partition = rollup
        .group_by
        .iter()
        .any(|g| Some(g) == source.options.partition_column.as_ref())
        .then(|| source.options.partition_column.clone())
        .flatten();
    let request = CreateTable {
        time_column: Some(BUCKET_COLUMN.to_string()),
        partition_column: Some(partition),
        bucket_micros: Some(rollup.partition_width()),
        ttl_micros: None,
        versions: None,
        derived: Some(Derivation {
            source: rollup.source.clone(),
            definition: rollup.to_sql(),
            pending: true,
            kind: Some(KIND.to_string()),
        }),
    };
    let rollup = Arc::new(rollup.clone());
    // Alone at the gate: no write is between reading the rollups and
    // committing its rows, so the snapshot below holds exactly the rows
    // written before the rollup existed. A scan takes its snapshot when it
    // is planned physically, so the backfill starts before the gate opens.
    let backfill = {
        let _gate = ingest.gate().write().await;
        if !storage
            .create_table(&rollup.name, &schema, request, if_not_exists)
            .await?
        {
            return Ok(command("CREATE ROLLUP"));
        }
        storage.set_combiner(
            &rollup.name,
            Arc::new(Combiner {
                rollup: Arc::clone(&rollup),
            }),
        )?;
        let sql = rollup.delta_sql(&source.options.time_column, &quoted_table(&source.name));
        match session.logical_plan(&sql).await {
            Ok(plan) => session.execute_logical(plan).await,
            Err(e) => Err(e),
        }
    };
    let filled = match backfill {
        Ok(rows) => backfill_from(storage, &rollup.name, rows).await,
        Err(e) => Err(e),
    };
    if let Err(e) = filled {
        let _ = storage.drop_table(&rollup.name, true).await;
        return Err(e);
    }
    storage.finish_derivation(&rollup.name).await?;
    Ok(command("CREATE ROLLUP"))
}

async fn backfill_from(
    storage: &Storage,
    name: &str,
    stream: datafusion::execution::SendableRecordBatchStream,
) -> Result<()> {
    let target = storage.table(name)?.schema()?;
    let rows = stream.map(move |b| {
        b.map_err(|e| StorageError::InvalidData(e.to_string()))
            .and_then(|b| fit(&b, &target).map_err(|e| StorageError::InvalidData(e.to_string())))
    });
    storage.bulk_load(name, Box::pin(rows)).await?;
    Ok(())
}

//! `COMMENT ON TABLE` and `COMMENT ON COLUMN`, kept in the table
//! definitions, and the catalog functions that read them back:
//! `obj_description(oid, 'pg_class')` (psql's `\dt+`, BI tools' table
//! lists) and `col_description(oid, attnum)` (psql's `\d+`).
//!
//! Table oids are handed out by the emulated `pg_class` as it is read, per
//! session; so each read of `pg_class` remembers which oid names which
//! table, and the functions look comments up through that memory.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::catalog::TableProvider;
use datafusion::common::Result as DfResult;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{CommentObject, ObjectName};

use crate::error::SqlState;
use crate::error::{QueryError, Result};
use crate::ext::{Output, SYSTEM_PREFIX, ident_name, table_name};

/// The longest comment kept: comments live in the table definitions,
/// which every manifest commit rewrites.
const MAX_COMMENT_BYTES: usize = 64 * 1024;

/// Runs `COMMENT ON TABLE | COLUMN name IS 'text' | NULL`.
pub(crate) async fn comment_on(
    lookout: &crate::Lookout,
    object: CommentObject,
    name: &ObjectName,
    comment: Option<String>,
    if_exists: bool,
) -> Result<Output> {
    if comment
        .as_ref()
        .is_some_and(|c| c.len() > MAX_COMMENT_BYTES)
    {
        return Err(QueryError::new(
            SqlState::ProgramLimitExceeded,
            format!(
                "comment is longer than {} KiB; keep long documentation elsewhere and link to it",
                MAX_COMMENT_BYTES / 1024
            ),
        ));
    }
    let storage = lookout.storage();
    let (table, column) = match object {
        CommentObject::Table => (table_name(name)?, None),
        CommentObject::Column => {
            let mut parts = name.0.clone();
            let column = parts
                .pop()
                .and_then(|p| p.as_ident().map(ident_name))
                .filter(|_| !parts.is_empty())
                .ok_or_else(|| {
                    QueryError::syntax("COMMENT ON COLUMN takes table.column".to_string())
                })?;
            (table_name(&ObjectName(parts))?, Some(column))
        }
        other => {
            return Err(QueryError::unsupported(format!(
                "COMMENT ON {other} is not supported; Lookout keeps comments on tables and columns"
            )));
        }
    };
    if table.starts_with(SYSTEM_PREFIX) {
        return Err(QueryError::unsupported(
            "COMMENT ON a lookout.* table is not supported; its columns are documented in docs/",
        ));
    }
    if storage.view(&table)?.is_some() {
        return Err(QueryError::unsupported(format!(
            "COMMENT ON a view (\"{table}\") is not supported; Lookout keeps comments on tables and columns"
        )));
    }
    match storage.table(&table) {
        Err(lookout_storage::StorageError::TableNotFound(_)) if if_exists => {}
        Err(e) => return Err(e.into()),
        Ok(_) => {
            let text = comment.filter(|c| !c.is_empty());
            storage
                .set_comment(&table, column.as_deref(), text.as_deref())
                .await?;
        }
    }
    Ok(Output::Command {
        tag: "COMMENT",
        rows: None,
    })
}

/// Which relation each `pg_class` oid names, as this session's catalog
/// handed the oids out: `(schema, relation)` by oid.
#[derive(Debug, Default)]
pub(crate) struct RelationNames(RwLock<HashMap<i64, (String, String)>>);

impl RelationNames {
    /// Reads `pg_class` (with `pg_namespace` for the schema names) once,
    /// remembers its oids, and returns the rows read as the table to scan.
    pub(crate) async fn remember(
        &self,
        classes: Arc<dyn TableProvider>,
        namespaces: Arc<dyn TableProvider>,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let ctx = SessionContext::new();
        let schema = classes.schema();
        let class_rows = ctx.read_table(classes)?.collect().await?;
        let namespace_rows = ctx.read_table(namespaces)?.collect().await?;
        let mut schemas = HashMap::new();
        for batch in &namespace_rows {
            let (Some(oids), Some(names)) = (
                int64_column(batch, "oid")?,
                batch
                    .column_by_name("nspname")
                    .and_then(|c| c.as_string_opt::<i32>()),
            ) else {
                continue;
            };
            for i in 0..batch.num_rows() {
                if oids.is_valid(i) && names.is_valid(i) {
                    schemas.insert(oids.value(i), names.value(i).to_string());
                }
            }
        }
        {
            let mut known = self.0.write().unwrap_or_else(|p| p.into_inner());
            for batch in &class_rows {
                let (Some(oids), Some(namespaces), Some(names)) = (
                    int64_column(batch, "oid")?,
                    int64_column(batch, "relnamespace")?,
                    batch
                        .column_by_name("relname")
                        .and_then(|c| c.as_string_opt::<i32>()),
                ) else {
                    continue;
                };
                for i in 0..batch.num_rows() {
                    if let Some(schema) = schemas.get(&namespaces.value(i))
                        && oids.is_valid(i)
                        && names.is_valid(i)
                    {
                        known.insert(oids.value(i), (schema.clone(), names.value(i).to_string()));
                    }
                }
            }
        }
        Ok(Arc::new(MemTable::try_new(schema, vec![class_rows])?))
    }

    fn table_of(&self, oid: i64) -> Option<String> {
        let known = self.0.read().unwrap_or_else(|p| p.into_inner());
        match known.get(&oid) {
            Some((schema, table)) if schema == "public" => Some(table.clone()),
            _ => None,
        }
    }
}

fn int64_column(
    batch: &arrow::array::RecordBatch,
    name: &str,
) -> DfResult<Option<arrow::array::Int64Array>> {
    batch
        .column_by_name(name)
        .map(|c| {
            Ok(arrow::compute::cast(c, &DataType::Int64)?
                .as_primitive::<Int64Type>()
                .clone())
        })
        .transpose()
}

/// `obj_description` and `col_description`, for one session.
pub(crate) fn description_functions(
    lookout: &crate::Lookout,
    relations: &Arc<RelationNames>,
) -> Vec<ScalarUDF> {
    [Described::Object, Described::Column]
        .into_iter()
        .map(|described| {
            ScalarUDF::new_from_impl(Descriptions {
                described,
                signature: Signature::variadic_any(Volatility::Stable),
                lookout: lookout.clone(),
                relations: Arc::clone(relations),
            })
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Described {
    /// `obj_description(oid [, catalog])`: a table's or a function's.
    Object,
    /// `col_description(table oid, column number)`.
    Column,
}

#[derive(Debug)]
struct Descriptions {
    described: Described,
    signature: Signature,
    lookout: crate::Lookout,
    relations: Arc<RelationNames>,
}

impl PartialEq for Descriptions {
    fn eq(&self, other: &Self) -> bool {
        self.described == other.described && Arc::ptr_eq(&self.relations, &other.relations)
    }
}

impl Eq for Descriptions {}

impl Hash for Descriptions {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.described.hash(state);
    }
}

impl Descriptions {
    fn table_comment(&self, oid: i64) -> Option<String> {
        let table = self.relations.table_of(oid)?;
        self.lookout.storage().table(&table).ok()?.comment
    }

    fn column_comment(&self, oid: i64, number: i64) -> Option<String> {
        let table = self.relations.table_of(oid)?;
        let def = self.lookout.storage().table(&table).ok()?;
        let index = usize::try_from(number.checked_sub(1)?).ok()?;
        def.columns.get(index)?.comment.clone()
    }

    fn describe(&self, oid: i64, second: Option<&str>) -> Option<String> {
        match (self.described, second) {
            (Described::Column, Some(number)) => self.column_comment(oid, number.parse().ok()?),
            (Described::Column, None) => None,
            (Described::Object, Some("pg_class")) => self.table_comment(oid),
            (Described::Object, Some("pg_proc")) => {
                crate::pg::function_catalog::description(oid).map(str::to_string)
            }
            (Described::Object, Some(_)) => None,
            (Described::Object, None) => crate::pg::function_catalog::description(oid)
                .map(str::to_string)
                .or_else(|| self.table_comment(oid)),
        }
    }
}

impl ScalarUDFImpl for Descriptions {
    fn name(&self) -> &str {
        match self.described {
            Described::Object => "obj_description",
            Described::Column => "col_description",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        crate::pg::function_catalog::text_by_oid(args, |oid, second| self.describe(oid, second))
    }
}

//! Table DDL: `CREATE TABLE`, `CREATE VIEW`, `ALTER TABLE`.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::sql::sqlparser::ast::{
    self, AlterTableOperation, ColumnOption, CreateTableOptions, SqlOption,
};
use lookout_storage::{CreateTable, StorageError};

use super::{Session, option_text};
use crate::error::SqlState;
use crate::error::{QueryError, Result};
use crate::ext::{Output, SYSTEM_PREFIX, ident_name, parse_duration, quote_ident, table_name};
use crate::table::status::STATUS_TABLES;

/// The most dimensions a `vector(n)` or `real[n]` column may declare
/// (pgvector's limit).
const MAX_DIMENSIONS: u64 = 16_000;

/// Arrow type for a SQL column type, as Lookout stores it.
fn arrow_type(dt: &ast::DataType) -> Result<DataType> {
    if let ast::DataType::Array(element) = dt {
        return array_type(element);
    }
    let text = dt.to_string().to_ascii_lowercase();
    let base = text.split('(').next().unwrap_or("").trim();
    Ok(match base {
        // pgvector's type: a fixed number of single-precision floats.
        "vector" => {
            let dims = text
                .strip_prefix("vector(")
                .and_then(|rest| rest.strip_suffix(')'))
                .and_then(|n| n.trim().parse::<u64>().ok());
            match dims {
                Some(n) => fixed_list(DataType::Float32, n)?,
                None => {
                    return Err(QueryError::new(
                        SqlState::InvalidParameterValue,
                        format!("type \"{text}\" needs its dimensions: vector(n)"),
                    ));
                }
            }
        }
        "text" | "varchar" | "character varying" | "char" | "character" | "string" | "uuid"
        | "json" | "jsonb" | "name" => DataType::Utf8,
        "smallint" | "int2" => DataType::Int16,
        "int" | "integer" | "int4" => DataType::Int32,
        "bigint" | "int8" => DataType::Int64,
        "tinyint" => DataType::Int8,
        "real" | "float4" => DataType::Float32,
        "double precision" | "double" | "float8" | "float" | "numeric" | "decimal" => {
            DataType::Float64
        }
        "boolean" | "bool" => DataType::Boolean,
        "date" => DataType::Date32,
        "bytea" => DataType::Binary,
        b if b.starts_with("timestamp") => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        _ => {
            return Err(QueryError::new(
                SqlState::UndefinedObject,
                format!("type \"{text}\" is not supported"),
            ));
        }
    })
}

/// `real[]`, `double precision[]` (a list) or with a size, `real[384]` (a
/// fixed-size list): embeddings. Arrays of other types are not supported.
fn array_type(element: &ast::ArrayElemTypeDef) -> Result<DataType> {
    let (item, size) = match element {
        ast::ArrayElemTypeDef::SquareBracket(item, size) => (item.as_ref(), *size),
        ast::ArrayElemTypeDef::AngleBracket(item) | ast::ArrayElemTypeDef::Parenthesis(item) => {
            (item.as_ref(), None)
        }
        ast::ArrayElemTypeDef::None => {
            return Err(QueryError::unsupported(
                "an array column needs an element type: real[] or double precision[]",
            ));
        }
    };
    let item_type = arrow_type(item)?;
    if !matches!(item_type, DataType::Float32 | DataType::Float64) {
        return Err(QueryError::unsupported(format!(
            "arrays of {item} are not supported: array columns hold embeddings, real[] or double precision[]"
        )));
    }
    match size {
        Some(n) => fixed_list(item_type, n),
        None => Ok(DataType::List(Arc::new(Field::new_list_field(
            item_type, true,
        )))),
    }
}

/// A fixed-size list of `n` values of `item`, for `vector(n)` and `real[n]`.
fn fixed_list(item: DataType, n: u64) -> Result<DataType> {
    if n == 0 || n > MAX_DIMENSIONS {
        return Err(QueryError::new(
            SqlState::InvalidParameterValue,
            format!("dimensions must be between 1 and {MAX_DIMENSIONS}, got {n}"),
        ));
    }
    Ok(DataType::FixedSizeList(
        Arc::new(Field::new_list_field(item, true)),
        n as i32,
    ))
}

fn column_field(col: &ast::ColumnDef) -> Result<Field> {
    let not_null = col.options.iter().any(|o| {
        matches!(o.option, ColumnOption::NotNull)
            || matches!(&o.option, ColumnOption::PrimaryKey(_))
    });
    let field = Field::new(
        ident_name(&col.name),
        arrow_type(&col.data_type)?,
        !not_null,
    );
    // json and jsonb are text the storage engine checks on every write.
    let text = col.data_type.to_string().to_ascii_lowercase();
    Ok(match text.as_str() {
        "json" | "jsonb" => {
            field.with_metadata([(lookout_storage::SQL_TYPE_METADATA.to_string(), text)].into())
        }
        _ => field,
    })
}

impl Session {
    pub(super) async fn create_table(&mut self, ct: ast::CreateTable) -> Result<Output> {
        if ct.query.is_some() {
            return Err(QueryError::unsupported(
                "CREATE TABLE AS is not supported; create the table, then INSERT INTO ... SELECT",
            ));
        }
        let name = table_name(&ct.name)?;
        // The built-in system table would hide a stored one of its name.
        if let Some(status) = name
            .strip_prefix(SYSTEM_PREFIX)
            .filter(|n| STATUS_TABLES.contains(n))
        {
            return Err(QueryError::new(
                SqlState::DuplicateTable,
                format!("relation \"{status}\" already exists"),
            ));
        }
        let fields = ct
            .columns
            .iter()
            .map(column_field)
            .collect::<Result<Vec<_>>>()?;
        let schema = Schema::new(fields);
        let mut request = CreateTable::default();
        let (mut record_key, mut version, mut deleted) = (None, None, None);
        let options: &[SqlOption] = match &ct.table_options {
            CreateTableOptions::With(o) | CreateTableOptions::Options(o) => o,
            _ => &[],
        };
        for opt in options {
            let SqlOption::KeyValue { key, value } = opt else {
                return Err(QueryError::syntax(format!(
                    "unsupported table option {opt}"
                )));
            };
            let v = option_text(value).unwrap_or_default();
            match key.value.to_lowercase().as_str() {
                "time_column" => request.time_column = Some(v.to_lowercase()),
                "partition_column" => {
                    request.partition_column = Some(match v.to_lowercase().as_str() {
                        "" | "none" => None,
                        p => Some(p.to_string()),
                    })
                }
                "bucket" => request.bucket_micros = Some(parse_duration(&v)?),
                "key" => {
                    record_key = Some(
                        v.split(',')
                            .map(|c| c.trim().to_lowercase())
                            .filter(|c| !c.is_empty())
                            .collect::<Vec<_>>(),
                    )
                }
                "version" => version = Some(v.trim().to_lowercase()),
                "deleted" => deleted = Some(v.trim().to_lowercase()),
                "ttl" => {
                    request.ttl_micros = match v.to_lowercase().as_str() {
                        "" | "none" => None,
                        t => Some(parse_duration(t)?),
                    }
                }
                other => {
                    return Err(QueryError::new(
                        SqlState::InvalidParameterValue,
                        format!(
                            "unrecognized table option \"{other}\" (known: time_column, partition_column, bucket, ttl, key, version, deleted)"
                        ),
                    ));
                }
            }
        }
        request.versions = match (record_key, version, deleted) {
            (None, None, None) => None,
            (Some(key), Some(version), deleted) => Some(lookout_storage::Versions {
                key,
                version,
                deleted,
            }),
            _ => {
                return Err(QueryError::new(
                    SqlState::InvalidParameterValue,
                    "a versioned table needs both key and version options (deleted is optional)",
                ));
            }
        };
        self.lookout
            .storage()
            .create_table(&name, &schema, request, ct.if_not_exists)
            .await?;
        Ok(Output::Command {
            tag: "CREATE TABLE",
            rows: None,
        })
    }

    /// `CREATE [OR REPLACE] VIEW name [(columns)] AS query`: the query is
    /// planned now (so a view that cannot run is refused) and kept as text,
    /// planned again at each use; reads through it are checked against the
    /// rights of whoever queries it.
    pub(super) async fn create_view(&mut self, view: ast::CreateView) -> Result<Output> {
        if view.materialized || view.temporary {
            return Err(QueryError::unsupported(
                "only plain views are supported (no MATERIALIZED or TEMPORARY)",
            ));
        }
        let name = table_name(&view.name)?;
        if name.starts_with(SYSTEM_PREFIX) || name.contains('.') {
            return Err(QueryError::new(
                SqlState::InsufficientPrivilege,
                format!("views are created in the public schema, not as \"{name}\""),
            ));
        }
        let query = view.query.to_string();
        let plan = self.logical_plan(&query).await?;
        let definition = if view.columns.is_empty() {
            query
        } else {
            let planned = plan.schema().fields();
            if view.columns.len() > planned.len() {
                return Err(QueryError::new(
                    SqlState::SyntaxError,
                    "CREATE VIEW specifies more column names than columns",
                ));
            }
            let renamed: Vec<String> = planned
                .iter()
                .zip(
                    view.columns
                        .iter()
                        .map(|c| ident_name(&c.name))
                        .chain(std::iter::repeat(String::new())),
                )
                .map(|(field, alias)| {
                    let source = quote_ident(field.name());
                    if alias.is_empty() {
                        source
                    } else {
                        format!("{source} AS {}", quote_ident(&alias))
                    }
                })
                .collect();
            format!("SELECT {} FROM ({query}) AS view_body", renamed.join(", "))
        };
        self.logical_plan(&definition).await?;
        let storage = self.lookout.storage();
        let previous = storage.view(&name)?;
        storage
            .create_view(&name, &definition, view.or_replace)
            .await?;
        // A replaced view may now read itself through others: refuse it
        // and put the old definition back.
        if let Err(e) = self
            .logical_plan(&format!("SELECT * FROM {}", quote_ident(&name)))
            .await
        {
            match previous {
                Some(old) => storage.create_view(&name, &old, true).await?,
                None => {
                    storage.drop_view(&name, true).await?;
                }
            }
            return Err(e);
        }
        Ok(Output::Command {
            tag: "CREATE VIEW",
            rows: None,
        })
    }

    pub(super) async fn alter_table(&mut self, at: ast::AlterTable) -> Result<Output> {
        let name = table_name(&at.name)?;
        for op in at.operations {
            match op {
                AlterTableOperation::AddColumn {
                    if_not_exists,
                    column_def,
                    ..
                } => {
                    let field = column_field(&column_def)?;
                    match self
                        .lookout
                        .storage()
                        .add_column(&name, &field, if_not_exists)
                        .await
                    {
                        Err(StorageError::TableNotFound(_)) if at.if_exists => {}
                        other => {
                            other?;
                        }
                    }
                }
                other => {
                    return Err(QueryError::unsupported(format!(
                        "ALTER TABLE {other} is not supported (ADD COLUMN is)"
                    )));
                }
            }
        }
        Ok(Output::Command {
            tag: "ALTER TABLE",
            rows: None,
        })
    }
}

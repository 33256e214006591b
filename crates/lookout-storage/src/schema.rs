//! Table definitions: columns, time column, partition column, bucket and TTL.

use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};

/// The one timestamp type the time column is stored as: microseconds, UTC.
pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// One column of a table, as kept in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDef {
    /// Column name.
    pub name: String,
    /// Arrow data type, in Arrow's textual form (`Int64`, `Timestamp(µs, "UTC")`).
    pub data_type: String,
    /// Whether NULLs are allowed.
    pub nullable: bool,
    /// The type the column was declared with, when its Arrow type does not
    /// say it all (`jsonb` is text that holds JSON); its values pass
    /// through the [`crate::batch::ValueFormat`] registered for it. It
    /// travels as the field metadata [`SQL_TYPE_METADATA`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_type: Option<String>,
    /// Set by `COMMENT ON COLUMN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The field metadata key that carries a column's [`ColumnDef::sql_type`].
pub const SQL_TYPE_METADATA: &str = "lookout.sql_type";

/// A field's declared type, from its metadata.
pub fn sql_type_of(field: &Field) -> Option<&str> {
    field.metadata().get(SQL_TYPE_METADATA).map(String::as_str)
}

/// Options given in `CREATE TABLE ... WITH (...)`, after defaults are applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableOptions {
    /// The column rows are partitioned and pruned by in time.
    pub time_column: String,
    /// The column whose value names a partition directory (usually `model`).
    pub partition_column: Option<String>,
    /// Width of a time partition, in microseconds.
    pub bucket_micros: i64,
    /// Rows older than this (in microseconds) are dropped by retention.
    pub ttl_micros: Option<i64>,
    /// For a table of versioned rows: what identifies a row and its version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<Versions>,
}

/// A table whose rows are versions of keyed records (labels, feedback that
/// gets corrected): queries see only the latest version of each key, and
/// not at all if that version is a tombstone. All versions are stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versions {
    /// Columns that identify a record.
    pub key: Vec<String>,
    /// The column ordering versions; the greatest wins.
    pub version: String,
    /// A boolean column; a latest version with `true` deletes the record.
    pub deleted: Option<String>,
}

/// What a table is made of: its columns and options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDef {
    /// Unique over the life of the data directory; WAL records refer to it,
    /// so a dropped and recreated table never receives the old table's rows.
    pub id: u64,
    /// Table name.
    pub name: String,
    /// Columns in order.
    pub columns: Vec<ColumnDef>,
    /// Time column, partition column, bucket, TTL.
    pub options: TableOptions,
    /// Set when the table's rows are computed from another table's (a rollup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived: Option<Derivation>,
    /// Set by `COMMENT ON TABLE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// How a derived table is computed. The storage engine keeps the kind and
/// the definition as opaque text for the layer that computes the rows, and
/// refuses to drop a table that others derive from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Derivation {
    /// The table whose rows this one is computed from.
    pub source: String,
    /// The definition, in the deriving layer's language (a `CREATE ROLLUP` statement).
    pub definition: String,
    /// Which kind of derived table this is (`rollup`, `sampling`); absent
    /// in definitions written before kinds were recorded, whose kind the
    /// deriving layer tells from the definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Set while the table is being filled from its source's existing rows;
    /// a table still pending at the next open was never finished.
    #[serde(default)]
    pub pending: bool,
}

/// Default bucket: one day.
pub const DAY_MICROS: i64 = 86_400_000_000;

impl TableDef {
    /// Builds a definition from an Arrow schema and the options the user gave,
    /// applying the defaults: the time column is the first non-null timestamp
    /// column, the partition column is `model` if present.
    pub fn new(
        id: u64,
        name: &str,
        schema: &Schema,
        time_column: Option<&str>,
        partition_column: Option<Option<&str>>,
        bucket_micros: Option<i64>,
        ttl_micros: Option<i64>,
    ) -> Result<Self> {
        let bad = |m: String| StorageError::InvalidDefinition(m);
        let time_column = match time_column {
            Some(c) => c.to_string(),
            None => schema
                .fields()
                .iter()
                .find(|f| matches!(f.data_type(), DataType::Timestamp(_, _)) && !f.is_nullable())
                .map(|f| f.name().clone())
                .ok_or_else(|| {
                    bad(format!(
                        "table \"{name}\" needs a time column: declare a TIMESTAMPTZ NOT NULL column or set time_column"
                    ))
                })?,
        };
        let time_field = schema
            .field_with_name(&time_column)
            .map_err(|_| bad(format!("time column \"{time_column}\" does not exist")))?;
        if !matches!(time_field.data_type(), DataType::Timestamp(_, _)) {
            return Err(bad(format!(
                "time column \"{time_column}\" must be a timestamp, not {}",
                time_field.data_type()
            )));
        }
        let partition_column = match partition_column {
            Some(p) => p.map(str::to_string),
            None => schema
                .field_with_name("model")
                .ok()
                .map(|f| f.name().clone()),
        };
        if let Some(p) = &partition_column {
            let f = schema
                .field_with_name(p)
                .map_err(|_| bad(format!("partition column \"{p}\" does not exist")))?;
            if !matches!(
                f.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) {
                return Err(bad(format!("partition column \"{p}\" must be text")));
            }
        }
        let bucket_micros = bucket_micros.unwrap_or(DAY_MICROS);
        if bucket_micros <= 0 || DAY_MICROS % bucket_micros != 0 && bucket_micros % DAY_MICROS != 0
        {
            return Err(bad(
                "bucket must divide a day or be a whole number of days".to_string()
            ));
        }
        if matches!(ttl_micros, Some(t) if t <= 0) {
            return Err(bad("ttl must be positive".to_string()));
        }
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                let data_type = if f.name() == &time_column {
                    time_type()
                } else {
                    normalize_type(f.data_type())
                };
                ColumnDef {
                    name: f.name().clone(),
                    data_type: data_type.to_string(),
                    nullable: f.is_nullable() && f.name() != &time_column,
                    sql_type: sql_type_of(f).map(str::to_string),
                    comment: None,
                }
            })
            .collect();
        Ok(TableDef {
            id,
            name: name.to_string(),
            columns,
            options: TableOptions {
                time_column,
                partition_column,
                bucket_micros,
                ttl_micros,
                versions: None,
            },
            derived: None,
            comment: None,
        })
    }

    /// The Arrow schema of the table.
    pub fn schema(&self) -> Result<SchemaRef> {
        schema_of(&self.columns)
    }
}

impl ColumnDef {
    /// A column as `field` declares it, type unchanged.
    pub fn from_field(field: &Field) -> ColumnDef {
        ColumnDef {
            name: field.name().clone(),
            data_type: field.data_type().to_string(),
            nullable: field.is_nullable(),
            sql_type: sql_type_of(field).map(str::to_string),
            comment: None,
        }
    }
}

/// The Arrow schema of `columns`.
pub fn schema_of(columns: &[ColumnDef]) -> Result<SchemaRef> {
    let fields = columns
        .iter()
        .map(|c| {
            let dt = DataType::from_str(&c.data_type).map_err(|e| {
                StorageError::Corrupt(format!("type {} of {}: {e}", c.data_type, c.name))
            })?;
            let field = Field::new(&c.name, dt, c.nullable);
            Ok(match &c.sql_type {
                Some(t) => field.with_metadata([(SQL_TYPE_METADATA.to_string(), t.clone())].into()),
                None => field,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// Types are stored in one canonical form each, so that every file of a
/// table agrees: views and large variants become plain, timestamps become UTC
/// microseconds.
pub fn normalize_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Timestamp(_, _) => time_type(),
        DataType::Dictionary(_, v) => normalize_type(v),
        // Lists (embeddings) keep Arrow's default element field, so that
        // lists built by any writer compare equal to the column's type.
        DataType::List(item) | DataType::LargeList(item) => DataType::List(Arc::new(
            Field::new_list_field(normalize_type(item.data_type()), true),
        )),
        DataType::FixedSizeList(item, n) => DataType::FixedSizeList(
            Arc::new(Field::new_list_field(
                normalize_type(item.data_type()),
                true,
            )),
            *n,
        ),
        other => other.clone(),
    }
}

/// The schema unit tests use: time, model, one measure.
#[cfg(test)]
pub(crate) fn test_schema() -> Schema {
    Schema::new(vec![
        Field::new("ts", time_type(), false),
        Field::new("model", DataType::Utf8, false),
        Field::new("x", DataType::Float64, true),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip_through_text() {
        for dt in [
            time_type(),
            DataType::Int64,
            DataType::Float64,
            DataType::Utf8,
            DataType::Boolean,
            DataType::Int8,
            DataType::Date32,
            DataType::Binary,
            normalize_type(&DataType::List(Arc::new(Field::new(
                "x",
                DataType::Float32,
                false,
            )))),
            normalize_type(&DataType::FixedSizeList(
                Arc::new(Field::new("x", DataType::Float32, false)),
                384,
            )),
        ] {
            assert_eq!(DataType::from_str(&dt.to_string()).ok(), Some(dt));
        }
    }

    #[test]
    fn defaults_pick_time_and_partition_columns() {
        let schema = Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
            Field::new("model", DataType::Utf8, false),
            Field::new("x", DataType::Float64, true),
        ]);
        let def = TableDef::new(1, "t", &schema, None, None, None, None).expect("valid");
        assert_eq!(def.options.time_column, "ts");
        assert_eq!(def.options.partition_column.as_deref(), Some("model"));
        assert_eq!(def.options.bucket_micros, DAY_MICROS);
        assert_eq!(
            def.schema().expect("schema").field(0).data_type(),
            &time_type()
        );
    }

    #[test]
    fn missing_time_column_is_an_error() {
        let schema = Schema::new(vec![Field::new("x", DataType::Float64, true)]);
        let err = TableDef::new(1, "t", &schema, None, None, None, None).unwrap_err();
        assert!(err.to_string().contains("needs a time column"));
    }
}

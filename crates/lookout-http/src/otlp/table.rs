//! The GenAI calls table: created when missing, written one export at a time.

use std::sync::Arc;

use arrow::array::TimestampMicrosecondArray;
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use lookout_query::{Lookout, QueryError, Result, quote_ident};

use super::spans::CallRow;

/// The table's columns as `CREATE TABLE` declares them.
const COLUMNS: &[(&str, &str)] = &[
    ("ts", "TIMESTAMPTZ NOT NULL"),
    ("end_ts", "TIMESTAMPTZ"),
    ("duration_ms", "DOUBLE PRECISION"),
    ("model", "TEXT"),
    ("operation", "TEXT"),
    ("provider", "TEXT"),
    ("response_model", "TEXT"),
    ("response_id", "TEXT"),
    ("input_tokens", "BIGINT"),
    ("output_tokens", "BIGINT"),
    ("finish_reasons", "TEXT"),
    ("status", "TEXT"),
    ("error_type", "TEXT"),
    ("service", "TEXT"),
    ("span_name", "TEXT"),
    ("trace_id", "TEXT"),
    ("span_id", "TEXT"),
    ("parent_span_id", "TEXT"),
    ("attributes", "JSONB"),
    ("resource", "JSONB"),
    ("content", "JSONB"),
];

/// `CREATE TABLE IF NOT EXISTS` for the calls table, partitioned by model.
pub(crate) fn create_sql(table: &str) -> String {
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|(name, ty)| format!("{} {ty}", quote_ident(name)))
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({}) WITH (time_column = 'ts', partition_column = 'model')",
        quote_ident(table),
        columns.join(", ")
    )
}

/// Stores `rows` in `table` (created first when missing) as one write:
/// durable when this returns. Columns the table lacks are left out.
pub(crate) async fn store(db: &Lookout, table: &str, rows: Vec<CallRow>) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    if db.storage().table(table).is_err() {
        db.sql(&create_sql(table)).await?;
    }
    let present = db.storage().table(table)?.schema()?;
    let batch = batch(&rows)?;
    let keep: Vec<usize> = (0..batch.num_columns())
        .filter(|i| {
            present
                .field_with_name(batch.schema().field(*i).name())
                .is_ok()
        })
        .collect();
    let batch = batch.project(&keep)?;
    db.write(table, batch).await?;
    Ok(())
}

fn batch(rows: &[CallRow]) -> Result<RecordBatch> {
    let text = |f: fn(&CallRow) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let timestamps = |f: fn(&CallRow) -> i64| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(f)).with_timezone("UTC"),
        )
    };
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("ts", timestamps(|r| r.ts)),
        ("end_ts", timestamps(|r| r.end_ts)),
        (
            "duration_ms",
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.duration_ms),
            )),
        ),
        ("model", text(|r| r.model.as_deref())),
        ("operation", text(|r| r.operation.as_deref())),
        ("provider", text(|r| r.provider.as_deref())),
        ("response_model", text(|r| r.response_model.as_deref())),
        ("response_id", text(|r| r.response_id.as_deref())),
        (
            "input_tokens",
            Arc::new(rows.iter().map(|r| r.input_tokens).collect::<Int64Array>()),
        ),
        (
            "output_tokens",
            Arc::new(rows.iter().map(|r| r.output_tokens).collect::<Int64Array>()),
        ),
        ("finish_reasons", text(|r| r.finish_reasons.as_deref())),
        ("status", text(|r| Some(r.status))),
        ("error_type", text(|r| r.error_type.as_deref())),
        ("service", text(|r| r.service.as_deref())),
        ("span_name", text(|r| Some(r.span_name.as_str()))),
        ("trace_id", text(|r| Some(r.trace_id.as_str()))),
        ("span_id", text(|r| Some(r.span_id.as_str()))),
        ("parent_span_id", text(|r| r.parent_span_id.as_deref())),
        ("attributes", text(|r| Some(r.attributes.as_str()))),
        ("resource", text(|r| Some(r.resource.as_str()))),
        ("content", text(|r| r.content.as_deref())),
    ];
    let schema = Schema::new(
        columns
            .iter()
            .map(|(name, values)| {
                let nullable = *name != "ts";
                let ty = match values.data_type() {
                    DataType::Timestamp(_, _) => {
                        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
                    }
                    other => other.clone(),
                };
                Field::new(*name, ty, nullable)
            })
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, values)| values).collect(),
    )
    .map_err(QueryError::from)
}

#[cfg(test)]
mod tests {
    use arrow::util::pretty::pretty_format_batches;

    use super::*;

    fn call(span: &str, model: Option<&str>) -> CallRow {
        CallRow {
            ts: 1_764_806_400_000_000,
            end_ts: 1_764_806_400_250_000,
            duration_ms: 250.0,
            trace_id: "ab".repeat(16),
            span_id: span.into(),
            model: model.map(Into::into),
            input_tokens: Some(11),
            status: "ok",
            attributes: r#"{"server.port": 8000}"#.into(),
            resource: "{}".into(),
            ..CallRow::default()
        }
    }

    /// The table the first export creates holds every column; a table the
    /// user made with fewer gets those; a model-less call is stored too.
    #[tokio::test]
    async fn calls_are_stored_in_the_created_table_or_the_users_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Lookout::open(dir.path()).await.expect("open");
        store(
            &db,
            "calls",
            vec![
                call("0000000000000001", Some("m")),
                call("0000000000000002", None),
            ],
        )
        .await
        .expect("store");
        let got = db
            .sql("SELECT span_id, model, input_tokens, attributes FROM calls ORDER BY span_id")
            .await
            .expect("query");
        let text = pretty_format_batches(&got).expect("format").to_string();
        assert!(
            text.contains("| 0000000000000001 | m     | 11           | {\"server.port\": 8000} |"),
            "{text}"
        );
        assert!(text.contains("| 0000000000000002 |       | 11"), "{text}");
        let columns = db
            .storage()
            .table("calls")
            .expect("table")
            .schema()
            .expect("schema");
        assert_eq!(columns.fields().len(), COLUMNS.len());
        db.sql("CREATE TABLE narrow (ts TIMESTAMPTZ NOT NULL, model TEXT, input_tokens BIGINT)")
            .await
            .expect("create");
        store(&db, "narrow", vec![call("0000000000000003", Some("m"))])
            .await
            .expect("store");
        let got = db
            .sql("SELECT sum(input_tokens) FROM narrow")
            .await
            .expect("query");
        let text = pretty_format_batches(&got).expect("format").to_string();
        assert!(text.contains("| 11 "), "{text}");
        db.close().await.expect("close");
    }

    /// docs/genai-tracing.md shows the table as created here.
    #[test]
    fn the_documented_table_is_the_created_one() {
        let doc = include_str!("../../../../docs/genai-tracing.md");
        let ddl = doc
            .split("CREATE TABLE IF NOT EXISTS genai_calls (")
            .nth(1)
            .and_then(|rest| rest.split(") WITH").next())
            .expect("the documented CREATE TABLE");
        let documented: Vec<(String, String)> = ddl
            .lines()
            .map(|l| {
                l.split("--")
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_end_matches(',')
            })
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, ty) = l.split_once(' ').expect("name and type");
                (name.to_string(), ty.trim().to_string())
            })
            .collect();
        let created: Vec<(String, String)> = COLUMNS
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        assert_eq!(documented, created);
    }
}

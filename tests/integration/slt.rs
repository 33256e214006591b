//! sqllogictest files (`tests/slt/*.slt`) run over a Postgres connection.

use std::path::Path;

use async_trait::async_trait;
use sqllogictest::DBOutput;

use crate::harness::{TestServer, alert_statements, connect};

#[derive(Debug)]
struct SqlError(String);

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqlError {}

struct Postgres {
    client: tokio_postgres::Client,
}

/// A result column's type as a file declares it: `T` text (and every type
/// without a letter of its own), `I` integer, `R` floating point or numeric,
/// `B` boolean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SltType {
    Text,
    Integer,
    Float,
    Boolean,
    /// Not known: the database could not describe the query on its own.
    Any,
}

impl sqllogictest::ColumnType for SltType {
    fn from_char(value: char) -> Option<Self> {
        Some(match value {
            'T' => SltType::Text,
            'I' => SltType::Integer,
            'R' => SltType::Float,
            'B' => SltType::Boolean,
            _ => return None,
        })
    }

    fn to_char(&self) -> char {
        match self {
            SltType::Text => 'T',
            SltType::Integer => 'I',
            SltType::Float => 'R',
            SltType::Boolean => 'B',
            SltType::Any => '?',
        }
    }
}

impl Postgres {
    /// The types of a query's `n` columns as the extended protocol
    /// describes them; `Any` where it cannot be described on its own
    /// (several statements in one string).
    async fn column_types(&self, sql: &str, n: usize) -> Vec<SltType> {
        use tokio_postgres::types::Type;
        match self.client.prepare(sql).await {
            Ok(statement) if statement.columns().len() == n => statement
                .columns()
                .iter()
                .map(|c| match *c.type_() {
                    Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => SltType::Integer,
                    Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => SltType::Float,
                    Type::BOOL => SltType::Boolean,
                    _ => SltType::Text,
                })
                .collect(),
            _ => vec![SltType::Any; n],
        }
    }
}

/// Each column's type as the file declares it, where the database could
/// tell it.
#[expect(
    clippy::ptr_arg,
    reason = "sqllogictest's validator type takes vectors"
)]
fn columns_match(actual: &Vec<SltType>, expected: &Vec<SltType>) -> bool {
    actual.len() == expected.len()
        && actual
            .iter()
            .zip(expected)
            .all(|(a, e)| *a == SltType::Any || a == e)
}

#[async_trait]
impl sqllogictest::AsyncDB for Postgres {
    type Error = SqlError;
    type ColumnType = SltType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<SltType>, SqlError> {
        let messages = self.client.simple_query(sql).await.map_err(|e| {
            SqlError(match e.as_db_error() {
                // Errors read "<SQLSTATE>: <message>" so files can match either.
                Some(db) => format!("{}: {}", db.code().code(), db.message()),
                None => e.to_string(),
            })
        })?;
        let mut rows = Vec::new();
        let mut columns = None;
        let mut affected = 0;
        for m in messages {
            match m {
                tokio_postgres::SimpleQueryMessage::RowDescription(d) => columns = Some(d.len()),
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    columns = Some(r.len());
                    rows.push(
                        (0..r.len())
                            .map(|i| match r.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(v) => v.to_string(),
                            })
                            .collect(),
                    );
                }
                tokio_postgres::SimpleQueryMessage::CommandComplete(n) => affected = n,
                _ => {}
            }
        }
        match columns {
            Some(n) => Ok(DBOutput::Rows {
                types: self.column_types(sql, n).await,
                rows,
            }),
            None => Ok(DBOutput::StatementComplete(affected)),
        }
    }

    fn engine_name(&self) -> &str {
        "lookout"
    }

    async fn shutdown(&mut self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/slt")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    // Each file on a fresh database, so no file depends on another's tables.
    for file in files {
        // Sampling decisions run only when a file asks (DECIDE SAMPLING).
        let sampling = lookout_sampling::SamplingOptions {
            interval: Some(std::time::Duration::from_secs(3600)),
        };
        let server = TestServer::start_sampling(
            tempfile::tempdir().expect("tempdir"),
            lookout_query::LookoutOptions::default(),
            sampling,
        )
        .await;
        // Alert statements; evaluation on schedule is tested with the real binary.
        let alerts = alert_statements(&server.lookout).await;
        lookout_review::ReviewQueues::start(server.lookout.clone())
            .await
            .expect("review queues");
        let addr = server.addr;
        let mut runner = sqllogictest::Runner::new(move || async move {
            Ok(Postgres {
                client: connect(addr).await,
            })
        });
        runner.with_column_validator(columns_match);
        runner
            .run_file_async(&file)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        alerts.shutdown().await;
        server.stop().await;
    }
}

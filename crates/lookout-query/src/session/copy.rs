//! `COPY` statements: to and from files, `STDIN` and `STDOUT`, and the
//! writes that load their rows.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use datafusion::sql::sqlparser::ast::{self, CopyLegacyOption, CopyOption, CopySource, CopyTarget};

use super::{Session, parse_sql};
use crate::copy::{CopyDecoder, CopyEncoder, CopyFormat, CopyKind};
use crate::error::SqlState;
use crate::error::{QueryError, Result};
use crate::ext::{CopyIn, Output, ident_name, quote_ident, quoted_table, table_name};
use crate::transaction::TransactionState;

fn copy_format(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<CopyFormat> {
    let mut kind = CopyKind::Text;
    for o in options {
        if let CopyOption::Format(f) = o {
            kind = match f.value.to_lowercase().as_str() {
                "text" => CopyKind::Text,
                "csv" => CopyKind::Csv,
                "parquet" => CopyKind::Parquet,
                "binary" => CopyKind::Binary,
                other => {
                    return Err(QueryError::new(
                        SqlState::InvalidParameterValue,
                        format!("COPY format \"{other}\" not recognized"),
                    ));
                }
            };
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Csv(_) => kind = CopyKind::Csv,
            CopyLegacyOption::Binary => kind = CopyKind::Binary,
            _ => {}
        }
    }
    let mut format = CopyFormat::new(kind);
    for o in options {
        match o {
            CopyOption::Header(h) => format.header = *h,
            CopyOption::Delimiter(c) => format.delimiter = single_byte(*c)?,
            CopyOption::Null(n) => format.null = n.clone(),
            CopyOption::Quote(c) => format.quote = single_byte(*c)?,
            CopyOption::Escape(c) => format.escape = single_byte(*c)?,
            _ => {}
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Delimiter(c) => format.delimiter = single_byte(*c)?,
            CopyLegacyOption::Null(n) => format.null = n.clone(),
            CopyLegacyOption::Header => format.header = true,
            CopyLegacyOption::Csv(opts) => {
                for co in opts {
                    match co {
                        ast::CopyLegacyCsvOption::Header => format.header = true,
                        ast::CopyLegacyCsvOption::Quote(c) => format.quote = single_byte(*c)?,
                        ast::CopyLegacyCsvOption::Escape(c) => format.escape = single_byte(*c)?,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(format)
}

fn single_byte(c: char) -> Result<u8> {
    u8::try_from(c as u32)
        .ok()
        .filter(u8::is_ascii)
        .ok_or_else(|| {
            QueryError::new(
                SqlState::InvalidParameterValue,
                "COPY delimiter, quote and escape must be single ASCII characters",
            )
        })
}

/// Writes of more rows than this go straight to Parquet (one atomic manifest
/// commit) instead of through the WAL.
pub(super) const BULK_ROWS: u64 = 256 * 1024;

impl Session {
    pub(super) async fn copy(
        &mut self,
        source: CopySource,
        to: bool,
        target: CopyTarget,
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> Result<Output> {
        let format = copy_format(options, legacy)?;
        if to && format.kind == CopyKind::Binary {
            return Err(QueryError::unsupported(
                "COPY TO in binary format is not supported; use text or csv (binary is read by COPY FROM)",
            ));
        }
        if to {
            let sql = match &source {
                CopySource::Table {
                    table_name: t,
                    columns,
                } => {
                    let cols = if columns.is_empty() {
                        "*".to_string()
                    } else {
                        columns
                            .iter()
                            .map(|c| quote_ident(&ident_name(c)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    format!("SELECT {cols} FROM {}", quoted_table(&table_name(t)?))
                }
                CopySource::Query(q) => q.to_string(),
            };
            let stmt = parse_sql(&sql)?
                .pop()
                .ok_or_else(|| QueryError::syntax("empty COPY query"))?;
            let prepared = self.plan(stmt).await?;
            let Output::Rows { schema, stream } = self.run_plan(&prepared, None).await? else {
                return Err(QueryError::syntax(
                    "COPY (...) TO needs a query that returns rows",
                ));
            };
            return match target {
                CopyTarget::Stdout => {
                    if format.kind == CopyKind::Parquet {
                        return Err(QueryError::unsupported(
                            "COPY TO STDOUT supports text and csv; write Parquet to a server-side file",
                        ));
                    }
                    Ok(Output::CopyOut {
                        format,
                        schema,
                        stream,
                    })
                }
                CopyTarget::File { filename } => {
                    let file = self.lookout.options().file_access.check(&filename)?;
                    let rows = crate::import::export_file(&file, &format, schema, stream).await?;
                    Ok(Output::Command {
                        tag: "COPY",
                        rows: Some(rows),
                    })
                }
                _ => Err(QueryError::unsupported("COPY TO PROGRAM is not supported")),
            };
        }
        let CopySource::Table {
            table_name: t,
            columns,
        } = source
        else {
            return Err(QueryError::syntax("COPY FROM needs a table"));
        };
        let table = table_name(&t)?;
        // Refused before any data is sent, as a PostgreSQL standby refuses
        // it, rather than at the first flush of the rows.
        self.lookout.storage().check_writable("run COPY FROM")?;
        if let (CopyTarget::File { filename }, CopyKind::Parquet) = (&target, format.kind) {
            if self.in_transaction() {
                return Err(QueryError::unsupported(
                    "COPY FROM a Parquet file cannot run inside a transaction block; it commits on its own",
                ));
            }
            // Parquet carries its schema: a missing table is created from it.
            let file = self.lookout.options().file_access.check(filename)?;
            let opened = vec![(file.path().to_path_buf(), file.open()?)];
            let rows = crate::import::import_opened(&self.lookout, &table, opened, None).await?;
            return Ok(Output::Command {
                tag: "COPY",
                rows: Some(rows),
            });
        }
        let def = self.lookout.storage().table(&table)?;
        let full = def.schema()?;
        let schema = if columns.is_empty() {
            full
        } else {
            let fields = columns
                .iter()
                .map(|c| {
                    let n = ident_name(c);
                    full.field_with_name(&n).cloned().map_err(|_| {
                        QueryError::new(
                            SqlState::UndefinedColumn,
                            format!("column \"{n}\" of relation \"{table}\" does not exist"),
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Arc::new(Schema::new(fields))
        };
        match target {
            CopyTarget::Stdin => {
                if format.kind == CopyKind::Parquet {
                    return Err(QueryError::unsupported(
                        "COPY FROM STDIN supports text and csv; load Parquet from a server-side file",
                    ));
                }
                Ok(Output::CopyIn(CopyIn {
                    table,
                    schema,
                    format,
                }))
            }
            CopyTarget::File { filename } => {
                let file = self.lookout.options().file_access.check(&filename)?;
                let mut bytes = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(
                    &mut tokio::fs::File::from_std(file.open()?),
                    &mut bytes,
                )
                .await
                .map_err(|e| {
                    QueryError::new(
                        SqlState::UndefinedFile,
                        format!("could not read file \"{filename}\": {e}"),
                    )
                })?;
                let mut decoder = CopyDecoder::new(&table, schema, format)?;
                decoder.push(&bytes)?;
                let rows = self.write_batches(&table, decoder.finish()?).await?;
                Ok(Output::Command {
                    tag: "COPY",
                    rows: Some(rows),
                })
            }
            _ => Err(QueryError::unsupported(
                "COPY FROM PROGRAM is not supported",
            )),
        }
    }

    /// Commits decoded rows as one unit: small loads through the WAL, large
    /// ones straight to Parquet. Returns the row count.
    pub async fn write_batches(&self, table: &str, batches: Vec<RecordBatch>) -> Result<u64> {
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        if rows == 0 {
            return Ok(0);
        }
        let ingest = self.lookout.ingest();
        if let TransactionState::Open(block) = &self.transaction {
            let storage = self.lookout.storage();
            let def = storage.table(table)?;
            let schema = def.schema()?;
            for batch in batches {
                block.insert(table, storage.validate(&def, &schema, &batch)?, false)?;
            }
            return Ok(rows);
        }
        if rows <= BULK_ROWS {
            let schema = batches[0].schema();
            let all = arrow::compute::concat_batches(&schema, &batches)
                .map_err(|e| QueryError::new(SqlState::InternalError, e.to_string()))?;
            ingest.write(table, all).await
        } else {
            let stream = futures::stream::iter(batches.into_iter().map(Ok));
            ingest.bulk_load(table, stream).await
        }
    }

    /// An encoder for `COPY ... TO STDOUT` rows.
    pub fn copy_encoder(format: &CopyFormat) -> CopyEncoder {
        CopyEncoder::new(format.clone())
    }
}

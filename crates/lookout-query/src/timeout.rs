//! `statement_timeout`: a statement that runs longer is canceled with
//! SQLSTATE 57014, whether the time goes to planning, to writing, or to
//! the client pulling rows.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::Stream;
use tokio::time::{Instant, Sleep};

use crate::error::{QueryError, Result};
use crate::session::Output;

fn canceled() -> QueryError {
    QueryError::with_code("57014", "canceling statement due to statement timeout")
}

/// Parses a `statement_timeout` value as PostgreSQL does: a bare number is
/// milliseconds, otherwise an interval; 0 disables it.
pub(crate) fn parse(value: &str) -> Result<Option<Duration>> {
    let value = value.trim();
    if value.is_empty() || value.eq_ignore_ascii_case("default") {
        return Ok(None);
    }
    let millis = match value.parse::<u64>() {
        Ok(ms) => ms,
        Err(_) if value.trim_start_matches('0').is_empty() => 0,
        Err(_) => {
            let micros = crate::interval::parse_duration(value).map_err(|_| {
                QueryError::with_code(
                    "22023",
                    format!("invalid value for parameter \"statement_timeout\": \"{value}\""),
                )
            })?;
            (micros as u64).div_ceil(1000)
        }
    };
    Ok((millis > 0).then(|| Duration::from_millis(millis)))
}

/// Runs `work` under the timeout, then bounds the rows it returns by the
/// same deadline.
pub(crate) async fn bounded(
    timeout: Option<Duration>,
    work: impl Future<Output = Result<Output>>,
) -> Result<Output> {
    let Some(timeout) = timeout else {
        return work.await;
    };
    let deadline = Instant::now() + timeout;
    let output = tokio::time::timeout_at(deadline, work)
        .await
        .map_err(|_| canceled())??;
    Ok(match output {
        Output::Rows { schema, stream } => Output::Rows {
            schema,
            stream: Box::pin(DeadlineStream::new(stream, deadline)),
        },
        Output::CopyOut {
            format,
            schema,
            stream,
        } => Output::CopyOut {
            format,
            schema,
            stream: Box::pin(DeadlineStream::new(stream, deadline)),
        },
        other => other,
    })
}

/// Ends a stream with a 57014 error at the deadline; dropping the inner
/// stream stops its work.
struct DeadlineStream {
    inner: Option<SendableRecordBatchStream>,
    schema: SchemaRef,
    deadline: Pin<Box<Sleep>>,
}

impl DeadlineStream {
    fn new(inner: SendableRecordBatchStream, deadline: Instant) -> Self {
        DeadlineStream {
            schema: inner.schema(),
            inner: Some(inner),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl Stream for DeadlineStream {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(item) = inner.as_mut().poll_next(cx) {
            return Poll::Ready(item);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.inner = None;
            return Poll::Ready(Some(Err(DataFusionError::External(Box::new(canceled())))));
        }
        Poll::Pending
    }
}

impl RecordBatchStream for DeadlineStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::parse;
    use std::time::Duration;

    #[test]
    fn values_as_postgres_reads_them() {
        assert_eq!(parse("0").ok(), Some(None));
        assert_eq!(parse("1500").ok(), Some(Some(Duration::from_millis(1500))));
        assert_eq!(parse("5s").ok(), Some(Some(Duration::from_secs(5))));
        assert_eq!(parse("1 min").ok(), Some(Some(Duration::from_secs(60))));
        assert!(parse("soon").is_err());
    }
}

//! Interrupting statements: `statement_timeout` and the client's
//! CancelRequest stop a statement with SQLSTATE 57014, whether its time goes
//! to planning, to writing, or to the client pulling rows.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, Stream};
use tokio::time::Instant;

use crate::error::SqlState;
use crate::error::{QueryError, Result};
use crate::ext::Output;

/// Why a statement was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Timeout,
    UserRequest,
}

pub(crate) fn canceled(reason: Reason) -> QueryError {
    QueryError::new(
        SqlState::QueryCanceled,
        match reason {
            Reason::Timeout => "canceling statement due to statement timeout",
            Reason::UserRequest => "canceling statement due to user request",
        },
    )
}

/// Resolves when the statement must stop: its timeout elapsed or the client
/// sent a CancelRequest.
pub(crate) type Interrupt = Shared<BoxFuture<'static, Reason>>;

/// The interrupt of a statement starting now, if it can be interrupted.
pub(crate) fn interrupt(
    timeout: Option<Duration>,
    cancel: Option<BoxFuture<'static, ()>>,
) -> Option<Interrupt> {
    let deadline = timeout.map(|t| Instant::now() + t);
    if deadline.is_none() && cancel.is_none() {
        return None;
    }
    let timed_out = async move {
        match deadline {
            Some(d) => {
                tokio::time::sleep_until(d).await;
                Reason::Timeout
            }
            None => std::future::pending().await,
        }
    };
    let canceled = async move {
        match cancel {
            Some(signal) => {
                signal.await;
                Reason::UserRequest
            }
            None => std::future::pending().await,
        }
    };
    let either = async move {
        tokio::select! {
            r = timed_out => r,
            r = canceled => r,
        }
    };
    Some(either.boxed().shared())
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
            let micros = crate::ext::parse_duration(value).map_err(|_| {
                QueryError::new(
                    SqlState::InvalidParameterValue,
                    format!("invalid value for parameter \"statement_timeout\": \"{value}\""),
                )
            })?;
            (micros as u64).div_ceil(1000)
        }
    };
    Ok((millis > 0).then(|| Duration::from_millis(millis)))
}

/// Runs `work` until done or interrupted, then bounds the rows it returns
/// by the same interrupt.
pub(crate) async fn bounded(
    interrupt: Option<Interrupt>,
    work: impl Future<Output = Result<Output>>,
) -> Result<Output> {
    let Some(interrupt) = interrupt else {
        return work.await;
    };
    let output = tokio::select! {
        output = work => output?,
        reason = interrupt.clone() => return Err(canceled(reason)),
    };
    Ok(match output {
        Output::Rows { schema, stream } => Output::Rows {
            schema,
            stream: Box::pin(InterruptibleStream::new(stream, interrupt)),
        },
        Output::CopyOut {
            format,
            schema,
            stream,
        } => Output::CopyOut {
            format,
            schema,
            stream: Box::pin(InterruptibleStream::new(stream, interrupt)),
        },
        other => other,
    })
}

/// Ends a stream with a 57014 error when interrupted; dropping the inner
/// stream stops its work.
struct InterruptibleStream {
    inner: Option<SendableRecordBatchStream>,
    schema: SchemaRef,
    interrupt: Interrupt,
}

impl InterruptibleStream {
    fn new(inner: SendableRecordBatchStream, interrupt: Interrupt) -> Self {
        InterruptibleStream {
            schema: inner.schema(),
            inner: Some(inner),
            interrupt,
        }
    }
}

impl Stream for InterruptibleStream {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(item) = inner.as_mut().poll_next(cx) {
            return Poll::Ready(item);
        }
        if let Poll::Ready(reason) = self.interrupt.poll_unpin(cx) {
            self.inner = None;
            return Poll::Ready(Some(Err(DataFusionError::External(Box::new(canceled(
                reason,
            ))))));
        }
        Poll::Pending
    }
}

impl RecordBatchStream for InterruptibleStream {
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

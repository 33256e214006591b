//! The query layer's instruments: statements by kind and outcome, their
//! time, and the column cache's figures.

use std::sync::{Arc, Weak};
use std::time::Instant;

use datafusion::sql::sqlparser::ast::Statement;
use lookout_metrics::{Counter, Family, Labels, Registry, SecondsFamily, seconds_family};

use crate::ext::Command;
use crate::table::column_cache::{CacheStats, ColumnCache};

/// What the query layer counts and times.
#[derive(Debug, Clone)]
pub(crate) struct QueryMetrics {
    statements: Family<Labels<2>, Counter>,
    statement_seconds: SecondsFamily<Labels<1>>,
}

impl QueryMetrics {
    pub(crate) fn register(registry: &Registry, cache: &Arc<ColumnCache>) -> QueryMetrics {
        register_cache(registry, Arc::downgrade(cache));
        QueryMetrics {
            statements: registry.register(
                "statements",
                "Statements run, by kind and outcome (ok or error)",
                Family::default(),
            ),
            statement_seconds: registry.register(
                "statement_seconds",
                "Time from a statement's start until it returned its result (for a query, until its rows began to stream)",
                seconds_family(),
            ),
        }
    }

    /// Counts a statement of `kind` that started at `started`.
    pub(crate) fn observe(&self, kind: &'static str, started: Instant, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.statements
            .get_or_create(&[("kind", kind), ("outcome", outcome)])
            .inc();
        self.statement_seconds
            .get_or_create(&[("kind", kind)])
            .observe(lookout_metrics::seconds_since(started));
    }
}

/// The label a statement is counted under: a few kinds a dashboard tells
/// apart, not one per statement type.
pub(crate) fn statement_kind(command: &Command) -> &'static str {
    let Command::Sql(statement) = command else {
        return "extension";
    };
    match statement {
        Statement::Query(_) => "select",
        Statement::Insert(_) => "insert",
        Statement::Update { .. } => "update",
        Statement::Delete(_) => "delete",
        Statement::Copy { .. } => "copy",
        Statement::Explain { .. } | Statement::ExplainTable { .. } => "explain",
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => "transaction",
        Statement::Set(_)
        | Statement::ShowVariable { .. }
        | Statement::Reset(_)
        | Statement::Discard { .. } => "session",
        Statement::Declare { .. } | Statement::Fetch { .. } | Statement::Close { .. } => "cursor",
        Statement::CreateTable(_)
        | Statement::AlterTable(_)
        | Statement::CreateView(_)
        | Statement::Drop { .. }
        | Statement::Comment { .. }
        | Statement::CreateIndex(_)
        | Statement::CreateSchema { .. } => "ddl",
        _ => "other",
    }
}

/// The cache's figures, read at each scrape through a weak handle.
fn register_cache(registry: &Registry, cache: Weak<ColumnCache>) {
    let read = move |field: fn(&CacheStats) -> u64| {
        let cache = cache.clone();
        move || cache.upgrade().map_or(0, |c| field(&c.stats()))
    };
    registry.gauge_fn(
        "column_cache_bytes",
        "Bytes of decoded columns the column cache holds",
        {
            let r = read(|s| s.used_bytes);
            move || r() as i64
        },
    );
    registry.gauge_fn(
        "column_cache_budget_bytes",
        "The column cache's budget in bytes (0: off)",
        {
            let r = read(|s| s.budget_bytes);
            move || r() as i64
        },
    );
    registry.counter_fn(
        "column_cache_hits",
        "Column reads served from the column cache",
        read(|s| s.hits),
    );
    registry.counter_fn(
        "column_cache_misses",
        "Column reads that decoded a Parquet file",
        read(|s| s.misses),
    );
    registry.counter_fn(
        "column_cache_evictions",
        "Columns dropped from the column cache to make room",
        read(|s| s.evictions),
    );
}

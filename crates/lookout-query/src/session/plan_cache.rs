//! Plans of the queries a session ran recently, by their parsed text.
//!
//! Dashboards and drivers that do not prepare send the same query again and
//! again; planning it from SQL was a tenth of a short query's time (and
//! optimizing and planning it physically a quarter, which stays). A query
//! is planned once and its plan kept as a prepared statement keeps its own
//! (not yet optimized, so `now()` and the snapshot of the data are taken at
//! each execution), and only when nothing in it was fixed at planning time
//! beyond the definitions of the tables and views it reads:
//!
//! - every table it scans is a stored Lookout table (not a catalog, status
//!   or external table, whose contents may be read while planning);
//! - a kept plan is used again only while those tables, and the views and
//!   external tables the query names, are defined as when it was planned,
//!   and every kept plan is dropped when a setting changes (`SET`, `RESET`,
//!   `set_config`, a new role), since settings reach the planner, and at
//!   `DISCARD`;
//! - it is small (at most 2,000 plan nodes and expressions, a statement of
//!   at most 16 KiB), and a session keeps at most `[cache] plans` of them,
//!   least recently used out.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::Statement;

use super::prepare::Prepared;
use crate::table::provider::LookoutTable;
use crate::table::versions::LatestVersions;

/// Plan nodes and expressions a plan may have to be kept: dashboards'
/// queries have tens to a few hundred; a statement that is mostly a long
/// `IN` list or `VALUES` is cheap to plan again and costly to keep.
const MAX_PLAN_ITEMS: usize = 2_000;

/// Length of the longest statement whose plan is kept, written out.
const MAX_STATEMENT_BYTES: usize = 16 << 10;

/// Counters every session's cache adds to, shown in `lookout.plan_cache`.
#[derive(Debug, Default)]
pub struct PlanCacheStats {
    hits: AtomicU64,
    misses: AtomicU64,
    /// Plans kept now, over all sessions.
    plans: AtomicU64,
    evictions: AtomicU64,
}

/// A moment's figures of [`PlanCacheStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanCacheFigures {
    /// Queries answered with a kept plan.
    pub hits: u64,
    /// Queries planned from their text and kept, for lack of a kept plan.
    pub misses: u64,
    /// Plans kept now, over all sessions.
    pub plans: u64,
    /// Plans dropped to make room, since the start.
    pub evictions: u64,
}

impl PlanCacheStats {
    /// The counters as they are now.
    pub fn figures(&self) -> PlanCacheFigures {
        PlanCacheFigures {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            plans: self.plans.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

struct Kept {
    prepared: Prepared,
    /// When it was last used, in lookups of this cache.
    used: u64,
}

/// One session's kept plans.
pub(crate) struct PlanCache {
    capacity: usize,
    plans: HashMap<Statement, Kept>,
    clock: u64,
    stats: Arc<PlanCacheStats>,
}

impl PlanCache {
    /// A cache of at most `capacity` plans (0 keeps none).
    pub(crate) fn new(capacity: usize, stats: Arc<PlanCacheStats>) -> PlanCache {
        PlanCache {
            capacity,
            plans: HashMap::new(),
            clock: 0,
            stats,
        }
    }

    /// The plan kept for `statement`, if `fresh` says its tables are as
    /// they were; a stale plan is dropped.
    pub(crate) fn get(
        &mut self,
        statement: &Statement,
        fresh: impl FnOnce(&Prepared) -> bool,
    ) -> Option<Prepared> {
        // Only queries are looked up: hashing a large `INSERT` for nothing
        // would cost every bulk insert.
        if self.plans.is_empty() || !self.keeps(statement) {
            return None;
        }
        self.clock += 1;
        let kept = self.plans.get_mut(statement)?;
        if !fresh(&kept.prepared) {
            self.plans.remove(statement);
            self.stats.plans.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        kept.used = self.clock;
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        Some(kept.prepared.clone())
    }

    /// Whether the cache may keep the plan of `statement`: a query, and
    /// room for plans at all.
    pub(crate) fn keeps(&self, statement: &Statement) -> bool {
        self.capacity > 0 && matches!(statement, Statement::Query(_))
    }

    /// Keeps `prepared`, planned from `statement` (one it [`keeps`](Self::keeps)),
    /// if it may be used again.
    pub(crate) fn put(&mut self, statement: Statement, prepared: &Prepared) {
        if prepared.catalog
            || !prepared.plan().is_some_and(reusable)
            // Last, as it writes the statement out: a long literal is as
            // costly to keep as many plan nodes.
            || statement.to_string().len() > MAX_STATEMENT_BYTES
        {
            return;
        }
        if self.plans.len() >= self.capacity
            && !self.plans.contains_key(&statement)
            && let Some(oldest) = self
                .plans
                .iter()
                .min_by_key(|(_, kept)| kept.used)
                .map(|(s, _)| s.clone())
        {
            self.plans.remove(&oldest);
            self.stats.plans.fetch_sub(1, Ordering::Relaxed);
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        self.clock += 1;
        let kept = Kept {
            prepared: prepared.clone(),
            used: self.clock,
        };
        if self.plans.insert(statement, kept).is_none() {
            self.stats.plans.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops every kept plan (a setting changed).
    pub(crate) fn clear(&mut self) {
        let dropped = self.plans.len() as u64;
        self.plans.clear();
        self.stats.plans.fetch_sub(dropped, Ordering::Relaxed);
    }
}

impl Drop for PlanCache {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Whether `plan` reads only stored Lookout tables (their rows come from
/// the snapshot each execution takes) and is small enough to keep.
fn reusable(plan: &LogicalPlan) -> bool {
    let mut items = 0usize;
    let mut reusable = true;
    let _ = plan.apply_with_subqueries(|node| {
        items += 1;
        let _ = node.apply_expressions(|expr| {
            expr.apply(|_| {
                items += 1;
                Ok(TreeNodeRecursion::Continue)
            })
        });
        if let LogicalPlan::TableScan(scan) = node {
            let stored = source_as_provider(&scan.source).is_ok_and(|provider| {
                provider.is::<LookoutTable>() || provider.is::<LatestVersions>()
            });
            reusable &= stored;
        }
        reusable &= items <= MAX_PLAN_ITEMS;
        Ok(if reusable {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    reusable
}

//! What a `DELETE` or `UPDATE` may hand to a table provider.
//!
//! DataFusion gives a provider's `delete_from`/`update` only the filters it
//! finds on the target table's scan in the optimized plan. A condition the
//! optimizer folds away (`WHERE false` becomes an empty relation) or turns
//! into a join (`WHERE model IN (SELECT ...)`) would reach the provider as
//! no filter at all, and every row would be deleted or updated. So the
//! optimized plan is checked first: an empty input writes nothing, and any
//! shape but filters and projections over the one table is refused.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{DmlStatement, Expr, LogicalPlan, WriteOp};

use crate::error::{QueryError, Result};

/// What an optimized write plan does.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WriteShape {
    /// An insert, or a delete/update whose rows are picked by filters on
    /// the target table alone: the provider can run it.
    Direct,
    /// A delete/update whose condition is never true: it writes nothing.
    Nothing,
}

/// Checks an optimized `DELETE`/`UPDATE` plan (others pass).
pub(crate) fn check(plan: &LogicalPlan) -> Result<WriteShape> {
    let LogicalPlan::Dml(DmlStatement {
        op: op @ (WriteOp::Delete | WriteOp::Update),
        input,
        ..
    }) = plan
    else {
        return Ok(WriteShape::Direct);
    };
    let verb = if matches!(op, WriteOp::Delete) {
        "DELETE"
    } else {
        "UPDATE"
    };
    let mut empty = false;
    let mut refused: Option<String> = None;
    input.apply(|node| {
        let problem = match node {
            LogicalPlan::EmptyRelation(e) if !e.produce_one_row => {
                empty = true;
                None
            }
            LogicalPlan::Projection(p) if !p.expr.iter().any(reads_a_query) => None,
            LogicalPlan::Filter(f) if !reads_a_query(&f.predicate) => None,
            LogicalPlan::Projection(_) | LogicalPlan::Filter(_) => Some("a subquery".to_string()),
            LogicalPlan::TableScan(_) | LogicalPlan::SubqueryAlias(_) => None,
            LogicalPlan::Limit(_) => Some("LIMIT".to_string()),
            _ => Some("a subquery or a join".to_string()),
        };
        if let Some(problem) = problem {
            refused = Some(problem);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let scans = count_scans(input)?;
    if refused.is_none() && scans > 1 {
        refused = Some("a second table".to_string());
    }
    match refused {
        Some(problem) => Err(QueryError::unsupported(format!(
            "{verb} with {problem} is not supported; \
             select the keys first, then {verb} ... WHERE key IN (...)"
        ))),
        None if empty => Ok(WriteShape::Nothing),
        None => Ok(WriteShape::Direct),
    }
}

fn count_scans(plan: &LogicalPlan) -> Result<usize> {
    let mut scans = 0;
    plan.apply(|node| {
        if matches!(node, LogicalPlan::TableScan(_)) {
            scans += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(scans)
}

fn reads_a_query(expr: &Expr) -> bool {
    expr.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_)
                | Expr::InSubquery(_)
                | Expr::Exists(_)
                | Expr::SetComparison(_)
        ))
    })
    .unwrap_or(true)
}

//! The grammar of `CREATE ROLLUP` and `DROP ROLLUP`, and a rollup's
//! definition: its columns, the SQL that computes its rows from the source's
//! and the SQL that merges them.

use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArguments,
};
use lookout_query::SqlState;
use lookout_query::ext::{
    SYSTEM_PREFIX, Words, ident_name, leading_words, parse_duration, quote_ident as quote,
    table_name,
};
use lookout_query::{QueryError, Result};
use lookout_storage::schema::DAY_MICROS;

/// The time column of every rollup table.
pub(crate) const BUCKET_COLUMN: &str = "bucket";

/// What one rollup column keeps, and how two of its values merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `count(*)`: rows; merged by `sum`.
    Rows,
    /// `count(expr)`: non-NULL values; merged by `sum`.
    Count,
    /// `sum(expr)` as double precision; merged by `sum`.
    Sum,
    /// `min(expr)` as double precision; merged by `min`.
    Min,
    /// `max(expr)` as double precision; merged by `max`.
    Max,
    /// `quantile_sketch(expr)`; merged by `sketch_merge`.
    Sketch,
    /// `score_state(expr [, threshold])`; merged by `score_merge`.
    Score,
    /// `embedding_state(expr)`: the count and sum of embeddings; merged by
    /// `embedding_merge`.
    Embedding,
}

impl Kind {
    fn from_function(name: &str) -> Option<Kind> {
        Some(match name {
            "count" => Kind::Count,
            "sum" => Kind::Sum,
            "min" => Kind::Min,
            "max" => Kind::Max,
            "quantile_sketch" => Kind::Sketch,
            "score_state" => Kind::Score,
            "embedding_state" => Kind::Embedding,
            _ => return None,
        })
    }

    /// The aggregate function computing it from rows.
    fn function(self) -> &'static str {
        match self {
            Kind::Rows | Kind::Count => "count",
            Kind::Sum => "sum",
            Kind::Min => "min",
            Kind::Max => "max",
            Kind::Sketch => "quantile_sketch",
            Kind::Score => "score_state",
            Kind::Embedding => "embedding_state",
        }
    }

    /// The suffix of a column's default name (`latency_ms_sketch`).
    fn suffix(self) -> &'static str {
        match self {
            Kind::Rows | Kind::Count => "count",
            Kind::Sum => "sum",
            Kind::Min => "min",
            Kind::Max => "max",
            Kind::Sketch => "sketch",
            Kind::Score => "state",
            Kind::Embedding => "embedding",
        }
    }
}

/// One column of a rollup: what it aggregates and its name.
#[derive(Debug, Clone)]
struct Column {
    kind: Kind,
    /// The aggregated expression, as SQL text (none for `count(*)`).
    arg: Option<String>,
    /// The second argument, as SQL text: `score_state`'s threshold or
    /// `quantile_sketch`'s weight.
    second: Option<String>,
    name: String,
}

impl Column {
    /// The aggregate call with `arg` as its first argument.
    fn call_with(&self, arg: &str) -> String {
        let function = self.kind.function();
        match &self.second {
            Some(second) => format!("{function}({arg}, {second})"),
            None => format!("{function}({arg})"),
        }
    }

    /// As computed from rows: sums and extremes in double precision.
    fn delta_sql(&self) -> String {
        let arg = self.arg.as_deref().unwrap_or("*");
        let arg = match self.kind {
            Kind::Sum | Kind::Min | Kind::Max => format!("CAST({arg} AS DOUBLE PRECISION)"),
            _ => arg.to_string(),
        };
        format!("{} AS {}", self.call_with(&arg), quote(&self.name))
    }

    fn merge_sql(&self) -> String {
        let merge = match self.kind {
            Kind::Rows | Kind::Count | Kind::Sum => "sum",
            Kind::Min => "min",
            Kind::Max => "max",
            Kind::Sketch => "sketch_merge",
            Kind::Score => "score_merge",
            Kind::Embedding => "embedding_merge",
        };
        let name = quote(&self.name);
        format!("{merge}({name}) AS {name}")
    }

    /// As declared.
    fn definition(&self) -> String {
        let arg = self.arg.as_deref().unwrap_or("*");
        format!("{} AS {}", self.call_with(arg), quote(&self.name))
    }
}

/// A rollup as declared by `CREATE ROLLUP`.
#[derive(Debug, Clone)]
pub(crate) struct RollupDef {
    pub(crate) name: String,
    pub(crate) source: String,
    pub(crate) group_by: Vec<String>,
    /// Bucket width, in microseconds.
    pub(crate) every: i64,
    /// The width as written.
    pub(crate) every_text: String,
    columns: Vec<Column>,
}

/// Whether `sql` starts with `word1 word2` (case-insensitive).
pub(crate) fn starts_with_words(sql: &str, first: &str, second: &str) -> bool {
    let words = leading_words(sql, 2);
    words.len() == 2
        && words[0].eq_ignore_ascii_case(first)
        && words[1].eq_ignore_ascii_case(second)
}

/// A table name, refused in the `lookout` schema.
fn parse_name(w: &mut Words<'_>) -> Result<String> {
    let name = w.parse_with(|p| p.parse_object_name(false))?;
    let table = table_name(&name)?;
    if table.starts_with(SYSTEM_PREFIX) {
        return Err(QueryError::new(
            SqlState::InsufficientPrivilege,
            format!("rollups cannot be defined on or in the lookout schema: \"{name}\""),
        ));
    }
    Ok(table)
}

/// `CREATE ROLLUP [IF NOT EXISTS] name ON table [GROUP BY col, ...] EVERY
/// 'interval' AS (aggregate [AS name], ...)`; returns the definition and
/// whether IF NOT EXISTS was given.
pub(crate) fn parse_create(sql: &str) -> Result<(RollupDef, bool)> {
    let mut w = Words::new(sql.trim().trim_end_matches(';'))?;
    w.expect_word("create")?;
    w.expect_word("rollup")?;
    let if_not_exists = w.eat_words(&["if", "not", "exists"]);
    let name = parse_name(&mut w)?;
    w.expect_word("on")?;
    let source = parse_name(&mut w)?;
    let mut group_by = Vec::new();
    if w.eat_words(&["group", "by"]) {
        loop {
            group_by.push(w.name()?);
            if !w.eat_symbol(",") {
                break;
            }
        }
    }
    w.expect_word("every")?;
    let every_text = w.string("an interval in quotes after EVERY")?;
    let every = parse_duration(&every_text)?;
    w.expect_word("as")?;
    w.expect_symbol("(")?;
    let mut columns = Vec::new();
    loop {
        let expr = w.parse_with(|p| p.parse_expr())?;
        let alias = if w.eat_word("as") {
            Some(w.name()?)
        } else {
            None
        };
        columns.push(column(&expr, alias)?);
        if !w.eat_symbol(",") {
            break;
        }
    }
    w.expect_symbol(")")?;
    w.expect_end()?;
    let def = RollupDef {
        name,
        source,
        group_by,
        every,
        every_text,
        columns,
    };
    def.check_names()?;
    Ok((def, if_not_exists))
}

/// `DROP ROLLUP [IF EXISTS] name`: the name and whether IF EXISTS was given.
pub(crate) fn parse_drop(sql: &str) -> Result<(String, bool)> {
    let mut w = Words::new(sql.trim().trim_end_matches(';'))?;
    w.expect_word("drop")?;
    w.expect_word("rollup")?;
    let if_exists = w.eat_words(&["if", "exists"]);
    let name = parse_name(&mut w)?;
    w.expect_end()?;
    Ok((name, if_exists))
}

/// One rollup column from its aggregate call.
fn column(expr: &SqlExpr, alias: Option<String>) -> Result<Column> {
    let unsupported = || {
        QueryError::unsupported(format!(
            "{expr} cannot be kept in a rollup: use count(*), count(x), sum(x), min(x), max(x), quantile_sketch(x), score_state(x [, threshold]) or embedding_state(x), whose partial results merge (an average is sum(x) / count(x))"
        ))
    };
    let SqlExpr::Function(f) = expr else {
        return Err(unsupported());
    };
    if f.filter.is_some() || f.over.is_some() || !f.within_group.is_empty() {
        return Err(unsupported());
    }
    let FunctionArguments::List(list) = &f.args else {
        return Err(unsupported());
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return Err(unsupported());
    }
    let function = f.name.to_string().to_lowercase();
    let mut kind = Kind::from_function(&function).ok_or_else(unsupported)?;
    let mut args = Vec::new();
    for arg in &list.args {
        match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Wildcard) if kind == Kind::Count => {
                kind = Kind::Rows;
            }
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => args.push(e),
            _ => return Err(unsupported()),
        }
    }
    let arity_ok = match kind {
        Kind::Rows => args.is_empty(),
        Kind::Score | Kind::Sketch => (1..=2).contains(&args.len()),
        _ => args.len() == 1,
    };
    if !arity_ok {
        return Err(unsupported());
    }
    let name = match (alias, args.first()) {
        (Some(a), _) => a,
        (None, None) => "count".to_string(),
        (None, Some(SqlExpr::Identifier(i))) => {
            format!("{}_{}", ident_name(i), kind.suffix())
        }
        (None, Some(_)) => {
            return Err(QueryError::syntax(format!(
                "name the rollup column {expr} with AS"
            )));
        }
    };
    Ok(Column {
        kind,
        arg: args.first().map(|e| e.to_string()),
        second: args.get(1).map(|e| e.to_string()),
        name,
    })
}

impl RollupDef {
    fn check_names(&self) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for name in std::iter::once(BUCKET_COLUMN)
            .chain(self.group_by.iter().map(String::as_str))
            .chain(self.columns.iter().map(|c| c.name.as_str()))
        {
            if !seen.insert(name) {
                return Err(QueryError::new(
                    SqlState::DuplicateColumn,
                    format!(
                        "column \"{name}\" appears twice in rollup \"{}\" (\"{BUCKET_COLUMN}\" is the bucket's start)",
                        self.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The definition as stored, parsed back at every open.
    pub(crate) fn to_sql(&self) -> String {
        let group = if self.group_by.is_empty() {
            String::new()
        } else {
            let cols: Vec<String> = self.group_by.iter().map(|g| quote(g)).collect();
            format!(" GROUP BY {}", cols.join(", "))
        };
        let columns: Vec<String> = self.columns.iter().map(Column::definition).collect();
        format!(
            "CREATE ROLLUP {} ON {}{group} EVERY '{}' AS ({})",
            quote(&self.name),
            quote(&self.source),
            self.every_text.replace('\'', "''"),
            columns.join(", ")
        )
    }

    fn group_list(&self) -> String {
        self.group_by
            .iter()
            .map(|g| format!(", {}", quote(g)))
            .collect()
    }

    /// The query computing this rollup's rows from `from`'s rows.
    pub(crate) fn delta_sql(&self, time_column: &str, from: &str) -> String {
        let bucket = format!(
            "date_bin(INTERVAL '{} microseconds', {})",
            self.every,
            quote(time_column)
        );
        let columns: Vec<String> = self.columns.iter().map(Column::delta_sql).collect();
        let group = self.group_list();
        format!(
            "SELECT {bucket} AS {BUCKET_COLUMN}{group}, {} FROM {from} GROUP BY {bucket}{group}",
            columns.join(", ")
        )
    }

    /// The query merging rollup rows of `from` into one row per bucket and group.
    pub(crate) fn merge_sql(&self, from: &str) -> String {
        let columns: Vec<String> = self.columns.iter().map(Column::merge_sql).collect();
        let group = self.group_list();
        format!(
            "SELECT {BUCKET_COLUMN}{group}, {} FROM {from} GROUP BY {BUCKET_COLUMN}{group}",
            columns.join(", ")
        )
    }

    /// Width of the rollup table's time partitions: about 720 buckets
    /// (30 days of an hourly rollup), in whole days. A rollup is small, and
    /// a query over a month should open a handful of files, not one a day.
    pub(crate) fn partition_width(&self) -> i64 {
        let width = self.every.saturating_mul(720);
        (width + DAY_MICROS - 1) / DAY_MICROS * DAY_MICROS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_round_trip_with_default_names() {
        let (def, ine) = parse_create(
            "create rollup IF NOT EXISTS events_hourly on events group by model, segment every '1 hour' \
             as (count(*), quantile_sketch(latency_ms), score_state(score_groundedness, 0.7) as grounded, \
             sum(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END) AS errors)",
        )
        .expect("parse");
        assert!(ine);
        assert_eq!(def.every, 3_600_000_000);
        let names: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["count", "latency_ms_sketch", "grounded", "errors"]);
        let (again, _) = parse_create(&def.to_sql()).expect("reparse");
        assert_eq!(again.to_sql(), def.to_sql());
        assert_eq!(again.group_by, ["model", "segment"]);
    }

    #[test]
    fn aggregates_that_do_not_merge_are_refused() {
        for sql in [
            "CREATE ROLLUP r ON t EVERY '1 hour' AS (avg(x))",
            "CREATE ROLLUP r ON t EVERY '1 hour' AS (count(DISTINCT x))",
            "CREATE ROLLUP r ON t EVERY '1 hour' AS (x + 1)",
        ] {
            let e = parse_create(sql).expect_err(sql);
            assert_eq!(e.sqlstate(), "0A000", "{sql}: {e}");
        }
        let e = parse_create("CREATE ROLLUP r ON t EVERY '1 hour' AS (sum(x * 2))")
            .expect_err("unnamed");
        assert_eq!(e.sqlstate(), "42601");
        let e = parse_create("CREATE ROLLUP r ON t GROUP BY bucket EVERY '1 hour' AS (count(*))")
            .expect_err("bucket");
        assert_eq!(e.sqlstate(), "42701");
        let e = parse_create("CREATE ROLLUP r ON t EVERY 'soon' AS (count(*))").expect_err("every");
        assert_eq!(e.sqlstate(), "22007");
    }
}

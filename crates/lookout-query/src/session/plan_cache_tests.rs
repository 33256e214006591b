//! A kept plan answers as a fresh one would: rows written since, tables
//! changed since, blocks and settings, and what it does not keep.

use arrow::util::pretty::pretty_format_batches;

use crate::{Lookout, LookoutOptions, PlanCacheFigures, Session};

async fn open(plans: usize) -> (tempfile::TempDir, Lookout) {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LookoutOptions {
        plan_cache: plans,
        ..LookoutOptions::default()
    };
    let db = Lookout::open_with(dir.path(), options).await.expect("open");
    db.sql(
        "CREATE TABLE t (ts TIMESTAMPTZ NOT NULL, model TEXT NOT NULL, n BIGINT) \
         PARTITION BY (model)",
    )
    .await
    .expect("create");
    db.sql(
        "INSERT INTO t VALUES ('2025-01-01T00:00:00Z', 'a', 1), ('2025-01-01T01:00:00Z', 'b', 2)",
    )
    .await
    .expect("insert");
    (dir, db)
}

/// Runs `sql`; its rows.
async fn run(session: &mut Session, sql: &str) -> Vec<arrow::array::RecordBatch> {
    session
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Runs `sql`; its rows as a table.
async fn text(session: &mut Session, sql: &str) -> String {
    let batches = run(session, sql).await;
    pretty_format_batches(&batches).expect("format").to_string()
}

fn figures(db: &Lookout) -> PlanCacheFigures {
    db.plan_cache_stats().figures()
}

const SUM: &str = "SELECT count(*) AS n, sum(n) AS total FROM t WHERE model <> 'z'";

#[tokio::test]
async fn a_kept_plan_reads_the_rows_of_its_own_execution() {
    let (_dir, db) = open(8).await;
    let mut session = db.session();
    let first = text(&mut session, SUM).await;
    assert!(first.contains("| 2 | 3     |"), "{first}");
    let before = figures(&db);
    db.sql("INSERT INTO t VALUES ('2025-01-01T02:00:00Z', 'a', 10)")
        .await
        .expect("insert");
    let second = text(&mut session, SUM).await;
    assert!(second.contains("| 3 | 13    |"), "{second}");
    let after = figures(&db);
    assert_eq!(after.hits, before.hits + 1, "{after:?}");
    // Written and then deleted in another session: the kept plan sees it.
    db.sql("DELETE FROM t WHERE n = 10").await.expect("delete");
    let third = text(&mut session, SUM).await;
    assert!(third.contains("| 2 | 3     |"), "{third}");
    db.close().await.expect("close");
}

#[tokio::test]
async fn a_changed_table_is_planned_again() {
    let (_dir, db) = open(8).await;
    let mut session = db.session();
    let star = "SELECT * FROM t ORDER BY ts";
    let before = text(&mut session, star).await;
    assert!(!before.contains("extra"), "{before}");
    db.sql("ALTER TABLE t ADD COLUMN extra TEXT")
        .await
        .expect("alter");
    let after = text(&mut session, star).await;
    assert!(after.contains("extra"), "{after}");
    // Dropped and made again with other columns.
    db.sql("DROP TABLE t").await.expect("drop");
    db.sql("CREATE TABLE t (ts TIMESTAMPTZ NOT NULL, other DOUBLE PRECISION)")
        .await
        .expect("create");
    db.sql("INSERT INTO t VALUES ('2025-01-01T00:00:00Z', 1.5)")
        .await
        .expect("insert");
    let again = text(&mut session, star).await;
    assert!(
        again.contains("| other |") && again.contains("1.5"),
        "{again}"
    );
    db.close().await.expect("close");
}

#[tokio::test]
async fn catalogs_and_status_tables_are_not_kept_and_views_are_read_as_defined() {
    let (_dir, db) = open(8).await;
    let mut session = db.session();
    run(
        &mut session,
        "CREATE VIEW v AS SELECT n FROM t WHERE model = 'a'",
    )
    .await;
    let plans = figures(&db).plans;
    for sql in [
        "SELECT relname FROM pg_catalog.pg_class WHERE relname = 'v'",
        "SELECT table_name FROM information_schema.tables WHERE table_name = 'v'",
        "SELECT hits FROM lookout.plan_cache",
        "SELECT * FROM generate_series(1, 3)",
    ] {
        text(&mut session, sql).await;
        text(&mut session, sql).await;
        assert_eq!(figures(&db).plans, plans, "{sql} was kept");
    }
    let cte = "WITH x AS (SELECT n FROM t) SELECT sum(n) FROM x";
    text(&mut session, cte).await;
    assert_eq!(figures(&db).plans, plans + 1, "{cte} was not kept");
    // A view's definition is planned into the query's plan: the kept plan
    // is made again when the view is replaced.
    let before = text(&mut session, "SELECT * FROM v").await;
    assert!(before.contains("| 1 |"), "{before}");
    assert_eq!(
        figures(&db).plans,
        plans + 2,
        "the view's query was not kept"
    );
    run(
        &mut session,
        "CREATE OR REPLACE VIEW v AS SELECT n FROM t WHERE model = 'b'",
    )
    .await;
    let replaced = text(&mut session, "SELECT * FROM v").await;
    assert!(replaced.contains("| 2 |"), "{replaced}");
    db.close().await.expect("close");
}

#[tokio::test]
async fn settings_drop_the_kept_plans_and_blocks_see_their_writes() {
    let (_dir, db) = open(8).await;
    let mut session = db.session();
    text(&mut session, SUM).await;
    assert!(figures(&db).plans >= 1);
    run(&mut session, "SET application_name = 'dashboards'").await;
    assert_eq!(figures(&db).plans, 0, "SET keeps plans made before it");
    text(&mut session, SUM).await;
    run(&mut session, "DISCARD ALL").await;
    assert_eq!(figures(&db).plans, 0, "DISCARD keeps plans made before it");
    text(&mut session, SUM).await;
    // A plan kept outside a block reads the block's own writes inside it.
    run(&mut session, "BEGIN").await;
    run(
        &mut session,
        "INSERT INTO t VALUES ('2025-01-01T03:00:00Z', 'c', 100)",
    )
    .await;
    let inside = text(&mut session, SUM).await;
    assert!(inside.contains("| 3 | 103   |"), "{inside}");
    run(&mut session, "ROLLBACK").await;
    let outside = text(&mut session, SUM).await;
    assert!(outside.contains("| 2 | 3     |"), "{outside}");
    db.close().await.expect("close");
}

#[tokio::test]
async fn the_least_recently_used_plan_leaves_and_the_figures_show() {
    let (_dir, db) = open(2).await;
    let mut session = db.session();
    for sql in [
        "SELECT count(*) FROM t",
        "SELECT sum(n) FROM t",
        "SELECT count(*) FROM t",
        "SELECT max(n) FROM t",
        "SELECT count(*) FROM t",
    ] {
        text(&mut session, sql).await;
    }
    let status = text(
        &mut session,
        "SELECT budget_per_session, plans, hits, misses, evictions FROM lookout.plan_cache",
    )
    .await;
    // `count` stayed (used last), `sum` left for `max`.
    assert!(
        status.contains("| 2                  | 2     | 2    | 3      | 1         |"),
        "{status}"
    );
    drop(session);
    assert_eq!(
        figures(&db).plans,
        0,
        "a closed session's plans are counted"
    );
    db.close().await.expect("close");
}

#[tokio::test]
async fn no_plans_are_kept_when_the_budget_is_zero() {
    let (_dir, db) = open(0).await;
    let mut session = db.session();
    text(&mut session, SUM).await;
    text(&mut session, SUM).await;
    let f = figures(&db);
    assert_eq!((f.plans, f.hits, f.misses), (0, 0, 0), "{f:?}");
    db.close().await.expect("close");
}

#[tokio::test]
async fn a_prepared_statement_reads_a_replaced_view() {
    let (_dir, db) = open(8).await;
    let mut session = db.session();
    run(
        &mut session,
        "CREATE VIEW v AS SELECT n FROM t WHERE model = 'a'",
    )
    .await;
    // A view over the view that will be replaced.
    run(&mut session, "CREATE VIEW w AS SELECT * FROM v").await;
    let prepared = session
        .prepare("SELECT * FROM w")
        .await
        .expect("prepare")
        .expect("a statement");
    run(
        &mut session,
        "CREATE OR REPLACE VIEW v AS SELECT n FROM t WHERE model = 'b'",
    )
    .await;
    let out = session
        .execute_prepared(&prepared, Vec::new())
        .await
        .expect("execute");
    let crate::Output::Rows { stream, .. } = out else {
        panic!("no rows");
    };
    let batches = datafusion::physical_plan::common::collect(stream)
        .await
        .expect("rows");
    let text = pretty_format_batches(&batches).expect("format").to_string();
    assert!(text.contains("| 2 |"), "{text}");
    db.close().await.expect("close");
}

#[tokio::test]
async fn a_long_statement_is_run_but_not_kept() {
    let (_dir, db) = open(8).await;
    let mut session = db.session();
    let long = format!(
        "SELECT count(*) FROM t WHERE model <> '{}'",
        "x".repeat(20_000)
    );
    text(&mut session, &long).await;
    text(&mut session, &long).await;
    let f = figures(&db);
    assert_eq!((f.plans, f.hits), (0, 0), "{f:?}");
    db.close().await.expect("close");
}

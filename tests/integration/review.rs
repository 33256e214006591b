//! Review queues with real clients: reviewers claiming concurrently from
//! separate psql processes never get the same item, and claims and
//! verdicts survive a restart.

use std::collections::HashSet;

use crate::harness::{TestServer, rows, wait_for_rows};

async fn start(dir: tempfile::TempDir) -> TestServer {
    let server = TestServer::start_in(dir).await;
    lookout_review::ReviewQueues::start(server.lookout.clone())
        .await
        .expect("review queues");
    server
}

/// `items` calls, a feedback table and the queue `triage` holding every call.
async fn setup(client: &tokio_postgres::Client, items: usize) {
    client
        .batch_execute(&format!(
            "CREATE TABLE calls (ts TIMESTAMPTZ NOT NULL, request_id TEXT NOT NULL);
             INSERT INTO calls SELECT to_timestamp(1735689600 + i), 'req-' || i FROM generate_series(1, {items}) AS g(i);
             CREATE TABLE feedback (ts TIMESTAMPTZ NOT NULL, request_id TEXT NOT NULL, source TEXT NOT NULL,
               kind TEXT NOT NULL, value DOUBLE PRECISION, label TEXT, author TEXT, deleted BOOLEAN)
               WITH (key = 'request_id, source, kind', version = 'ts', deleted = 'deleted');
             CREATE REVIEW QUEUE triage ON calls KEY request_id LEASE '1 hour';
             ENQUEUE INTO triage SELECT request_id FROM calls ORDER BY ts;"
        ))
        .await
        .expect("setup");
}

/// One reviewer: a shell loop of psql calls claiming `batch` items until
/// the queue is empty; returns the items claimed.
fn reviewer(port: u16, name: &str, batch: usize) -> std::process::Child {
    let script = format!(
        "while true; do out=$(psql -h 127.0.0.1 -p {port} -U lookout -X -A -t -v ON_ERROR_STOP=1 \
           -c \"CLAIM {batch} FROM triage AS '{name}'\") || exit 1; \
           [ -z \"$out\" ] && exit 0; echo \"$out\"; done"
    );
    std::process::Command::new("bash")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("bash and psql")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_psql_reviewers_never_share_an_item() {
    let server = start(tempfile::tempdir().expect("tempdir")).await;
    let client = server.client().await;
    setup(&client, 600).await;
    let port = server.addr.port();
    let reviewers: Vec<(String, std::process::Child)> = (0..6)
        .map(|i| {
            let name = format!("reviewer-{i}");
            let child = reviewer(port, &name, 3 + i);
            (name, child)
        })
        .collect();
    let mut claimed: Vec<(String, String)> = Vec::new();
    for (name, child) in reviewers {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .expect("join")
            .expect("psql loop");
        assert!(out.status.success(), "{name}'s psql loop failed");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let cols: Vec<&str> = line.split('|').collect();
            assert_eq!(cols[3], name, "{line}");
            claimed.push((cols[1].to_string(), name.clone()));
        }
    }
    let distinct: HashSet<&String> = claimed.iter().map(|(item, _)| item).collect();
    assert_eq!(distinct.len(), claimed.len(), "an item was claimed twice");
    assert_eq!(claimed.len(), 600, "every item is claimed once");
    let workers: HashSet<&String> = claimed.iter().map(|(_, r)| r).collect();
    assert!(workers.len() > 1, "the claims were not concurrent");

    // Verdicts on a few claimed items, then a restart.
    for (item, reviewer) in claimed.iter().take(5) {
        client
            .simple_query(&format!(
                "SUBMIT REVIEW triage '{item}' VALUE 1 LABEL 'ok' AS '{reviewer}'"
            ))
            .await
            .expect("submit");
    }
    let dir = server.stop().await;
    let server = start(dir).await;
    let client = server.client().await;
    let shown = rows(&client, "SHOW REVIEW QUEUES").await;
    assert_eq!(
        shown[0][3..6],
        [Some("0".into()), Some("595".into()), Some("5".into())]
    );
    let labels = rows(
        &client,
        "SELECT count(*) FROM feedback WHERE source = 'review' AND kind = 'verdict' AND label = 'ok'",
    )
    .await;
    assert_eq!(labels, vec![vec![Some("5".to_string())]]);
    // A claim survives the restart: its holder may still submit, others may not.
    let (item, holder) = &claimed[10];
    let other = if holder == "reviewer-0" {
        "reviewer-1"
    } else {
        "reviewer-0"
    };
    let refused = client
        .simple_query(&format!(
            "SUBMIT REVIEW triage '{item}' VALUE 0 AS '{other}'"
        ))
        .await
        .expect_err("not the holder");
    assert_eq!(refused.code().map(|c| c.code()), Some("55000"));
    client
        .simple_query(&format!(
            "SUBMIT REVIEW triage '{item}' VALUE 0 AS '{holder}'"
        ))
        .await
        .expect("holder submits");
    assert!(
        rows(&client, "CLAIM 1 FROM triage AS 'late'")
            .await
            .is_empty(),
        "nothing is claimable while the leases run"
    );
    server.stop().await;
}

/// kill -9 while reviewers claim: after a restart, every claim a reviewer
/// was told about is still theirs, and no item is held twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_claims_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = crate::harness::free_port();
    let mut child = crate::harness::spawn_server(dir.path(), port);
    let client = crate::harness::wait_ready(port).await;
    setup(&client, 5000).await;
    let acked = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::<(String, String)>::new()));
    let mut workers = Vec::new();
    for w in 0..3 {
        let acked = std::sync::Arc::clone(&acked);
        workers.push(tokio::spawn(async move {
            let client =
                crate::harness::connect(format!("127.0.0.1:{port}").parse().expect("addr")).await;
            let name = format!("r{w}");
            loop {
                let Ok(claimed) = client
                    .simple_query(&format!("CLAIM 2 FROM triage AS '{name}'"))
                    .await
                else {
                    return;
                };
                let mut list = acked.lock().await;
                for m in claimed {
                    if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                        list.push((r.get(1).unwrap_or_default().to_string(), name.clone()));
                    }
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    child.kill().expect("kill -9");
    let _ = child.wait();
    for w in workers {
        let _ = w.await;
    }
    let acked = acked.lock().await.clone();
    assert!(
        acked.len() > 10,
        "too few claims before the kill: {}",
        acked.len()
    );

    let mut child = crate::harness::spawn_server(dir.path(), port);
    let client = crate::harness::wait_ready(port).await;
    let held = rows(
        &client,
        "SELECT item, reviewer FROM lookout.review_queue_items WHERE status = 'claimed'",
    )
    .await;
    let held: std::collections::HashMap<String, String> = held
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap_or_default(),
                r[1].clone().unwrap_or_default(),
            )
        })
        .collect();
    for (item, reviewer) in &acked {
        assert_eq!(
            held.get(item),
            Some(reviewer),
            "acknowledged claim of {item} lost"
        );
    }
    let distinct: HashSet<&String> = acked.iter().map(|(i, _)| i).collect();
    assert_eq!(distinct.len(), acked.len(), "an item was claimed twice");
    child.kill().expect("kill");
    let _ = child.wait();
}

/// A queue's enqueue rule runs on its schedule, before and after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_rules_run_on_their_schedule() {
    let server = start(tempfile::tempdir().expect("tempdir")).await;
    let client = server.client().await;
    setup(&client, 10).await;
    client
        .batch_execute(
            "INSERT INTO feedback VALUES ('2025-01-01 00:00:00+00', 'req-3', 'user', 'thumbs', -1, NULL, 'u', false);
             CREATE REVIEW QUEUE downvoted ON calls KEY request_id LEASE '1 hour'
               ENQUEUE EVERY '1 second' AS SELECT request_id FROM feedback WHERE kind = 'thumbs' AND value < 0",
        )
        .await
        .expect("queue with a rule");
    let pending =
        "SELECT item FROM lookout.review_queue_items WHERE queue = 'downvoted' ORDER BY item";
    let timeout = std::time::Duration::from_secs(20);
    wait_for_rows(&client, pending, timeout, |r| r.len() == 1).await;
    client
        .simple_query("INSERT INTO feedback VALUES ('2025-01-01 00:00:01+00', 'req-7', 'user', 'thumbs', -1, NULL, 'u', false)")
        .await
        .expect("thumbs down");
    wait_for_rows(&client, pending, timeout, |r| r.len() == 2).await;

    let dir = server.stop().await;
    let server = start(dir).await;
    let client = server.client().await;
    client
        .simple_query("INSERT INTO feedback VALUES ('2025-01-01 00:00:02+00', 'req-9', 'user', 'thumbs', -1, NULL, 'u', false)")
        .await
        .expect("thumbs down");
    let items = wait_for_rows(&client, pending, timeout, |r| r.len() == 3).await;
    assert_eq!(
        items,
        ["req-3", "req-7", "req-9"].map(|i| vec![Some(i.to_string())])
    );
    let bad = crate::harness::error_code(
        &client,
        "CREATE REVIEW QUEUE broken ON calls KEY request_id ENQUEUE EVERY '1 minute' AS SELECT nope FROM feedback",
    )
    .await;
    assert_eq!(bad, "42703");
    server.stop().await;
}

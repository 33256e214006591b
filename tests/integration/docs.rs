//! Docs are tests: every ```sql block of README.md and docs/*.md runs, in
//! order, through psql against `lookout demo` (a fresh data directory for
//! each document, so a document defines what it uses beyond the demo's
//! tables). A block right after `<!-- docs-test: error SQLSTATE -->` must
//! fail with that SQLSTATE; one after `<!-- docs-test: skip reason -->` is
//! not Lookout's SQL (a DuckDB query) and does not run. Syntax summaries
//! are fenced as `text`, not `sql`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{free_port, wait_ready};

/// What a block is expected to do.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Success,
    Error(String),
    Skip,
}

#[derive(Debug)]
struct Block {
    line: usize,
    sql: String,
    expect: Expect,
}

/// The ```sql blocks of a Markdown text, dedented to their fence, with
/// what the marker comment before each expects.
fn sql_blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let fence = lines[i];
        let indent = fence.len() - fence.trim_start().len();
        if fence.trim() != "```sql" {
            i += 1;
            continue;
        }
        let marker = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim())
            .and_then(|l| l.strip_prefix("<!-- docs-test:"))
            .and_then(|l| l.strip_suffix("-->"))
            .map(str::trim);
        let expect = match marker {
            Some(m) if m.starts_with("skip") => Expect::Skip,
            Some(m) => match m.strip_prefix("error") {
                Some(code) => Expect::Error(code.trim().to_string()),
                None => panic!("unknown docs-test marker {m:?} before line {}", i + 1),
            },
            None => Expect::Success,
        };
        let mut sql = String::new();
        let mut j = i + 1;
        while j < lines.len() && lines[j].trim() != "```" {
            let line = lines[j];
            let cut = line.len() - line.trim_start().len();
            sql.push_str(&line[cut.min(indent)..]);
            sql.push('\n');
            j += 1;
        }
        blocks.push(Block {
            line: i + 1,
            sql,
            expect,
        });
        i = j + 1;
    }
    blocks
}

/// Runs `sql` through psql; returns whether it succeeded and its stderr
/// (with SQLSTATEs: `ERROR:  42P01: ...`).
fn psql(port: u16, sql: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "lookout", "-d", "lookout", "-X", "-q"])
        .args(["-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql (apt-get install postgresql-client)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(sql.as_bytes())
        .expect("write sql");
    let out = child.wait_with_output().expect("psql output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs.insert(0, root.join("README.md"));
    docs
}

/// `lookout demo` on a fresh data directory, stopped when dropped.
struct Demo {
    port: u16,
    process: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Demo {
    async fn start() -> Demo {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let process = Command::new(env!("CARGO_BIN_EXE_lookout"))
            .args(["demo", "--rows", "20000", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data")
            .arg(dir.path())
            .env("LOOKOUT_LOG", "warn")
            .current_dir(std::env::temp_dir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn lookout demo");
        drop(wait_ready(port).await);
        Demo {
            port,
            process,
            _dir: dir,
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[test]
fn markers_and_indented_blocks_are_read() {
    let text = "intro\n\n<!-- docs-test: error 42P01 -->\n```sql\nSELECT * FROM nowhere;\n```\n\n  ```sql\n  SELECT 1;\n  ```\n<!-- docs-test: skip DuckDB -->\n```sql\nSELECT * FROM read_parquet('x');\n```\n```text\nnot sql\n```\n";
    let blocks = sql_blocks(text);
    assert_eq!(blocks.len(), 3);
    assert_eq!(blocks[0].expect, Expect::Error("42P01".into()));
    assert_eq!(blocks[0].line, 4);
    assert_eq!(blocks[1].sql, "SELECT 1;\n");
    assert_eq!(blocks[1].expect, Expect::Success);
    assert_eq!(blocks[2].expect, Expect::Skip);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sql_example_in_the_docs_runs_on_the_demo() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("read doc");
        let blocks = sql_blocks(&text);
        if blocks.iter().all(|b| b.expect == Expect::Skip) {
            continue;
        }
        let demo = Demo::start().await;
        let port = demo.port;
        let name = doc
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        for block in blocks {
            if block.expect == Expect::Skip {
                continue;
            }
            ran += 1;
            let sql = block.sql.clone();
            let (ok, stderr) = tokio::task::spawn_blocking(move || psql(port, &sql))
                .await
                .expect("psql task");
            let problem = match (&block.expect, ok) {
                (Expect::Success, true) => None,
                (Expect::Success, false) => Some(format!("failed: {}", stderr.trim())),
                (Expect::Error(code), false) if stderr.contains(&format!("ERROR:  {code}:")) => {
                    None
                }
                (Expect::Error(code), false) => Some(format!(
                    "should fail with {code}, failed: {}",
                    stderr.trim()
                )),
                (Expect::Error(code), true) => Some(format!("should fail with {code}, ran")),
                (Expect::Skip, _) => None,
            };
            if let Some(problem) = problem {
                failures.push(format!("{name}:{}: {problem}", block.line));
            }
        }
        drop(demo);
    }
    println!("ran {ran} SQL examples from README.md and docs/");
    assert!(ran >= 25, "only {ran} examples found");
    assert!(
        failures.is_empty(),
        "{} examples do not run as documented:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every query of the LLM-quality Grafana dashboard runs on the demo (its
/// feedback, late labels, judge scores, sampled traces and review queue),
/// with Grafana's macros expanded for the last 7 days, returns rows, and
/// narrows when one model is chosen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_quality_dashboard_queries_run_on_the_demo() {
    let demo = Demo::start().await;
    let client = wait_ready(demo.port).await;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana/lookout-llm-quality.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("json");
    let now = chrono::Utc::now();
    let to = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let from = (now - chrono::Duration::days(7)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let expand = |sql: &str| crate::clients::expand_grafana_macros(sql, &from, &to);
    let variable = dashboard["templating"]["list"][0]["query"]
        .as_str()
        .expect("variable query");
    let models: Vec<String> = crate::harness::rows(&client, &expand(variable))
        .await
        .into_iter()
        .filter_map(|mut r| r.remove(0))
        .collect();
    assert_eq!(models.len(), 8, "{models:?}");
    let quoted = |names: &[String]| {
        names
            .iter()
            .map(|m| format!("'{m}'"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut panels = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            panels += 1;
            let what = panel["title"].as_str().unwrap_or_default();
            let sql = expand(target["rawSql"].as_str().expect("rawSql"));
            let all = crate::harness::rows(&client, &sql.replace("$model", &quoted(&models))).await;
            assert!(!all.is_empty(), "{what}: no rows\n{sql}");
            if sql.contains("$model") {
                let one =
                    crate::harness::rows(&client, &sql.replace("$model", &quoted(&models[..1])))
                        .await;
                assert!(
                    !one.is_empty() && one != all,
                    "{what}: choosing one model changes nothing\n{sql}"
                );
            }
        }
    }
    assert!(panels >= 7, "{panels} panels");
}

//! Starting servers and connecting to them.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use lookout_query::{Lookout, LookoutOptions};
use lookout_server::ServerOptions;
use tokio::sync::oneshot;

/// Opens a database with the extensions the binary installs in the storage
/// and write path (rollups, sampling), as `lookout serve` does.
pub(crate) async fn open_lookout(
    dir: &Path,
    options: LookoutOptions,
    sampling: lookout_sampling::SamplingOptions,
) -> Lookout {
    let lookout = Lookout::open_with(dir, options).await.expect("open");
    lookout_rollups::install(&lookout).await.expect("rollups");
    lookout_delta::install(&lookout);
    lookout_sampling::install(&lookout, sampling)
        .await
        .expect("sampling");
    lookout
}

/// An in-process server on a free loopback port, over a temporary data directory.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) lookout: Lookout,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub(crate) dir: tempfile::TempDir,
}

impl TestServer {
    pub(crate) async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir).await
    }

    pub(crate) async fn start_in(dir: tempfile::TempDir) -> TestServer {
        Self::start_with(dir, LookoutOptions::default()).await
    }

    pub(crate) async fn start_with(dir: tempfile::TempDir, options: LookoutOptions) -> TestServer {
        let sampling = lookout_sampling::SamplingOptions {
            interval: options.storage.background.then(|| Duration::from_secs(10)),
        };
        Self::start_sampling(dir, options, sampling).await
    }

    /// As [`TestServer::start_with`], deciding sampled tables' rows as `sampling` says.
    pub(crate) async fn start_sampling(
        dir: tempfile::TempDir,
        options: LookoutOptions,
        sampling: lookout_sampling::SamplingOptions,
    ) -> TestServer {
        let lookout = open_lookout(dir.path(), options, sampling).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let served = lookout.clone();
        let options = ServerOptions {
            shutdown_grace: Duration::from_millis(200),
            ..ServerOptions::default()
        };
        let task = tokio::spawn(async move {
            let _ = lookout_server::serve(served, listener, options, async {
                let _ = stopped.await;
            })
            .await;
        });
        TestServer {
            addr,
            lookout,
            stop: Some(stop),
            task: Some(task),
            dir,
        }
    }

    pub(crate) async fn client(&self) -> tokio_postgres::Client {
        connect(self.addr).await
    }

    /// Stops serving and closes the database; returns the data directory.
    pub(crate) async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.lookout.close().await.expect("close");
        self.dir
    }
}

pub(crate) async fn connect(addr: SocketAddr) -> tokio_postgres::Client {
    let conn_str = format!(
        "host={} port={} user=lookout dbname=lookout",
        addr.ip(),
        addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Rows of a simple query as text (NULL as None).
pub(crate) async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let msgs = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    msgs.into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// The SQLSTATE of a failing statement.
pub(crate) async fn error_code(client: &tokio_postgres::Client, sql: &str) -> String {
    match client.simple_query(sql).await {
        Ok(_) => panic!("expected an error from {sql}"),
        Err(e) => e
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| format!("no code: {e:?}")),
    }
}

/// Generates bench events with the shared generator; returns the Parquet files.
pub(crate) fn generate_events(dir: &Path, rows: usize, files: usize) -> Vec<std::path::PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gen_events.py");
    let status = std::process::Command::new("python3")
        .arg(script)
        .args([
            "--rows",
            &rows.to_string(),
            "--files",
            &files.to_string(),
            "--seed",
            "7",
            "--jobs",
            "1",
        ])
        .arg("--out")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("python3 (install tests/requirements.txt)");
    assert!(
        status.success(),
        "gen_events.py failed; pip install -r tests/requirements.txt"
    );
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    files
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The `lookout` binary serving `dir` on `port`.
pub(crate) fn spawn_server(dir: &Path, port: u16) -> std::process::Child {
    spawn_server_with(dir, port, &[])
}

/// The `lookout` binary with extra environment variables.
pub(crate) fn spawn_server_with(
    dir: &Path,
    port: u16,
    env: &[(&str, &str)],
) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data")
        .arg(dir)
        .env("LOOKOUT_LOG", "warn")
        .envs(env.iter().copied())
        // Anything the process leaves behind (a core dump) stays out of the repository.
        .current_dir(std::env::temp_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn lookout")
}

pub(crate) async fn wait_ready(port: u16) -> tokio_postgres::Client {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return connect(addr).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not start on port {port}");
}

/// The alert statements on `lookout`, without scheduled evaluation.
pub(crate) async fn alert_statements(lookout: &Lookout) -> lookout_alerts::AlertEngine {
    lookout_alerts::AlertEngine::start(
        lookout.clone(),
        lookout_alerts::AlertOptions {
            schedule: false,
            ..Default::default()
        },
    )
    .await
    .expect("alert engine")
}

/// Polls `sql` until `done` accepts its rows; panics after `timeout`.
pub(crate) async fn wait_for_rows(
    client: &tokio_postgres::Client,
    sql: &str,
    timeout: Duration,
    done: impl Fn(&[Vec<Option<String>>]) -> bool,
) -> Vec<Vec<Option<String>>> {
    let started = std::time::Instant::now();
    loop {
        let r = rows(client, sql).await;
        if done(&r) {
            return r;
        }
        assert!(started.elapsed() < timeout, "{sql}: still {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a client program to completion off the async runtime; panics with
/// its output (or `install_hint` if it cannot start) unless it succeeds.
pub(crate) async fn run_program(mut cmd: std::process::Command, install_hint: &'static str) {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("{install_hint}: {e}"));
    assert!(
        out.status.success(),
        "{install_hint}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a client program against a fresh server; it gets the port as its
/// last argument.
pub(crate) async fn run_on_fresh_server(program: &str, args: &[&str], install_hint: &'static str) {
    let server = TestServer::start().await;
    let mut cmd = std::process::Command::new(program);
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients"))
        .args(args)
        .arg(server.addr.port().to_string());
    run_program(cmd, install_hint).await;
}

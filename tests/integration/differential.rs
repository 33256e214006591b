//! The statements of `tests/differential/*.sql` on a real PostgreSQL and on
//! Lookout, each file on a fresh database of each, compared by
//! `tests/differential/run.py`: equal answers, or a `0A000` from Lookout
//! where the file marks a feature as unsupported.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::TestServer;

/// A PostgreSQL server of Debian's `postgresql` package in a temporary
/// directory, stopped when dropped.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

fn command(as_postgres: bool, program: &Path) -> Command {
    if as_postgres {
        // initdb refuses to run as root.
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn check(status: std::io::Result<std::process::Output>, what: &str) {
    let out = status.unwrap_or_else(|e| panic!("{what}: {e} (tests/run.sh installs postgresql)"));
    assert!(
        out.status.success(),
        "{what}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is not installed (tests/run.sh installs postgresql)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("no initdb under /usr/lib/postgresql");
        let dir = tempfile::tempdir().expect("tempdir");
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if as_postgres {
            check(
                Command::new("chown")
                    .args(["postgres"])
                    .arg(dir.path())
                    .output(),
                "chown",
            );
        }
        let data = dir.path().join("data");
        check(
            command(as_postgres, &bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
                .arg("--no-sync")
                .output(),
            "initdb",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c TimeZone=UTC",
            dir.path().display()
        );
        check(
            command(as_postgres, &bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-o", &options, "-w", "-l"])
                .arg(dir.path().join("log"))
                .arg("start")
                .output(),
            "pg_ctl start",
        );
        Postgres {
            bin,
            data,
            port,
            as_postgres,
            _dir: dir,
        }
    }

    fn create_database(&self, name: &str) {
        check(
            Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-X",
                    "-q",
                ])
                .args(["-p", &self.port.to_string()])
                .args(["-c", &format!("CREATE DATABASE {name}")])
                .output(),
            "CREATE DATABASE",
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = command(self.as_postgres, &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_agree_with_postgresql() {
    let postgres = Postgres::start();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/differential")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .sql files in {}", root.display());
    let mut failed = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let script = root.join("run.py");
        let (_lookout, run) =
            both_servers(&postgres, &format!("differential_{i}"), &script, Some(file)).await;
        failed.extend(run_script(run).await);
    }
    // Protocol exchanges drivers cannot send (Execute of a cursor's portal
    // with a row limit), byte for byte.
    postgres.create_database("differential_protocol");
    let lookout = TestServer::start().await;
    let mut run = Command::new("python3");
    run.arg(root.join("protocol.py"))
        .arg(format!(
            "127.0.0.1 {} postgres differential_protocol",
            postgres.port
        ))
        .arg(format!("127.0.0.1 {} lookout lookout", lookout.addr.port()));
    failed.extend(run_script(run).await);
    // Binary COPY as psycopg writes it: the rows stored, and the SQLSTATE
    // of each malformed stream.
    let script = root.join("binary_copy.py");
    let (_lookout, run) = both_servers(&postgres, "differential_binary_copy", &script, None).await;
    failed.extend(run_script(run).await);
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// `python3 <script> <postgres dsn> <lookout dsn> [<file>]` against a fresh
/// PostgreSQL database and a fresh Lookout server, which lives as long as
/// the caller keeps it.
async fn both_servers(
    postgres: &Postgres,
    database: &str,
    script: &Path,
    file: Option<&PathBuf>,
) -> (TestServer, Command) {
    postgres.create_database(database);
    let lookout = TestServer::start().await;
    let mut run = Command::new("python3");
    run.arg(script)
        .arg(format!(
            "host=127.0.0.1 port={} user=postgres dbname={database}",
            postgres.port
        ))
        .arg(format!(
            "host=127.0.0.1 port={} user=lookout dbname=lookout",
            lookout.addr.port()
        ));
    run.args(file);
    (lookout, run)
}

/// Runs a comparison script; its summary goes past the test harness's
/// capture, whatever the outcome. Its output if it failed.
async fn run_script(mut run: Command) -> Option<String> {
    let out = tokio::task::spawn_blocking(move || run.output())
        .await
        .expect("join")
        .expect("python3 tests/differential/*.py (pip install -r tests/requirements.txt)");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), &out.stdout);
    (!out.status.success()).then(|| {
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

//! Authentication, roles and TLS through the real binary and real clients:
//! psql (libpq) with SCRAM-SHA-256 over TLS, and psycopg.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::{free_port, spawn_server_with};

/// A password's verifier, as `lookout passwd` prints it.
pub(crate) fn verifier(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .arg("passwd")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("lookout passwd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("passwd output");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

/// What PostgreSQL 15 stores for the password "secret"
/// (`SET password_encryption = 'scram-sha-256'; CREATE ROLE ... PASSWORD`).
const POSTGRES_VERIFIER: &str = "SCRAM-SHA-256$4096:jgysaQoHwdUiRWbEII5zVw==$zO4qxPpRG/q0nqjOtaHMB97ocdfkx2co3hSglbUR6Pw=:p9oBEfxTkT2KkudjKSBjbhdWB1M3CA0CEcq8nWbn5hg=";

/// The salted-password verifier earlier versions stored, computed by Python.
fn legacy_verifier(password: &str) -> String {
    let script = format!(
        "import base64, hashlib\n\
         salt = bytes(range(16))\n\
         key = hashlib.pbkdf2_hmac('sha256', {password:?}.encode(), salt, 4096)\n\
         print('lookout-scram-sha-256$4096:' + base64.b64encode(salt).decode() + '$' + base64.b64encode(key).decode())\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

/// A self-signed certificate for localhost.
fn certificate(dir: &Path) {
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (apt-get install openssl)");
    assert!(status.success());
}

fn write_config(dir: &Path, users: &[(&str, &str, &str)], require_tls: bool) {
    let mut text = String::new();
    for (name, secret, role) in users {
        text.push_str(&format!(
            "[[auth.users]]\nname = \"{name}\"\npassword = \"{secret}\"\nrole = \"{role}\"\n\n"
        ));
    }
    text.push_str(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\nrequire = {require_tls}\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    ));
    std::fs::write(dir.join("lookout.toml"), text).expect("config");
}

/// Runs SQL with psql as `user`; returns (ok, stdout, stderr).
fn psql(port: u16, user: &str, password: &str, sslmode: &str, sql: &str) -> (bool, String, String) {
    let out = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={port} user={user} dbname=lookout sslmode={sslmode}"
        ))
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn ok(port: u16, user: &str, password: &str, sql: &str) -> String {
    let (ok, out, err) = psql(port, user, password, "require", sql);
    assert!(ok, "{user}: {sql}: {err}");
    out
}

/// The SQLSTATE psql reports for a failing statement (`\set VERBOSITY verbose`).
fn denied(port: u16, user: &str, password: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={port} user={user} dbname=lookout sslmode=require"
        ))
        .args(["-X", "-At", "-v", "VERBOSITY=verbose", "-c", sql])
        .env("PGPASSWORD", password)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("psql");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() || !err.is_empty(),
        "{user}: {sql} succeeded"
    );
    err
}

async fn wait_listening(port: u16) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not start on port {port}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_roles_tls_and_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path();
    certificate(conf);
    let (admin, viewer) = (verifier("admin pw"), verifier("viewer pw"));
    write_config(
        conf,
        &[("admin", &admin, "admin"), ("viewer", &viewer, "reader")],
        false,
    );
    let config = conf.join("lookout.toml").display().to_string();
    let data = conf.join("db");
    let port = free_port();
    let mut server = spawn_server_with(&data, port, &[("LOOKOUT_CONFIG", &config)]);
    wait_listening(port).await;

    let (port_, parquet) = (port, conf.join("t.parquet").display().to_string());
    tokio::task::spawn_blocking(move || {
        let port = port_;
        // The admin: TLS negotiated, SCRAM login, everything allowed.
        assert_eq!(
            ok(
                port,
                "admin",
                "admin pw",
                "SELECT current_user, current_setting('is_superuser')"
            ),
            "admin|on"
        );
        // Channel binding over TLS (SCRAM-SHA-256-PLUS, tls-server-end-point):
        // libpq's channel_binding=require logs in, and checks that the
        // server proved the binding.
        let (bound, out, err) = psql(
            port,
            "admin",
            "admin pw",
            "require channel_binding=require",
            "SELECT current_user",
        );
        assert!(bound && out == "admin", "{err}");
        let (bound, _, err) = psql(
            port,
            "admin",
            "wrong",
            "require channel_binding=require",
            "SELECT 1",
        );
        assert!(
            !bound && err.contains("password authentication failed"),
            "{err}"
        );
        // Without TLS there is no channel to bind: libpq refuses itself.
        let (plain, _, _) = psql(
            port,
            "admin",
            "admin pw",
            "disable channel_binding=require",
            "SELECT 1",
        );
        assert!(!plain);
        ok(
            port,
            "admin",
            "admin pw",
            "CREATE TABLE t (ts TIMESTAMPTZ NOT NULL, v DOUBLE PRECISION)",
        );
        ok(
            port,
            "admin",
            "admin pw",
            "INSERT INTO t VALUES ('2025-01-01 00:00:00+00', 1)",
        );
        ok(
            port,
            "admin",
            "admin pw",
            &format!("COPY t TO '{parquet}' WITH (FORMAT parquet)"),
        );
        ok(
            port,
            "admin",
            "admin pw",
            "CREATE ROLE ops LOGIN PASSWORD 'ops pw' IN ROLE writer",
        );
        let (created, _, err) = psql(
            port,
            "admin",
            "admin pw",
            "require",
            "CREATE ROLE ops PASSWORD 'x'",
        );
        assert!(!created && err.contains("already exists"), "{err}");
        // pg_roles (psql's \du) lists the file's users and the SQL-made ones.
        assert_eq!(
            ok(
                port,
                "admin",
                "admin pw",
                "SELECT rolname, rolsuper FROM pg_roles ORDER BY 1"
            ),
            "admin|t\nops|f\nviewer|f"
        );

        // Verifiers are PostgreSQL's stored keys; one is not a password.
        let stored = ok(
            port,
            "admin",
            "admin pw",
            "SELECT verifier FROM lookout.roles WHERE name = 'ops'",
        );
        let parts: Vec<&str> = stored.split(['$', ':']).collect();
        assert_eq!(parts.len(), 5, "{stored}");
        assert_eq!(&parts[..2], ["SCRAM-SHA-256", "4096"], "{stored}");
        assert!(!psql(port, "ops", &stored, "require", "SELECT 1").0);

        // A reader queries, and is refused anything else with 42501.
        assert_eq!(
            ok(port, "viewer", "viewer pw", "SELECT count(*) FROM t"),
            "1"
        );
        assert_eq!(ok(port, "viewer", "viewer pw", "SHOW is_superuser"), "off");
        ok(port, "viewer", "viewer pw", "SHOW ALERTS");
        for sql in [
            "INSERT INTO t VALUES (now(), 2)",
            "CREATE TABLE u (ts TIMESTAMPTZ NOT NULL)",
            "DROP TABLE t",
            "SELECT * FROM lookout.roles",
            "SELECT rolname, rolpassword FROM pg_catalog.pg_authid",
            "CREATE ROLE x PASSWORD 'x'",
            "CREATE ALERT a EVERY '1 minute' SEVERITY P1 WHEN value > 1 AS SELECT 1.0 AS value",
        ] {
            let err = denied(port, "viewer", "viewer pw", sql);
            assert!(err.contains("42501"), "{sql}: {err}");
        }

        // A writer made in SQL writes, but may not touch server files or roles.
        ok(
            port,
            "ops",
            "ops pw",
            "INSERT INTO t VALUES ('2025-01-01 01:00:00+00', 2)",
        );
        for sql in [
            format!("COPY t FROM '{parquet}' WITH (FORMAT parquet)"),
            "DROP ROLE viewer".to_string(),
            "SELECT verifier FROM lookout.roles".to_string(),
            // Lookout's own tables change only through their statements: a
            // planted rule would run with the engine's rights.
            "INSERT INTO lookout.alert_rules SELECT * FROM lookout.alert_rules".to_string(),
            "DELETE FROM lookout.alert_log".to_string(),
            "SET datafusion.catalog.default_schema = 'lookout'; DELETE FROM alert_silences"
                .to_string(),
        ] {
            let err = denied(port, "ops", "ops pw", &sql);
            assert!(err.contains("42501"), "{sql}: {err}");
        }

        // Permissions hold on the tables a plan really touches, however
        // they are named: the search path, a view, COPY's generated query.
        let via_search_path = "SET datafusion.catalog.default_schema = 'lookout'; ";
        for (user, password) in [("viewer", "viewer pw"), ("ops", "ops pw")] {
            for sql in [
                "SELECT name, verifier, role FROM roles",
                "SELECT count(*) FROM (SELECT * FROM roles) r",
                "INSERT INTO roles VALUES (now(), 'evil', 'x', 'admin', false, NULL, NULL)",
                "DELETE FROM roles",
            ] {
                let sql = format!("{via_search_path}{sql}");
                let err = denied(port, user, password, &sql);
                assert!(err.contains("42501"), "{user}: {sql}: {err}");
            }
            let err = denied(
                port,
                user,
                password,
                "WITH r AS (SELECT * FROM lookout.roles) SELECT * FROM r",
            );
            assert!(err.contains("42501"), "{user}: {err}");
            // A column list that tries to close its quote reads no other table.
            let (copied, out, err) = psql(
                port,
                user,
                password,
                "require",
                "COPY t (\"name\"\", verifier, role FROM lookout.roles --\") TO STDOUT",
            );
            assert!(
                !copied && !out.to_lowercase().contains("scram"),
                "{user}: {out} {err}"
            );
        }
        // A view reads with the rights of whoever queries it: the admin's
        // view over the roles table shows the reader and the writer
        // nothing, and a writer may not define one.
        let view = "CREATE VIEW who AS SELECT name, verifier FROM lookout.roles";
        let err = denied(port, "ops", "ops pw", view);
        assert!(err.contains("42501"), "{err}");
        ok(port, "admin", "admin pw", view);
        for (user, password) in [("viewer", "viewer pw"), ("ops", "ops pw")] {
            let err = denied(port, user, password, "SELECT * FROM who");
            assert!(err.contains("42501"), "{user}: {err}");
        }
        let err = denied(port, "viewer", "viewer pw", "CREATE VIEW v AS SELECT 1");
        assert!(err.contains("42501"), "a reader creates no view: {err}");
        ok(port, "admin", "admin pw", "DROP VIEW who");
        assert_eq!(
            ok(
                port,
                "admin",
                "admin pw",
                "SELECT string_agg(name, ',') FROM lookout.roles WHERE NOT dropped"
            ),
            "ops",
            "no role was added or removed"
        );
        // One that PostgreSQL made (for "secret") logs in with its password.
        ok(
            port,
            "admin",
            "admin pw",
            &format!("CREATE ROLE pgmade LOGIN PASSWORD '{POSTGRES_VERIFIER}'"),
        );
        assert_eq!(
            ok(port, "pgmade", "secret", "SELECT current_user"),
            "pgmade"
        );
        ok(port, "admin", "admin pw", "DROP ROLE pgmade");
        // pg_authid is admin-only, as in PostgreSQL, and holds no verifier.
        assert_eq!(
            ok(
                port,
                "admin",
                "admin pw",
                "SELECT count(*) FROM pg_catalog.pg_authid WHERE rolpassword IS NOT NULL"
            ),
            "0"
        );

        // Wrong passwords and unknown users get the same answer, naming
        // the user as PostgreSQL does.
        for (user, password) in [("viewer", "nope"), ("nobody", "nope")] {
            let (ok, _, err) = psql(port, user, password, "require", "SELECT 1");
            let expected = format!("password authentication failed for user \"{user}\"");
            assert!(!ok && err.contains(&expected), "{user}: {err}");
        }
        // Without TLS (allowed here) the login is the same.
        assert_eq!(
            psql(port, "viewer", "viewer pw", "disable", "SELECT 7").1,
            "7"
        );
    })
    .await
    .expect("clients");

    // psycopg over TLS with SCRAM, parameters and all.
    let script = format!(
        "import psycopg\n\
         c = psycopg.connect(host='127.0.0.1', port={port}, user='ops', password='ops pw', dbname='lookout', sslmode='require')\n\
         assert c.info.pgconn.ssl_in_use\n\
         print(c.execute('SELECT sum(v) FROM t WHERE ts >= %s', ('2025-01-01',)).fetchone()[0])\n\
         admin = psycopg.connect(host='127.0.0.1', port={port}, user='admin', password='admin pw', dbname='lookout', autocommit=True)\n\
         secret = admin.pgconn.encrypt_password(b'ops new pw', b'ops').decode()\n\
         assert secret.startswith('SCRAM-SHA-256$4096:'), secret\n\
         admin.execute(\"ALTER ROLE ops PASSWORD '\" + secret + \"'\")\n\
         c2 = psycopg.connect(host='127.0.0.1', port={port}, user='ops', password='ops new pw', dbname='lookout')\n\
         c2.execute('SELECT 1')\n\
         admin.execute(\"ALTER ROLE ops PASSWORD 'ops pw'\")\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3.0");

    // SIGHUP reloads the file's users: viewer is gone, late arrives.
    let late = verifier("late pw");
    write_config(
        conf,
        &[("admin", &admin, "admin"), ("late", &late, "reader")],
        false,
    );
    let status = Command::new("kill")
        .args(["-HUP", &server.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut reloaded = false;
    for _ in 0..100 {
        if psql(port, "late", "late pw", "require", "SELECT 1").0 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reloaded, "late could not log in after SIGHUP");
    assert!(!psql(port, "viewer", "viewer pw", "require", "SELECT 1").0);

    // A verifier in the salted-password form of earlier versions, as such
    // a version wrote it.
    let legacy = legacy_verifier("old pw");
    ok(
        port,
        "admin",
        "admin pw",
        &format!(
            "INSERT INTO lookout.roles (ts, name, verifier, role, dropped) VALUES (now(), 'old', '{legacy}', 'reader', false)"
        ),
    );
    let _ = server.kill();
    let _ = server.wait();

    // Roles made in SQL survive a restart; TLS can be required; old-form
    // verifiers are rewritten as stored keys at start and still log in.
    write_config(conf, &[("admin", &admin, "admin")], true);
    let mut server = spawn_server_with(&data, port, &[("LOOKOUT_CONFIG", &config)]);
    wait_listening(port).await;
    assert_eq!(ok(port, "ops", "ops pw", "SELECT count(*) FROM t"), "2");
    assert_eq!(ok(port, "old", "old pw", "SELECT current_user"), "old");
    assert_eq!(
        ok(
            port,
            "admin",
            "admin pw",
            "SELECT count(*) FILTER (WHERE verifier LIKE 'lookout-%'), \
             count(*) FILTER (WHERE name = 'old' AND verifier LIKE 'SCRAM-SHA-256$%') \
             FROM lookout.roles"
        ),
        "0|1"
    );
    let (plain, _, err) = psql(port, "ops", "ops pw", "disable", "SELECT 1");
    assert!(!plain && err.contains("TLS"), "{err}");
    ok(port, "admin", "admin pw", "DROP ROLE ops");
    assert!(!psql(port, "ops", "ops pw", "require", "SELECT 1").0);
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn refuses_a_public_address_without_authentication() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path().join("db"))
        .output()
        .expect("lookout");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without authentication"), "{err}");
}

/// A tokio-postgres connection as `user` (SCRAM over plain TCP), or the
/// SQLSTATE it was refused with.
pub(crate) async fn login(
    port: u16,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, String> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname("lookout");
    match config.connect(tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            Ok(client)
        }
        Err(e) => Err(e
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| format!("no code: {e}"))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_held_to_their_connection_and_statement_limits() {
    use crate::harness::{error_code, rows};
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path();
    let admin = verifier("admin pw");
    // A configured user may carry limits too.
    std::fs::write(
        conf.join("lookout.toml"),
        format!(
            "[[auth.users]]\nname = \"admin\"\npassword = \"{admin}\"\nrole = \"admin\"\n\
             connection_limit = 1\n\n\
             [[auth.users]]\nname = \"probe\"\npassword = \"{admin}\"\nrole = \"reader\"\n\
             connection_limit = 1\nstatement_timeout = \"2s\"\n"
        ),
    )
    .expect("config");
    let config = conf.join("lookout.toml").display().to_string();
    let data = conf.join("db");
    let port = free_port();
    let mut server = spawn_server_with(&data, port, &[("LOOKOUT_CONFIG", &config)]);
    wait_listening(port).await;

    let admin = login(port, "admin", "admin pw").await.expect("admin");
    // Admins are not held to a connection limit, as in PostgreSQL.
    let second_admin = login(port, "admin", "admin pw").await.expect("admin again");
    let probe = login(port, "probe", "admin pw").await.expect("probe");
    assert_eq!(
        login(port, "probe", "admin pw").await.err().as_deref(),
        Some("53300")
    );
    assert_eq!(
        rows(&probe, "SHOW statement_timeout").await,
        vec![vec![Some("2000".to_string())]]
    );
    drop((second_admin, probe));

    rows(
        &admin,
        "CREATE ROLE capped LOGIN PASSWORD 'pw' CONNECTION LIMIT 2",
    )
    .await;
    rows(&admin, "ALTER ROLE capped SET statement_timeout = '300ms'").await;
    let first = login(port, "capped", "pw").await.expect("first");
    let second = login(port, "capped", "pw").await.expect("second");
    assert_eq!(
        login(port, "capped", "pw").await.err().as_deref(),
        Some("53300")
    );
    // A connection that closes makes room.
    drop(second);
    let mut second = None;
    for _ in 0..50 {
        if let Ok(c) = login(port, "capped", "pw").await {
            second = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = second.expect("room after a connection closed");

    // The role's statement_timeout is the session's, and a ceiling.
    assert_eq!(
        rows(&first, "SHOW statement_timeout").await,
        vec![vec![Some("300".to_string())]]
    );
    assert_eq!(
        error_code(&first, "SET statement_timeout = '1s'").await,
        "42501"
    );
    assert_eq!(
        error_code(&first, "SET statement_timeout = 0").await,
        "42501"
    );
    rows(&first, "SET statement_timeout = 100").await;
    rows(&first, "RESET statement_timeout").await;
    assert_eq!(
        rows(&first, "SHOW statement_timeout").await,
        vec![vec![Some("300".to_string())]]
    );
    let long = "SELECT max(rn) FROM (SELECT row_number() OVER (ORDER BY random() * value) AS rn \
                FROM generate_series(1, 50000000)) t";
    let started = std::time::Instant::now();
    assert_eq!(error_code(&second, long).await, "57014");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A reader cannot lift its own limits.
    assert_eq!(
        error_code(&first, "ALTER ROLE capped CONNECTION LIMIT -1").await,
        "42501"
    );
    drop((first, second));

    // The limits are kept across a restart; -1 and RESET lift them.
    let _ = server.kill();
    let _ = server.wait();
    let mut server = spawn_server_with(&data, port, &[("LOOKOUT_CONFIG", &config)]);
    wait_listening(port).await;
    let held: Vec<_> = [
        login(port, "capped", "pw").await,
        login(port, "capped", "pw").await,
    ]
    .into_iter()
    .map(|c| c.expect("capped"))
    .collect();
    assert_eq!(
        login(port, "capped", "pw").await.err().as_deref(),
        Some("53300")
    );
    assert_eq!(
        rows(&held[0], "SHOW statement_timeout").await,
        vec![vec![Some("300".to_string())]]
    );
    let admin = login(port, "admin", "admin pw").await.expect("admin");
    rows(&admin, "ALTER ROLE capped CONNECTION LIMIT -1").await;
    rows(&admin, "ALTER ROLE capped RESET statement_timeout").await;
    let third = login(port, "capped", "pw").await.expect("no limit now");
    assert_eq!(
        rows(&third, "SHOW statement_timeout").await,
        vec![vec![Some("0".to_string())]]
    );
    let _ = server.kill();
    let _ = server.wait();
}

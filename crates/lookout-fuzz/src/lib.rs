//! The fuzz targets' bodies: what one input does to each parser that reads
//! what clients send. `fuzz/` (cargo fuzz, libFuzzer) runs them under
//! coverage guidance; the integration tests replay the kept corpora through
//! them on every CI run. An error is the expected answer to bad input; a
//! panic, an abort, a hang or unbounded memory is a bug.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use lookout_query::copy::{CopyDecoder, CopyFormat};
use lookout_query::{CopyKind, Lookout};

/// A COPY `FROM STDIN` in text format: the first byte picks the options
/// (delimiter, NULL marker) and where the data is cut into chunks, the rest
/// is the data.
pub fn copy_text(data: &[u8]) {
    copy(CopyKind::Text, data);
}

/// As [`copy_text`], in CSV format (header, quote and escape too).
pub fn copy_csv(data: &[u8]) {
    copy(CopyKind::Csv, data);
}

fn copy(kind: CopyKind, data: &[u8]) {
    let Some((&options, data)) = data.split_first() else {
        return;
    };
    let mut format = CopyFormat::new(kind);
    if options & 1 != 0 {
        format.delimiter = b'|';
    }
    if options & 2 != 0 {
        format.null = "NULL".into();
    }
    if kind == CopyKind::Csv {
        format.header = options & 4 != 0;
        if options & 8 != 0 {
            format.quote = b'\'';
            format.escape = b'\\';
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("model", DataType::Utf8, true),
        Field::new("latency_ms", DataType::Float64, true),
        Field::new("tokens", DataType::Int64, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("day", DataType::Date32, true),
        Field::new("score", DataType::Float32, true),
        Field::new("n", DataType::Int32, true),
    ]));
    let Ok(mut decoder) = CopyDecoder::new("fuzz", schema, format) else {
        return;
    };
    // Chunks as a client's CopyData messages may cut the stream anywhere.
    let chunk = usize::from(options >> 4) + 1;
    for part in data.chunks(chunk) {
        if decoder.push(part).is_err() {
            return;
        }
    }
    let _ = decoder.finish();
}

/// Every statement grammar of Lookout's own statements (alerts, review
/// queues, rollups, sampling, evaluators, roles) and the server's SCRAM exchange (the
/// first line as the client-first message, the rest as the client-final).
pub fn statement_grammars(data: &[u8]) {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let _ = lookout_alerts::grammar::parse(sql);
    lookout_review::fuzzing::review_statement(sql);
    lookout_rollups::fuzzing::rollup_statement(sql);
    lookout_sampling::fuzzing::sampling_statement(sql);
    lookout_server::fuzzing::role_statement_and_scram(sql);
    lookout_evaluators::fuzzing::evaluator_statement(sql);
}

/// An OTLP/HTTP trace export body (protobuf or JSON, or gzip of either)
/// through the decoders and the mapping of GenAI spans to rows.
pub fn otlp_traces(data: &[u8]) {
    lookout_http::fuzzing::otlp_export(data);
}

/// A database with one table, shared by every input of a process.
struct Shared {
    runtime: tokio::runtime::Runtime,
    lookout: Lookout,
    /// The server on loopback, for [`pg_messages`].
    server: OnceLock<SocketAddr>,
    _dir: tempfile::TempDir,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_stack_size(64 << 20)
            .enable_all()
            .build()
            .expect("runtime");
        let lookout = runtime.block_on(async {
            let lookout = Lookout::open(dir.path()).await.expect("open");
            lookout_rollups::install(&lookout).await.expect("rollups");
            lookout_sampling::install(&lookout, lookout_sampling::SamplingOptions::default())
                .await
                .expect("sampling");
            lookout
                .sql(
                    "CREATE TABLE events (ts TIMESTAMPTZ NOT NULL, model TEXT, \
                     latency_ms DOUBLE PRECISION, status TEXT, feedback INT, request_id TEXT)",
                )
                .await
                .expect("create");
            lookout
                .sql(
                    "INSERT INTO events VALUES ('2025-01-01 00:00:00+00', 'm', 1.5, 'ok', 1, 'r1')",
                )
                .await
                .expect("insert");
            lookout
        });
        Shared {
            runtime,
            lookout,
            server: OnceLock::new(),
            _dir: dir,
        }
    })
}

/// The SQL front end: parsing, the PostgreSQL compatibility rewrites and
/// planning (`Session::prepare`), without running the plan.
pub fn sql_front_end(data: &[u8]) {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let shared = shared();
    let session = shared.lookout.session();
    let planned = shared.runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), session.prepare(sql)).await
    });
    assert!(planned.is_ok(), "planning took over 20 s: {sql:?}");
}

/// The Postgres wire protocol through the real server: a startup message,
/// then `data` as whatever the client sends next, then end of input. The
/// server must answer and close the connection (a panic in the protocol
/// decoder is caught at the connection), never hang or die.
pub fn pg_messages(data: &[u8]) {
    let shared = shared();
    let addr = *shared.server.get_or_init(|| {
        let listener = shared
            .runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("listen");
        let addr = listener.local_addr().expect("address");
        let lookout = shared.lookout.clone();
        shared.runtime.spawn(lookout_server::serve(
            lookout,
            listener,
            lookout_server::ServerOptions::default(),
            std::future::pending(),
        ));
        addr
    });
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let _ = stream.write_all(&startup_message());
    let _ = stream.write_all(data);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    if let Err(e) = stream.read_to_end(&mut answer) {
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the server neither answered nor closed within 30 s"
        );
    }
}

/// A protocol 3.0 startup message for user and database `lookout`.
fn startup_message() -> Vec<u8> {
    let mut body = 196_608_i32.to_be_bytes().to_vec();
    for (k, v) in [("user", "lookout"), ("database", "lookout")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    message.extend(body);
    message
}

//! The `lookout` command: server, SQL shell one-shots, Parquet import, demo.

mod bench_alerts;
mod config;
mod demo;
mod location;
mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use lookout_query::{Lookout, Session};
use lookout_server::ServerOptions;

use crate::config::FileConfig;

/// Lookout: an embedded time-series database for monitoring ML and LLM
/// models, queried with SQL over the Postgres protocol.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    long_about = None,
    after_help = "Storage tuning (flush, horizon, compaction, GC), COPY directories and the shutdown grace \
                  are set in the TOML file given with --config; see docs/operations.md.\n\
                  Logs: LOOKOUT_LOG sets the filter (e.g. LOOKOUT_LOG=debug)."
)]
struct Cli {
    /// Configuration file (TOML); flags and environment variables override it.
    #[arg(long, short = 'c', global = true, env = "LOOKOUT_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (default ./lookout-data), or s3://bucket/prefix.
    #[arg(long, global = true, env = "LOOKOUT_DATA")]
    data: Option<PathBuf>,
    /// The local directory (write-ahead log, lock file) of a database on
    /// S3 (default ./lookout-wal).
    #[arg(long, global = true, env = "LOOKOUT_WAL_DIR")]
    wal_dir: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true, env = "LOOKOUT_LOG_FORMAT")]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Postgres protocol.
    Serve(ServeArgs),
    /// Generate 7 days of demo events ending now (with injected incidents), then serve.
    Demo {
        #[command(flatten)]
        serve: ServeArgs,
        /// Rows of demo events to generate.
        #[arg(long, default_value_t = 500_000)]
        rows: usize,
    },
    /// Run SQL statements and print the result of the last one.
    Sql {
        /// The SQL text (or use --file).
        #[arg(required_unless_present = "file")]
        sql: Option<String>,
        /// Read the SQL from a file.
        #[arg(long, short = 'f', conflicts_with = "sql")]
        file: Option<PathBuf>,
        /// Run the SQL this many more times after a warm-up run and print the
        /// median wall time (ms) of those runs to stderr, like psql's \timing.
        #[arg(long, default_value_t = 0)]
        repeat: usize,
        /// Create the data directory if it does not exist.
        #[arg(long)]
        create: bool,
    },
    /// Time the evaluation of many alert rules over the bench events (see benches/alerts.sh).
    #[command(hide = true)]
    BenchAlerts {
        /// Number of rules.
        #[arg(long, default_value_t = 1000)]
        rules: usize,
        /// The instant evaluated.
        #[arg(long, default_value = "2025-01-08 00:00:00+00")]
        at: String,
        /// Rules evaluated at once.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
    },
    /// Read a password on standard input and print its verifier, for the
    /// `[[auth.users]]` entries of the configuration file.
    Passwd,
    /// Import Parquet files into a table (created from the first file's schema if missing).
    Import {
        /// Target table.
        table: String,
        /// Parquet files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Create the data directory if it does not exist.
        #[arg(long)]
        create: bool,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:5433).
    #[arg(long, env = "LOOKOUT_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address of the HTTP listener (/metrics, OTLP /v1/traces), e.g.
    /// 127.0.0.1:9464; default: none, or `[http] listen` in the file.
    #[arg(long, env = "LOOKOUT_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// Serve a read-only replica of a store another server writes: follow
    /// its commits, answer every query, refuse writes (SQLSTATE 25006).
    #[arg(long, env = "LOOKOUT_READ_ONLY")]
    read_only: bool,
}

fn init_logs(format: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOOKOUT_LOG")
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => bail!("unknown log format {other:?} (text or json)"),
    }
    Ok(())
}

/// Stack of every runtime thread. Statements are planned and expressions
/// evaluated by recursive tree walks; with statements bounded to
/// `MAX_OPERATORS` operators, this leaves room to spare even in debug builds
/// (pages are only committed as they are touched).
const THREAD_STACK: usize = 64 << 20;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK)
        .build()?;
    // Not on the main thread, whose stack is smaller.
    std::thread::Builder::new()
        .name("lookout-main".into())
        .stack_size(THREAD_STACK)
        .spawn(move || runtime.block_on(run()))?
        .join()
        .map_err(|_| anyhow::anyhow!("the main thread panicked"))?
        .map_err(|e| {
            // One line, each cause once (anyhow's report repeats causes
            // that storage errors wrap).
            eprintln!("Error: {}", report::chain(&e));
            if let Some(hint) = report::hint(&e) {
                eprintln!("Hint: {hint}");
            }
            std::process::exit(1)
        })
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let file = FileConfig::load(cli.config.as_deref())?;
    init_logs(
        cli.log_format
            .as_deref()
            .or(file.log_format.as_deref())
            .unwrap_or("text"),
    )?;
    let data = location::DataLocation::resolve(
        cli.data.as_deref().or(file.data.as_deref()),
        cli.wal_dir.as_deref().or(file.storage.wal_dir.as_deref()),
    )?;
    match cli.command {
        Command::Serve(args) => serve(&file, cli.config.as_deref(), &data, &args, None)
            .await
            .map_err(|e| report::explain_disk_full(e, &data.local)),
        Command::Demo { serve: args, rows } => {
            if args.read_only {
                bail!("demo writes its events; it cannot run as a read-only replica");
            }
            serve(&file, cli.config.as_deref(), &data, &args, Some(rows))
                .await
                .map_err(|e| report::explain_disk_full(e, &data.local))
        }
        Command::Passwd => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password")?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                bail!("empty password (give it on standard input)");
            }
            println!("{}", lookout_server::Verifier::from_password(password));
            Ok(())
        }
        Command::Sql {
            sql,
            file: sql_file,
            repeat,
            create,
        } => {
            let sql = match (sql, sql_file) {
                (Some(s), _) => s,
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))?,
                (None, None) => bail!("give the SQL text or --file"),
            };
            let db = open_existing(&file, &data, create).await?;
            let alerts =
                lookout_alerts::AlertEngine::start(db.clone(), file.alert_options(false)?).await?;
            let evaluators = lookout_evaluators::Evaluators::start(
                db.clone(),
                lookout_evaluators::EvaluatorOptions { interval: None },
            )
            .await?;
            let result = run_sql(&db, &sql, repeat).await;
            evaluators.shutdown().await;
            alerts.shutdown().await;
            db.close().await?;
            result
        }
        Command::BenchAlerts {
            rules,
            at,
            concurrency,
        } => {
            let db = open_existing(&file, &data, false).await?;
            let result = bench_alerts::run(&db, rules, &at, concurrency).await;
            db.close().await?;
            result
        }
        Command::Import {
            table,
            files,
            create,
        } => {
            let db = open_existing(&file, &data, create).await?;
            let result = import(&db, &table, &files).await;
            db.close().await?;
            result
        }
    }
}

async fn open(
    file: &FileConfig,
    data: &location::DataLocation,
    loopback: bool,
    read_only: bool,
) -> anyhow::Result<Lookout> {
    let mut options = file.lookout_options(loopback)?;
    options.storage.object_store = data.object_store(&file.s3)?;
    options.storage.read_only = read_only;
    let mut sampling = file.sampling_options()?;
    if !options.storage.background || read_only {
        sampling.interval = None;
    }
    match Lookout::open_with(&data.local, options).await {
        Ok(db) => {
            install_features(&db, sampling)
                .await
                .context("installing rollups and sampling")?;
            Ok(db)
        }
        Err(lookout_query::QueryError::Storage(lookout_storage::StorageError::Locked {
            holder,
            ..
        })) => Err(report::locked(data, &holder)),
        Err(e) => Err(anyhow::Error::new(e)).with_context(|| format!("opening {data}")),
    }
}

/// Installs the extensions that take part in storage and the write path, so
/// every command that opens a data directory writes rollups and held rows
/// (and reads external Delta tables) as the server does.
async fn install_features(
    db: &Lookout,
    sampling: lookout_sampling::SamplingOptions,
) -> lookout_query::Result<()> {
    lookout_rollups::install(db).await?;
    lookout_delta::install(db);
    lookout_sampling::install(db, sampling).await
}

/// Opens the data directory of a one-shot command (`sql`, `import`): one
/// that does not exist is refused unless `create` is given, so a mistyped
/// path does not answer from a new, empty database.
async fn open_existing(
    file: &FileConfig,
    data: &location::DataLocation,
    create: bool,
) -> anyhow::Result<Lookout> {
    if !create && !data.exists() {
        bail!(
            "data directory {data} does not exist; give the directory a server uses \
             (--data or LOOKOUT_DATA), or add --create to make a new database there"
        );
    }
    open(file, data, true, false).await
}

async fn run_sql(db: &Lookout, sql: &str, repeat: usize) -> anyhow::Result<()> {
    let mut session: Session = db.session();
    let mut batches = session.query(sql).await?;
    if repeat > 0 {
        let mut times = Vec::with_capacity(repeat);
        for _ in 0..repeat {
            let started = std::time::Instant::now();
            batches = session.query(sql).await?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        let shown: Vec<String> = times.iter().map(|t| format!("{t:.1}")).collect();
        eprintln!(
            "time: median {:.1} ms over {repeat} runs ({})",
            sorted[repeat / 2],
            shown.join(", ")
        );
    }
    if !batches.is_empty() {
        println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    }
    Ok(())
}

async fn import(db: &Lookout, table: &str, files: &[PathBuf]) -> anyhow::Result<()> {
    let total: u64 = files
        .iter()
        .filter_map(|f| {
            let file = std::fs::File::open(f).ok()?;
            let reader = parquet::file::reader::SerializedFileReader::new(file).ok()?;
            use parquet::file::reader::FileReader;
            Some(reader.metadata().file_metadata().num_rows() as u64)
        })
        .sum();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {human_pos}/{human_len} rows ({per_sec})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let progress_bar = bar.clone();
    let started = std::time::Instant::now();
    let rows = db
        .import_parquet(
            table,
            files,
            Some(Arc::new(move |n| progress_bar.set_position(n))),
        )
        .await?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "imported {rows} rows into {table} in {secs:.1} s ({:.0} rows/s)",
        rows as f64 / secs.max(1e-9)
    );
    Ok(())
}

async fn serve(
    file: &FileConfig,
    config_path: Option<&std::path::Path>,
    data: &location::DataLocation,
    args: &ServeArgs,
    demo_rows: Option<usize>,
) -> anyhow::Result<()> {
    let listen: SocketAddr = match (args.listen, &file.listen) {
        (Some(l), _) => l,
        (None, Some(l)) => l.parse().with_context(|| format!("listen address {l:?}"))?,
        (None, None) => "127.0.0.1:5433".parse()?,
    };
    let loopback = listen.ip().is_loopback();
    if !loopback && !file.auth_enabled() {
        bail!(
            "refusing to listen on {listen} without authentication: anyone who can reach it could read and change everything. \
             Listen on loopback (127.0.0.1 or ::1), or list users under [[auth.users]] in the configuration file (see docs/operations.md)"
        );
    }
    let mut options = ServerOptions::default();
    options.authentication.enabled = file.auth_enabled();
    options.authentication.users.set_configured(file.users()?);
    if let Some(tls) = &file.tls {
        options.tls = Some(
            lookout_server::tls_acceptor(&tls.cert, &tls.key)
                .context("loading the TLS certificate")?,
        );
        options.authentication.require_tls = tls.require;
        options.authentication.tls_server_end_point =
            lookout_server::tls_server_end_point(&tls.cert)
                .context("loading the TLS certificate")?
                .map(Into::into);
    }
    if let Some(path) = config_path {
        reload_users_on_sighup(
            path.to_path_buf(),
            Arc::clone(&options.authentication.users),
        );
    }
    let read_only = args.read_only;
    let db = open(file, data, loopback, read_only).await?;
    if let Some(rows) = demo_rows {
        demo::load(&db, rows).await?;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let http = start_http(file, args, &db).await?;
    if let Err(e) = db.storage().note_holder(&format!("serving {listen}")) {
        tracing::warn!("cannot note the address in the lock file: {e}");
    }
    if let Some(grace) = file.shutdown_grace()? {
        options.shutdown_grace = grace;
    }
    if read_only {
        return serve_replica(db, listener, options, http, file).await;
    }
    let alerts = lookout_alerts::AlertEngine::start(db.clone(), file.alert_options(true)?)
        .await
        .context("starting the alert engine")?;
    let review = lookout_review::ReviewQueues::start(db.clone())
        .await
        .context("starting the review queues")?;
    let evaluators = lookout_evaluators::Evaluators::start(db.clone(), file.evaluator_options()?)
        .await
        .context("starting the evaluators")?;
    // Other engines read the tables through their Delta logs, kept in
    // step with each manifest commit within about a second.
    let delta = if file.storage.delta_log.unwrap_or(true) {
        lookout_delta::publish::spawn(db.storage().clone(), db.metrics(), Duration::from_secs(1))
    } else {
        None
    };
    if demo_rows.is_some() {
        demo::create_alerts(&db).await?;
        demo::create_review_queue(&db).await?;
    }
    tracing::info!(%listen, data = %data, auth = options.authentication.enabled, tls = options.tls.is_some(), "Lookout is ready: psql -h {} -p {} -U lookout lookout", listen.ip(), listen.port());
    lookout_server::serve(db.clone(), listener, options, shutdown_signal()).await?;
    if let Some((stop, task)) = http {
        let _ = stop.send(());
        let _ = task.await;
    }
    tracing::info!("shutting down: finishing alert evaluations, deliveries and judge calls");
    evaluators.shutdown().await;
    alerts.shutdown().await;
    review.shutdown().await;
    if let Some(task) = &delta {
        task.abort();
    }
    tracing::info!("shutting down: flushing buffered rows");
    db.close().await?;
    if delta.is_some() {
        publish_last_flush(&db).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The HTTP listener's stop signal and task.
type HttpTask = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
);

/// Serves a read-only replica: the alert and review statements answer
/// (back-tests and listings read; changes are refused with 25006), but
/// nothing is scheduled, evaluated, sampled or published here: the
/// writer does all of that.
async fn serve_replica(
    db: Lookout,
    listener: tokio::net::TcpListener,
    options: ServerOptions,
    http: Option<HttpTask>,
    file: &FileConfig,
) -> anyhow::Result<()> {
    // A store no server has written yet lacks the engines' tables; the
    // replica then serves without their statements.
    let alerts = lookout_alerts::AlertEngine::start(db.clone(), file.alert_options(false)?)
        .await
        .inspect_err(|e| tracing::warn!("alert statements unavailable on this replica: {e}"))
        .ok();
    let review = lookout_review::ReviewQueues::start(db.clone())
        .await
        .inspect_err(|e| tracing::warn!("review statements unavailable on this replica: {e}"))
        .ok();
    let listen = listener.local_addr()?;
    tracing::info!(%listen, "Lookout read-only replica is ready: psql -h {} -p {} -U lookout lookout", listen.ip(), listen.port());
    lookout_server::serve(db.clone(), listener, options, shutdown_signal()).await?;
    if let Some((stop, task)) = http {
        let _ = stop.send(());
        let _ = task.await;
    }
    if let Some(alerts) = alerts {
        alerts.shutdown().await;
    }
    if let Some(review) = review {
        review.shutdown().await;
    }
    db.close().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Brings the Delta logs in step with what the last flush wrote, so other
/// engines see every row of a server that stopped cleanly; bounded, since
/// the next start finishes whatever this leaves.
async fn publish_last_flush(db: &Lookout) {
    let Some(mut publisher) = lookout_delta::publish::Publisher::new(db.storage().clone()) else {
        return;
    };
    match tokio::time::timeout(Duration::from_secs(10), publisher.publish()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!("Delta logs not brought in step at shutdown: {e}"),
        Err(_) => tracing::warn!("Delta logs not brought in step at shutdown within 10 s"),
    }
}

/// Starts the HTTP listener when one is configured; returns what stops it.
async fn start_http(
    file: &FileConfig,
    args: &ServeArgs,
    db: &Lookout,
) -> anyhow::Result<Option<HttpTask>> {
    let listen: SocketAddr = match (args.http_listen, &file.http.listen) {
        (Some(l), _) => l,
        (None, Some(l)) => l
            .parse()
            .with_context(|| format!("http.listen address {l:?}"))?,
        (None, None) => return Ok(None),
    };
    let options = file.http_options()?;
    if !listen.ip().is_loopback() && options.bearer_token.is_none() {
        bail!(
            "refusing to serve HTTP on {listen} without a bearer token: anyone who can reach it could write spans and read the engine's metrics. \
             Listen on loopback, or set [http] bearer_token (or LOOKOUT_HTTP_TOKEN); see docs/operations.md"
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen} for HTTP"))?;
    tracing::info!(%listen, tls = options.tls.is_some(), token = options.bearer_token.is_some(), "HTTP listener ready: /metrics, OTLP /v1/traces");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let db = db.clone();
    let task = tokio::spawn(async move {
        let stopped = async {
            let _ = stopped.await;
        };
        if let Err(e) = lookout_http::serve(db, listener, options, stopped).await {
            tracing::error!("HTTP listener stopped: {e}");
        }
    });
    Ok(Some((stop, task)))
}

/// On SIGHUP, reads the configuration file again and replaces the users it
/// defines; a file that does not load leaves them as they were.
fn reload_users_on_sighup(path: PathBuf, users: Arc<lookout_server::Users>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; users reload only at restart");
            return;
        };
        while hup.recv().await.is_some() {
            match FileConfig::load(Some(&path)).and_then(|f| f.users()) {
                Ok(configured) => {
                    let n = configured.len();
                    users.set_configured(configured);
                    tracing::info!(users = n, "reloaded users from {}", path.display());
                }
                Err(e) => tracing::error!("not reloading users: {e:#}"),
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (path, users);
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

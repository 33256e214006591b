//! Configuration: defaults, then the TOML file, then environment variables
//! and command-line flags (clap merges the last two).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use lookout_query::{FileAccess, LookoutOptions, parse_duration};
use lookout_storage::StorageOptions;
use serde::Deserialize;

/// The `lookout.toml` file. Every key is optional.
/// The least `[storage] load_memory` a server starts with.
const MIN_LOAD_MEMORY: usize = 8 << 20;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) data: Option<PathBuf>,
    pub(crate) listen: Option<String>,
    pub(crate) log_format: Option<String>,
    #[serde(default)]
    pub(crate) storage: StorageSection,
    #[serde(default)]
    pub(crate) copy: CopySection,
    #[serde(default)]
    pub(crate) server: ServerSection,
    #[serde(default)]
    pub(crate) alerts: AlertsSection,
    #[serde(default)]
    pub(crate) cache: CacheSection,
    #[serde(default)]
    pub(crate) auth: AuthSection,
    pub(crate) tls: Option<TlsSection>,
    #[serde(default)]
    pub(crate) http: HttpSection,
    #[serde(default)]
    pub(crate) otlp: OtlpSection,
    #[serde(default)]
    pub(crate) s3: S3Section,
}

/// The S3 store of `data = "s3://bucket/prefix"`. Every key is optional;
/// the usual `AWS_*` environment variables are read first.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct S3Section {
    /// An S3-compatible endpoint, e.g. "http://127.0.0.1:9000" (MinIO).
    pub(crate) endpoint: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) access_key_id: Option<String>,
    /// Better given as AWS_SECRET_ACCESS_KEY than written in the file.
    pub(crate) secret_access_key: Option<String>,
    /// Allow an http:// endpoint (default false).
    pub(crate) allow_http: Option<bool>,
}

/// The HTTP listener: `/metrics` and OTLP trace ingest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpSection {
    /// Address to listen on, e.g. "127.0.0.1:9464"; unset = no HTTP listener.
    pub(crate) listen: Option<String>,
    /// Every request must carry `Authorization: Bearer <token>`
    /// (LOOKOUT_HTTP_TOKEN overrides it); required off loopback.
    pub(crate) bearer_token: Option<String>,
    /// Speak TLS with the `[tls]` certificate.
    #[serde(default)]
    pub(crate) tls: bool,
}

/// OTLP trace ingest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OtlpSection {
    /// The table GenAI calls go to (default genai_calls).
    pub(crate) table: Option<String>,
    /// Store prompts and completions (default false).
    #[serde(default)]
    pub(crate) capture_content: bool,
    /// The largest request body after decompression, e.g. "16 MiB".
    pub(crate) max_body: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthSection {
    /// Require a password (SCRAM-SHA-256); on by default when users are listed.
    pub(crate) enabled: Option<bool>,
    #[serde(default)]
    pub(crate) users: Vec<UserEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserEntry {
    pub(crate) name: String,
    /// A verifier from `lookout passwd` (never the password itself).
    pub(crate) password: String,
    /// reader, writer or admin.
    pub(crate) role: String,
    /// Connections the user may have open at once (admins are not held to it).
    #[serde(default)]
    pub(crate) connection_limit: Option<u32>,
    /// The longest any of the user's statements may run, e.g. "30s".
    #[serde(default)]
    pub(crate) statement_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsSection {
    /// PEM certificate chain.
    pub(crate) cert: PathBuf,
    /// PEM private key.
    pub(crate) key: PathBuf,
    /// Refuse clients that do not use TLS.
    #[serde(default)]
    pub(crate) require: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StorageSection {
    pub(crate) flush_bytes: Option<usize>,
    pub(crate) flush_age: Option<String>,
    pub(crate) future_horizon: Option<String>,
    pub(crate) gc_grace: Option<String>,
    pub(crate) compaction_min_files: Option<usize>,
    pub(crate) target_file_rows: Option<usize>,
    /// Encoded bytes a bulk load holds in unfinished files, e.g. "256 MiB".
    pub(crate) load_memory: Option<String>,
    pub(crate) maintenance_interval: Option<String>,
    /// Keeps a Delta Lake log beside each table so other engines read it
    /// (default on; see docs/storage.md).
    pub(crate) delta_log: Option<bool>,
    /// The local directory of a database on S3: its WAL and lock file.
    pub(crate) wal_dir: Option<PathBuf>,
    /// How often a read-only replica looks for the writer's commits.
    pub(crate) follow_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CopySection {
    /// Directories server-side COPY may read and write; unset = anywhere
    /// (only allowed while listening on loopback).
    pub(crate) allowed_dirs: Option<Vec<PathBuf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertsSection {
    /// Rules evaluated at once.
    pub(crate) concurrency: Option<usize>,
    /// Period of the P2 digest, e.g. "7 days".
    pub(crate) digest_every: Option<String>,
    /// Retention of the alert log, e.g. "90 days" (set when the log is created).
    pub(crate) history_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CacheSection {
    /// Decoded table columns kept in memory between queries, e.g. "4 GiB";
    /// "0" turns the cache off (default: a quarter of the machine's memory).
    pub(crate) memory: Option<String>,
    /// Plans of recent queries each session keeps (default 64; 0 = none).
    pub(crate) plans: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerSection {
    pub(crate) shutdown_grace: Option<String>,
    /// How often held rows of sampled tables are decided.
    pub(crate) sampling_interval: Option<String>,
    /// How often evaluators look for new rows to judge.
    pub(crate) evaluator_interval: Option<String>,
    pub(crate) query_threads: Option<usize>,
    /// Memory budget of running queries, e.g. "4 GiB" (default: half the machine's).
    pub(crate) query_memory: Option<String>,
}

/// A size such as `512 MiB`, `4GB` or `1048576` (bytes).
fn parse_bytes(text: &str) -> anyhow::Result<usize> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: usize = number
        .parse()
        .map_err(|_| anyhow::anyhow!("{text:?} is not a size (e.g. \"4 GiB\")"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "kib" | "k" => 1 << 10,
        "mb" | "mib" | "m" => 1 << 20,
        "gb" | "gib" | "g" => 1 << 30,
        "tb" | "tib" | "t" => 1 << 40,
        other => anyhow::bail!("unknown unit {other:?} in {text:?} (B, KiB, MiB, GiB, TiB)"),
    };
    n.checked_mul(scale)
        .filter(|b| *b > 0)
        .ok_or_else(|| anyhow::anyhow!("{text:?} is not a usable size"))
}

impl FileConfig {
    pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<FileConfig> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// Database options; `loopback` says whether the server only listens on loopback.
    pub(crate) fn lookout_options(&self, loopback: bool) -> anyhow::Result<LookoutOptions> {
        let mut storage = StorageOptions::default();
        let s = &self.storage;
        let dur = |v: &Option<String>, key: &str| -> anyhow::Result<Option<Duration>> {
            v.as_deref()
                .map(|t| {
                    parse_duration(t)
                        .map(|us| Duration::from_micros(us as u64))
                        .map_err(|e| anyhow::anyhow!("storage.{key}: {e}"))
                })
                .transpose()
        };
        if let Some(v) = s.flush_bytes {
            storage.flush_bytes = v;
        }
        if let Some(v) = dur(&s.flush_age, "flush_age")? {
            storage.flush_age = v;
        }
        if let Some(v) = dur(&s.future_horizon, "future_horizon")? {
            storage.future_horizon = v;
        }
        if let Some(v) = dur(&s.gc_grace, "gc_grace")? {
            storage.gc_grace = v;
        }
        if let Some(v) = s.compaction_min_files {
            storage.compaction_min_files = v;
        }
        if let Some(v) = s.target_file_rows {
            storage.target_file_rows = v;
        }
        if let Some(m) = &s.load_memory {
            let bytes = parse_bytes(m).map_err(|e| anyhow::anyhow!("storage.load_memory: {e}"))?;
            // Below this, a load finishes a file every few thousand rows.
            anyhow::ensure!(
                bytes >= MIN_LOAD_MEMORY,
                "storage.load_memory: {m} is below the least a bulk load works with (8 MiB)"
            );
            storage.load_open_bytes = bytes;
        }
        if let Some(v) = dur(&s.maintenance_interval, "maintenance_interval")? {
            storage.maintenance_interval = v;
        }
        if let Some(v) = dur(&s.follow_interval, "follow_interval")? {
            storage.follow_interval = v.max(Duration::from_millis(10));
        }
        let file_access = match &self.copy.allowed_dirs {
            Some(dirs) => FileAccess::Only(dirs.clone()),
            None if loopback => FileAccess::Anywhere,
            None => FileAccess::Nowhere,
        };
        let mut options = LookoutOptions {
            storage,
            file_access,
            query_threads: self.server.query_threads.unwrap_or(0),
            plan_cache: self
                .cache
                .plans
                .unwrap_or(lookout_query::DEFAULT_PLAN_CACHE),
            ..LookoutOptions::default()
        };
        if let Some(m) = &self.server.query_memory {
            options.query_memory =
                parse_bytes(m).map_err(|e| anyhow::anyhow!("server.query_memory: {e}"))?;
        }
        if let Some(m) = &self.cache.memory {
            options.cache_memory = Some(match m.trim() {
                "0" | "off" => 0,
                size => parse_bytes(size).map_err(|e| anyhow::anyhow!("cache.memory: {e}"))?,
            });
        }
        Ok(options)
    }

    /// How sampled tables' held rows are decided in the background.
    pub(crate) fn sampling_options(&self) -> anyhow::Result<lookout_sampling::SamplingOptions> {
        let mut options = lookout_sampling::SamplingOptions::default();
        if let Some(t) = &self.server.sampling_interval {
            let us =
                parse_duration(t).map_err(|e| anyhow::anyhow!("server.sampling_interval: {e}"))?;
            options.interval = Some(Duration::from_micros(us.max(1_000) as u64));
        }
        Ok(options)
    }

    /// How the evaluators run in the background.
    pub(crate) fn evaluator_options(&self) -> anyhow::Result<lookout_evaluators::EvaluatorOptions> {
        let mut options = lookout_evaluators::EvaluatorOptions::default();
        if let Some(t) = &self.server.evaluator_interval {
            let us =
                parse_duration(t).map_err(|e| anyhow::anyhow!("server.evaluator_interval: {e}"))?;
            options.interval = Some(Duration::from_micros(us.max(10_000) as u64));
        }
        Ok(options)
    }

    /// Whether clients must log in.
    pub(crate) fn auth_enabled(&self) -> bool {
        self.auth.enabled.unwrap_or(!self.auth.users.is_empty())
    }

    /// The users the file defines, by name.
    pub(crate) fn users(
        &self,
    ) -> anyhow::Result<std::collections::HashMap<String, lookout_server::User>> {
        let mut users = std::collections::HashMap::new();
        for u in &self.auth.users {
            let verifier = lookout_server::Verifier::parse(&u.password)
                .map_err(|e| anyhow::anyhow!("auth.users {:?}: {e}", u.name))?;
            if lookout_server::Verifier::is_legacy(&u.password) {
                tracing::warn!(
                    user = u.name,
                    "auth.users: this password verifier holds the salted password, which logs in when stolen; replace it with the output of `lookout passwd`"
                );
            }
            let access = lookout_query::Access::from_role_name(&u.role).ok_or_else(|| {
                anyhow::anyhow!(
                    "auth.users {:?}: role {:?} (reader, writer or admin)",
                    u.name,
                    u.role
                )
            })?;
            let statement_timeout_ms = match &u.statement_timeout {
                None => None,
                Some(t) => lookout_query::parse_statement_timeout(t)
                    .map_err(|e| {
                        anyhow::anyhow!("auth.users {:?}: statement_timeout: {e}", u.name)
                    })?
                    .map(|d| d.as_millis() as u64),
            };
            let user = lookout_server::User {
                verifier,
                access,
                limits: lookout_server::RoleLimits {
                    connections: u.connection_limit,
                    statement_timeout_ms,
                },
            };
            if users.insert(u.name.clone(), user).is_some() {
                anyhow::bail!("auth.users: {:?} is listed twice", u.name);
            }
        }
        Ok(users)
    }

    /// The HTTP listener's options (TLS from the `[tls]` certificate when asked).
    pub(crate) fn http_options(&self) -> anyhow::Result<lookout_http::HttpOptions> {
        let mut options = lookout_http::HttpOptions {
            bearer_token: std::env::var("LOOKOUT_HTTP_TOKEN")
                .ok()
                .or_else(|| self.http.bearer_token.clone())
                .filter(|t| !t.is_empty()),
            ..Default::default()
        };
        if self.http.tls {
            let tls = self
                .tls
                .as_ref()
                .context("http.tls needs the [tls] section's certificate and key")?;
            options.tls = Some(
                lookout_server::tls_acceptor(&tls.cert, &tls.key)
                    .context("loading the TLS certificate for HTTP")?,
            );
        }
        if let Some(table) = &self.otlp.table {
            options.otlp.table = table.clone();
        }
        options.otlp.capture_content = self.otlp.capture_content;
        if let Some(size) = &self.otlp.max_body {
            options.otlp.max_body_bytes =
                parse_bytes(size).map_err(|e| anyhow::anyhow!("otlp.max_body: {e}"))?;
        }
        Ok(options)
    }

    pub(crate) fn shutdown_grace(&self) -> anyhow::Result<Option<Duration>> {
        self.server
            .shutdown_grace
            .as_deref()
            .map(|t| {
                parse_duration(t)
                    .map(|us| Duration::from_micros(us as u64))
                    .map_err(|e| anyhow::anyhow!("server.shutdown_grace: {e}"))
            })
            .transpose()
    }

    pub(crate) fn alert_options(
        &self,
        schedule: bool,
    ) -> anyhow::Result<lookout_alerts::AlertOptions> {
        let mut options = lookout_alerts::AlertOptions {
            schedule,
            crash_after_delivery: std::env::var("LOOKOUT_FAILPOINT").as_deref()
                == Ok("crash-after-delivery"),
            ..Default::default()
        };
        if let Some(c) = self.alerts.concurrency {
            options.concurrency = c.max(1);
        }
        if let Some(d) = &self.alerts.digest_every {
            options.digest_every =
                parse_duration(d).map_err(|e| anyhow::anyhow!("alerts.digest_every: {e}"))?;
        }
        if let Some(t) = &self.alerts.history_ttl {
            options.history_ttl =
                parse_duration(t).map_err(|e| anyhow::anyhow!("alerts.history_ttl: {e}"))?;
        }
        Ok(options)
    }
}

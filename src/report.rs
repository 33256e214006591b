//! How the binary reports an error that stops it: each cause once, and for
//! a full disk, where and how much room is needed.

use std::path::Path;

/// Room asked for beyond the write-ahead log: a catalog version, a Parquet
/// file being flushed, the alert and review tables' first writes.
const HEADROOM: u64 = 64 << 20;

/// The error, its causes joined by ": ", leaving out a cause whose text the
/// one before it already says (storage errors wrap the same message twice).
pub(crate) fn chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut last = String::new();
    for cause in err.chain() {
        // A SQL error's text already says what its sources say, reworded.
        let sql_error = cause.is::<lookout_query::QueryError>();
        let text = cause.to_string();
        if text.is_empty() || last.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        if sql_error {
            break;
        }
        last = text;
    }
    out
}

/// The error for a data directory another process holds: which process,
/// and, when it is a server, how to connect to it instead.
pub(crate) fn locked(data: &dyn std::fmt::Display, holder: &str) -> anyhow::Error {
    let serving = holder
        .split(", ")
        .find_map(|part| part.strip_prefix("serving "))
        .and_then(|addr| addr.parse::<std::net::SocketAddr>().ok());
    let advice = match serving {
        Some(addr) => format!(
            "a server owns it: connect to it instead, e.g. psql -h {} -p {} -U lookout lookout",
            addr.ip(),
            addr.port()
        ),
        None => "wait for that process to finish, or stop it".to_string(),
    };
    anyhow::anyhow!(
        "data directory {data} is in use by another Lookout process ({holder}); {advice}"
    )
}

/// The hint of the first SQL error among the causes of `err`.
pub(crate) fn hint(err: &anyhow::Error) -> Option<String> {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<lookout_query::QueryError>())
        .and_then(lookout_query::QueryError::hint)
}

/// Whether a cause of `err` is the operating system saying the disk is full.
fn is_disk_full(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| {
            io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28)
        })
    })
}

/// The size of the files under `dir` (0 when it cannot be read).
fn size_of(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => size_of(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Replaces a disk-full error with one that names the data directory, the
/// free space and the space needed; other errors pass unchanged.
pub(crate) fn explain_disk_full(err: anyhow::Error, data: &Path) -> anyhow::Error {
    if !is_disk_full(&err) {
        return err;
    }
    let free = rustix::fs::statvfs(data)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .ok();
    let wal = size_of(&data.join("wal"));
    let needed = wal + HEADROOM;
    let free = free.map_or_else(|| "unknown".to_string(), mib);
    anyhow::anyhow!(
        "the disk holding {} is full ({free} free). Lookout writes its catalog and \
         flushes the write-ahead log ({} in {}) as it starts and runs: free at least {} \
         there and start again. Acknowledged rows are safe in the write-ahead log. \
         (The error: {})",
        data.display(),
        mib(wal),
        data.join("wal").display(),
        mib(needed),
        chain(&err)
    )
}

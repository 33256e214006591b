//! OTLP/HTTP trace ingest (`POST /v1/traces`): the GenAI spans of each
//! export become rows of one table, durable before the answer.
//!
//! What the OTLP specification asks of a server, and where it is done:
//! protobuf (`application/x-protobuf`) and JSON (`application/json`)
//! bodies, answered in the same encoding; `Content-Encoding: gzip`; a
//! partial success naming the spans refused; 400 with a `Status` body for a
//! request that cannot be decoded, 415 for an unknown type or encoding, 413
//! past the size bound, 503 (retryable) when storage cannot take the rows.

mod spans;
mod table;

use std::io::Read as _;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;

use crate::AppState;

/// How exported spans are stored.
#[derive(Debug, Clone)]
pub struct OtlpOptions {
    /// The table GenAI calls are written to; created with the columns in
    /// `docs/otlp.md` when missing. An existing table gets the columns it has.
    pub table: String,
    /// Store prompts and completions (`gen_ai.input.messages`, content
    /// events and the like). Off by default: they are what users typed.
    pub capture_content: bool,
    /// The largest request body, after decompression.
    pub max_body_bytes: usize,
}

impl Default for OtlpOptions {
    fn default() -> Self {
        OtlpOptions {
            table: "genai_calls".into(),
            capture_content: false,
            max_body_bytes: 16 << 20,
        }
    }
}

/// The body encodings OTLP/HTTP defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// `google.rpc.Status`, the body of an OTLP error answer.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// gRPC's codes for the two kinds of failure an export has.
const INVALID_ARGUMENT: i32 = 3;
const UNAVAILABLE: i32 = 14;

fn error(encoding: Encoding, status: StatusCode, code: i32, message: String) -> Response {
    let body = match encoding {
        Encoding::Protobuf => RpcStatus { code, message }.encode_to_vec(),
        Encoding::Json => serde_json::json!({ "code": code, "message": message })
            .to_string()
            .into_bytes(),
    };
    (
        status,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}

/// `POST /v1/traces`.
pub(crate) async fn export_traces(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let encoding = match content_type.as_str() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        other => {
            return error(
                Encoding::Json,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                INVALID_ARGUMENT,
                format!(
                    "content type {other:?} is not OTLP/HTTP (application/x-protobuf or application/json)"
                ),
            );
        }
    };
    let limit = app.otlp.max_body_bytes;
    let decoded = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "identity") => Ok(body.to_vec()),
        Some("gzip") => gunzip(&body, limit),
        Some(other) => {
            return error(
                encoding,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                INVALID_ARGUMENT,
                format!("content encoding {other:?} is not supported (gzip or none)"),
            );
        }
    };
    let decoded = match decoded {
        Ok(d) if d.len() <= limit => d,
        Ok(_) => {
            return error(
                encoding,
                StatusCode::PAYLOAD_TOO_LARGE,
                INVALID_ARGUMENT,
                format!("the request is larger than {limit} bytes"),
            );
        }
        Err(response_status) => {
            let (status, message) = response_status;
            return error(encoding, status, INVALID_ARGUMENT, message);
        }
    };
    let request = match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(decoded.as_slice())
            .map_err(|e| format!("not an ExportTraceServiceRequest: {e}")),
        Encoding::Json => serde_json::from_slice::<ExportTraceServiceRequest>(&decoded)
            .map_err(|e| format!("not an ExportTraceServiceRequest in OTLP JSON: {e}")),
    };
    let request = match request {
        Ok(r) => r,
        Err(message) => {
            return error(encoding, StatusCode::BAD_REQUEST, INVALID_ARGUMENT, message);
        }
    };
    let extracted = spans::extract(&request, app.otlp.capture_content);
    let stored = extracted.rows.len();
    if let Err(e) = table::store(&app.db, &app.otlp.table, extracted.rows).await {
        let retryable = !e.sqlstate().starts_with("22") && !e.sqlstate().starts_with("23");
        tracing::warn!(table = app.otlp.table, error = %e, "OTLP spans not stored");
        app.metrics.spans(stored as u64, "failed");
        return if retryable {
            error(
                encoding,
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                format!("spans not stored: {e}"),
            )
        } else {
            error(
                encoding,
                StatusCode::BAD_REQUEST,
                INVALID_ARGUMENT,
                format!("spans not stored: {e}"),
            )
        };
    }
    app.metrics.spans(stored as u64, "stored");
    app.metrics.spans(extracted.rejected as u64, "rejected");
    let response = ExportTraceServiceResponse {
        partial_success: (extracted.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: extracted.rejected,
            error_message: extracted.first_error.unwrap_or_default(),
        }),
    };
    let body = match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&response).unwrap_or_else(|_| b"{}".to_vec()),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}

/// What the fuzz target runs on one input: both decoders, then the mapping.
pub(crate) fn fuzz_export(data: &[u8]) {
    if let Ok(request) = ExportTraceServiceRequest::decode(data) {
        let _ = spans::extract(&request, true);
    }
    if let Ok(request) = serde_json::from_slice::<ExportTraceServiceRequest>(data) {
        let _ = spans::extract(&request, true);
    }
    let _ = gunzip(data, 1 << 20);
}

/// Decompresses a gzip body, reading at most one byte past `limit` (a small
/// body that inflates without bound is cut off, not held in memory).
fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, (StatusCode, String)> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("not gzip: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Mutations of the kept corpus (bytes flipped, dropped, repeated,
    /// cut) through both decoders and the mapping: errors, never a panic.
    /// The fuzz target `otlp_traces` does this at length; this keeps every
    /// test run honest.
    #[test]
    fn mutated_exports_never_panic() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/otlp_traces");
        let seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .expect("corpus")
            .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
            .filter(|d| !d.is_empty())
            .collect();
        assert!(seeds.len() >= 4, "the corpus holds the seeds");
        let mut rng = rand::rngs::StdRng::seed_from_u64(20261205);
        for _ in 0..20_000 {
            let mut data = seeds[rng.random_range(0..seeds.len())].clone();
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..data.len().max(1));
                match rng.random_range(0..4) {
                    0 if !data.is_empty() => data[at] = rng.random(),
                    1 if !data.is_empty() => {
                        data.remove(at);
                    }
                    2 => data.insert(at.min(data.len()), rng.random()),
                    _ => data.truncate(at),
                }
            }
            fuzz_export(&data);
        }
    }
}

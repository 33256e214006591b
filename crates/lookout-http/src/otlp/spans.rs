//! From OTLP spans to rows: which spans are GenAI calls, and what of each
//! one goes in which column (the OpenTelemetry GenAI semantic conventions).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde_json::{Map, Value as Json};

/// One GenAI call, as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CallRow {
    /// The span's start, in microseconds since the epoch.
    pub(crate) ts: i64,
    pub(crate) end_ts: i64,
    pub(crate) duration_ms: f64,
    pub(crate) trace_id: String,
    pub(crate) span_id: String,
    pub(crate) parent_span_id: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) span_name: String,
    pub(crate) operation: Option<String>,
    pub(crate) provider: Option<String>,
    /// The model asked for (`gen_ai.request.model`), else the one that answered.
    pub(crate) model: Option<String>,
    pub(crate) response_model: Option<String>,
    pub(crate) response_id: Option<String>,
    pub(crate) input_tokens: Option<i64>,
    pub(crate) output_tokens: Option<i64>,
    pub(crate) finish_reasons: Option<String>,
    /// ok, error or unset (the span's status code).
    pub(crate) status: &'static str,
    pub(crate) error_type: Option<String>,
    /// The span's other attributes, as a JSON object.
    pub(crate) attributes: String,
    /// The resource's attributes, as a JSON object.
    pub(crate) resource: String,
    /// Prompts and completions (attributes and events), when captured.
    pub(crate) content: Option<String>,
}

/// What a request held: the rows to store and the spans refused.
#[derive(Debug, Default)]
pub(crate) struct Extracted {
    pub(crate) rows: Vec<CallRow>,
    /// GenAI spans that could not be stored, and why the first one was not.
    pub(crate) rejected: i64,
    pub(crate) first_error: Option<String>,
}

/// Attributes that carry prompt or completion text (older and current
/// conventions); kept only when content capture is on.
fn is_content_key(key: &str) -> bool {
    key.starts_with("gen_ai.prompt")
        || key.starts_with("gen_ai.completion")
        || matches!(
            key,
            "gen_ai.input.messages" | "gen_ai.output.messages" | "gen_ai.system_instructions"
        )
}

/// Events that carry message content: `gen_ai.content.prompt`/`completion`
/// (older), `gen_ai.user.message`, `gen_ai.choice` and the like (newer).
fn is_content_event(name: &str) -> bool {
    name.starts_with("gen_ai.")
}

/// A span is a GenAI call when it says which GenAI operation it is or
/// which model it asked.
fn is_genai(span: &Span) -> bool {
    span.attributes.iter().any(|kv| {
        matches!(
            kv.key.as_str(),
            "gen_ai.operation.name"
                | "gen_ai.request.model"
                | "gen_ai.system"
                | "gen_ai.provider.name"
        )
    })
}

/// The GenAI spans of `request` as rows; other spans are not GenAI calls
/// and are skipped (not rejected).
pub(crate) fn extract(request: &ExportTraceServiceRequest, capture_content: bool) -> Extracted {
    let mut out = Extracted::default();
    for resource_spans in &request.resource_spans {
        let resource_attributes = resource_spans
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        let service = resource_attributes
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| string_value(kv.value.as_ref()));
        let resource = Json::Object(to_object(resource_attributes.iter())).to_string();
        for scope_spans in &resource_spans.scope_spans {
            for span in scope_spans.spans.iter().filter(|s| is_genai(s)) {
                match call_row(span, capture_content) {
                    Ok(mut row) => {
                        row.service = service.clone();
                        row.resource = resource.clone();
                        out.rows.push(row);
                    }
                    Err(why) => {
                        out.rejected += 1;
                        out.first_error.get_or_insert(why);
                    }
                }
            }
        }
    }
    out
}

fn call_row(span: &Span, capture_content: bool) -> Result<CallRow, String> {
    let trace_id = hex_id(&span.trace_id, 16).ok_or_else(|| {
        format!(
            "span {:?}: trace id must be 16 bytes, not all zero",
            span.name
        )
    })?;
    let span_id = hex_id(&span.span_id, 8).ok_or_else(|| {
        format!(
            "span {:?}: span id must be 8 bytes, not all zero",
            span.name
        )
    })?;
    let parent_span_id = match span.parent_span_id.as_slice() {
        [] => None,
        id => Some(
            hex_id(id, 8)
                .ok_or_else(|| format!("span {:?}: parent span id must be 8 bytes", span.name))?,
        ),
    };
    if span.start_time_unix_nano == 0 {
        return Err(format!("span {:?}: no start time", span.name));
    }
    if span.end_time_unix_nano < span.start_time_unix_nano {
        return Err(format!("span {:?}: ends before it starts", span.name));
    }
    let ts = micros(span.start_time_unix_nano)?;
    let end_ts = micros(span.end_time_unix_nano)?;
    let mut row = CallRow {
        ts,
        end_ts,
        duration_ms: (span.end_time_unix_nano - span.start_time_unix_nano) as f64 / 1e6,
        trace_id,
        span_id,
        parent_span_id,
        span_name: span.name.clone(),
        status: "unset",
        ..CallRow::default()
    };
    let mut rest = Map::new();
    let mut content = Map::new();
    for kv in &span.attributes {
        let value = kv.value.as_ref();
        let key = kv.key.as_str();
        match key {
            "gen_ai.operation.name" => row.operation = string_value(value),
            "gen_ai.provider.name" => row.provider = string_value(value),
            "gen_ai.system" => {
                row.provider = row.provider.take().or_else(|| string_value(value));
            }
            "gen_ai.request.model" => row.model = string_value(value),
            "gen_ai.response.model" => row.response_model = string_value(value),
            "gen_ai.response.id" => row.response_id = string_value(value),
            "gen_ai.usage.input_tokens" | "gen_ai.usage.prompt_tokens" => {
                row.input_tokens = row.input_tokens.or_else(|| int_value(value));
            }
            "gen_ai.usage.output_tokens" | "gen_ai.usage.completion_tokens" => {
                row.output_tokens = row.output_tokens.or_else(|| int_value(value));
            }
            "gen_ai.response.finish_reasons" => row.finish_reasons = list_value(value),
            "error.type" => row.error_type = string_value(value),
            _ if is_content_key(key) => {
                if capture_content {
                    content.insert(key.to_string(), json_value(value));
                }
            }
            _ => {
                rest.insert(key.to_string(), json_value(value));
            }
        }
    }
    if row.model.is_none() {
        row.model = row.response_model.clone();
    }
    let status = span.status.as_ref();
    row.status = match status.map(|s| s.code) {
        Some(c) if c == StatusCode::Ok as i32 => "ok",
        Some(c) if c == StatusCode::Error as i32 => "error",
        _ => "unset",
    };
    if row.status == "error" && row.error_type.is_none() {
        // The exception event's type, else the status message.
        row.error_type = span
            .events
            .iter()
            .filter(|e| e.name == "exception")
            .flat_map(|e| &e.attributes)
            .find(|kv| kv.key == "exception.type")
            .and_then(|kv| string_value(kv.value.as_ref()))
            .or_else(|| status.map(|s| s.message.clone()).filter(|m| !m.is_empty()));
    }
    if capture_content {
        let events: Vec<Json> = span
            .events
            .iter()
            .filter(|e| is_content_event(&e.name))
            .map(|e| {
                let mut event = Map::new();
                event.insert("name".into(), Json::String(e.name.clone()));
                event.insert(
                    "attributes".into(),
                    Json::Object(to_object(e.attributes.iter())),
                );
                Json::Object(event)
            })
            .collect();
        if !events.is_empty() {
            content.insert("events".into(), Json::Array(events));
        }
        if !content.is_empty() {
            row.content = Some(Json::Object(content).to_string());
        }
    }
    row.attributes = Json::Object(rest).to_string();
    Ok(row)
}

/// Nanoseconds to microseconds, within what a timestamp column holds.
fn micros(nanos: u64) -> Result<i64, String> {
    i64::try_from(nanos / 1_000).map_err(|_| format!("time {nanos} ns is out of range"))
}

/// Lower-case hex of an id of `len` bytes; `None` when the length is wrong
/// or every byte is zero (an invalid id, as the trace API defines it).
fn hex_id(id: &[u8], len: usize) -> Option<String> {
    if id.len() != len || id.iter().all(|b| *b == 0) {
        return None;
    }
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

fn string_value(value: Option<&AnyValue>) -> Option<String> {
    match value?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

fn int_value(value: Option<&AnyValue>) -> Option<i64> {
    match value?.value.as_ref()? {
        Value::IntValue(i) => Some(*i),
        Value::DoubleValue(d) if d.fract() == 0.0 && d.abs() < 9.0e15 => Some(*d as i64),
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A string array as its items joined by commas (a single string as is).
fn list_value(value: Option<&AnyValue>) -> Option<String> {
    match value?.value.as_ref()? {
        Value::ArrayValue(a) => Some(
            a.values
                .iter()
                .filter_map(|v| string_value(Some(v)))
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => string_value(value),
    }
}

fn to_object<'a>(attributes: impl Iterator<Item = &'a KeyValue>) -> Map<String, Json> {
    attributes
        .map(|kv| (kv.key.clone(), json_value(kv.value.as_ref())))
        .collect()
}

/// An attribute value as JSON; bytes as lower-case hex.
fn json_value(value: Option<&AnyValue>) -> Json {
    let Some(value) = value.and_then(|v| v.value.as_ref()) else {
        return Json::Null;
    };
    match value {
        Value::StringValue(s) => Json::String(s.clone()),
        Value::BoolValue(b) => Json::Bool(*b),
        Value::IntValue(i) => Json::from(*i),
        // JSON has no NaN or infinity: those become null.
        Value::DoubleValue(d) => serde_json::Number::from_f64(*d).map_or(Json::Null, Json::Number),
        Value::ArrayValue(a) => Json::Array(a.values.iter().map(|v| json_value(Some(v))).collect()),
        Value::KvlistValue(kv) => Json::Object(to_object(kv.values.iter())),
        Value::BytesValue(b) => Json::String(b.iter().map(|b| format!("{b:02x}")).collect()),
        Value::StringValueStrindex(_) => Json::Null,
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::ArrayValue;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::Event;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    use super::*;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn text(s: &str) -> Value {
        Value::StringValue(s.into())
    }

    fn chat_span(name: &str) -> Span {
        Span {
            trace_id: vec![0xab; 16],
            span_id: vec![0x01, 2, 3, 4, 5, 6, 7, 8],
            name: name.into(),
            start_time_unix_nano: 1_767_225_600_000_000_000,
            end_time_unix_nano: 1_767_225_600_250_000_000,
            attributes: vec![
                kv("gen_ai.operation.name", text("chat")),
                kv("gen_ai.system", text("openai")),
                kv("gen_ai.request.model", text("gpt-4o-mini")),
                kv("gen_ai.response.model", text("gpt-4o-mini-2024-07-18")),
                kv("gen_ai.usage.input_tokens", Value::IntValue(12)),
                kv("gen_ai.usage.output_tokens", Value::IntValue(30)),
                kv(
                    "gen_ai.response.finish_reasons",
                    Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(text("stop")),
                        }],
                    }),
                ),
                kv("gen_ai.input.messages", text("[{\"role\":\"user\"}]")),
                kv("server.port", Value::IntValue(8000)),
            ],
            events: vec![Event {
                name: "gen_ai.choice".into(),
                attributes: vec![kv("index", Value::IntValue(0))],
                ..Default::default()
            }],
            status: Some(Status {
                code: StatusCode::Ok as i32,
                message: String::new(),
            }),
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", text("support-bot"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn a_chat_span_fills_the_columns_and_content_stays_out_unless_asked() {
        let plain = Span {
            attributes: vec![kv("http.method", text("GET"))],
            ..chat_span("GET /")
        };
        let got = extract(&request(vec![chat_span("chat gpt-4o-mini"), plain]), false);
        assert_eq!(got.rejected, 0);
        let [row] = got.rows.as_slice() else {
            panic!("one GenAI row expected: {:?}", got.rows)
        };
        assert_eq!(row.ts, 1_767_225_600_000_000);
        assert_eq!(row.duration_ms, 250.0);
        assert_eq!(row.trace_id, "ab".repeat(16));
        assert_eq!(row.span_id, "0102030405060708");
        assert_eq!(row.service.as_deref(), Some("support-bot"));
        assert_eq!(row.operation.as_deref(), Some("chat"));
        assert_eq!(row.provider.as_deref(), Some("openai"));
        assert_eq!(row.model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!((row.input_tokens, row.output_tokens), (Some(12), Some(30)));
        assert_eq!(row.finish_reasons.as_deref(), Some("stop"));
        assert_eq!(row.status, "ok");
        assert_eq!(row.attributes, r#"{"server.port":8000}"#);
        assert_eq!(row.content, None);
        let captured = extract(&request(vec![chat_span("chat")]), true);
        let content = captured.rows[0].content.as_deref().expect("content");
        assert!(content.contains("gen_ai.input.messages") && content.contains("gen_ai.choice"));
    }

    #[test]
    fn malformed_genai_spans_are_rejected_one_by_one() {
        let short_id = Span {
            trace_id: vec![1; 8],
            ..chat_span("bad trace")
        };
        let backwards = Span {
            end_time_unix_nano: 1,
            ..chat_span("backwards")
        };
        let zero = Span {
            span_id: vec![0; 8],
            ..chat_span("zero")
        };
        let failed = Span {
            status: Some(Status {
                code: StatusCode::Error as i32,
                message: "Connection error.".into(),
            }),
            ..chat_span("failed")
        };
        let got = extract(&request(vec![short_id, backwards, zero, failed]), false);
        assert_eq!(got.rejected, 3);
        assert!(got.first_error.expect("why").contains("trace id"));
        assert_eq!(got.rows.len(), 1);
        assert_eq!(got.rows[0].status, "error");
        assert_eq!(got.rows[0].error_type.as_deref(), Some("Connection error."));
    }
}

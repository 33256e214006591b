//! One judge call: the Chat Completions request asking for a structured
//! `{score, reason}`, retries on 429 and 5xx, and what the answer was worth.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What became of one judged row (the `outcome` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A score within the range.
    Scored,
    /// The answer was not the JSON asked for (or had no score).
    Malformed,
    /// A score outside `SCORE BETWEEN`.
    OutOfRange,
    /// The endpoint refused the request for good (a 4xx other than 429).
    Refused,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Scored => "scored",
            Outcome::Malformed => "malformed",
            Outcome::OutOfRange => "out_of_range",
            Outcome::Refused => "refused",
        }
    }
}

/// A finished call: recorded once, so the row is not judged again.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    pub(crate) outcome: Outcome,
    pub(crate) score: Option<f64>,
    pub(crate) reason: Option<String>,
    /// The model that answered (the response's `model`).
    pub(crate) judge_model: Option<String>,
    pub(crate) input_tokens: i64,
    pub(crate) output_tokens: i64,
    pub(crate) latency_ms: f64,
    pub(crate) attempts: u32,
    /// Why an answer was not a score (never the API key).
    pub(crate) error: Option<String>,
}

/// A call that did not finish: retried later, nothing recorded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unavailable {
    pub(crate) error: String,
    pub(crate) attempts: u32,
}

/// What a call needs.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// `<endpoint>/chat/completions`.
    pub(crate) url: String,
    pub(crate) api_key: Option<String>,
    pub(crate) model: String,
    pub(crate) prompt: String,
    pub(crate) score_range: (f64, f64),
    pub(crate) timeout: Duration,
    /// Attempts for 429, 5xx and transport failures, waits included.
    pub(crate) attempts: u32,
}

const SYSTEM: &str = "You are an evaluator. Read the material and the rubric, then answer \
    with a JSON object {\"score\": number, \"reason\": string}: the score within the range \
    the rubric gives, the reason in one or two sentences.";

/// The request body: the rubric as the user message, the answer's shape
/// as a JSON schema (`response_format`), no sampling randomness.
pub(crate) fn body(request: &Request) -> Value {
    let (lo, hi) = request.score_range;
    json!({
        "model": request.model,
        "messages": [
            {"role": "system", "content": format!("{SYSTEM} The score is between {lo} and {hi}.")},
            {"role": "user", "content": request.prompt},
        ],
        "temperature": 0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "evaluation",
                "strict": true,
                "schema": {
                    "type": "object",
                    "properties": {
                        "score": {"type": "number", "minimum": lo, "maximum": hi},
                        "reason": {"type": "string"},
                    },
                    "required": ["score", "reason"],
                    "additionalProperties": false,
                },
            },
        },
    })
}

/// Reads an answer's `{score, reason}` and usage.
pub(crate) fn verdict(answer: &Value, range: (f64, f64)) -> Verdict {
    let usage = |k: &str| answer["usage"][k].as_i64().unwrap_or(0);
    let mut v = Verdict {
        outcome: Outcome::Malformed,
        score: None,
        reason: None,
        judge_model: answer["model"].as_str().map(str::to_string),
        input_tokens: usage("prompt_tokens"),
        output_tokens: usage("completion_tokens"),
        latency_ms: 0.0,
        attempts: 0,
        error: None,
    };
    let content = answer["choices"][0]["message"]["content"].as_str();
    let Some(content) = content else {
        v.error = Some("the answer has no message content".into());
        return v;
    };
    let parsed: Value = match serde_json::from_str(content.trim()) {
        Ok(p) => p,
        Err(e) => {
            v.error = Some(format!("the answer is not JSON: {e}"));
            return v;
        }
    };
    v.reason = parsed["reason"].as_str().map(str::to_string);
    let Some(score) = parsed["score"].as_f64().filter(|s| s.is_finite()) else {
        v.error = Some("the answer has no numeric score".into());
        return v;
    };
    v.score = Some(score);
    if score < range.0 || score > range.1 {
        v.outcome = Outcome::OutOfRange;
        v.error = Some(format!(
            "score {score} is outside {} to {}",
            range.0, range.1
        ));
        return v;
    }
    v.outcome = Outcome::Scored;
    v
}

/// How long to wait before attempt `attempt` (1-based retries): the
/// server's `Retry-After` seconds when it gave them (at most a minute),
/// else 0.5 s doubling.
fn backoff(attempt: u32, retry_after: Option<&str>) -> Duration {
    match retry_after.and_then(|s| s.trim().parse::<f64>().ok()) {
        Some(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s.min(60.0)),
        _ => Duration::from_millis(500u64 << attempt.min(6)),
    }
}

/// Calls the judge (blocking: run it off the async threads).
pub(crate) fn call(request: &Request) -> Result<Verdict, Unavailable> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(request.timeout))
        .build()
        .into();
    let body = body(request);
    let started = Instant::now();
    let mut last_error = String::new();
    for attempt in 1..=request.attempts.max(1) {
        let mut call = agent
            .post(&request.url)
            .header("Content-Type", "application/json");
        if let Some(key) = &request.api_key {
            call = call.header("Authorization", &format!("Bearer {key}"));
        }
        let response = call.send(body.to_string());
        let (status, retry_after, text) = match response {
            Ok(mut r) => {
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let text = r
                    .body_mut()
                    .with_config()
                    .limit(4 << 20)
                    .read_to_string()
                    .unwrap_or_default();
                (r.status().as_u16(), retry_after, text)
            }
            Err(e) => {
                // Transport failures and timeouts; ureq's message names no header.
                last_error = format!("calling the judge failed: {e}");
                if attempt < request.attempts {
                    std::thread::sleep(backoff(attempt, None));
                }
                continue;
            }
        };
        match status {
            200..=299 => {
                let mut v = match serde_json::from_str::<Value>(&text) {
                    Ok(answer) => verdict(&answer, request.score_range),
                    Err(e) => Verdict {
                        outcome: Outcome::Malformed,
                        score: None,
                        reason: None,
                        judge_model: None,
                        input_tokens: 0,
                        output_tokens: 0,
                        latency_ms: 0.0,
                        attempts: 0,
                        error: Some(format!("the response is not JSON: {e}")),
                    },
                };
                v.latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                v.attempts = attempt;
                return Ok(v);
            }
            429 | 500..=599 => {
                last_error = format!("the judge answered {status}");
                if attempt < request.attempts {
                    std::thread::sleep(backoff(attempt, retry_after.as_deref()));
                }
            }
            _ => {
                let detail: String = text.chars().take(300).collect();
                return Ok(Verdict {
                    outcome: Outcome::Refused,
                    score: None,
                    reason: None,
                    judge_model: None,
                    input_tokens: 0,
                    output_tokens: 0,
                    latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                    attempts: attempt,
                    error: Some(format!(
                        "the judge refused the request ({status}): {detail}"
                    )),
                });
            }
        }
    }
    Err(Unavailable {
        error: last_error,
        attempts: request.attempts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(content: &str) -> Value {
        json!({
            "model": "judge-small-0301",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 40, "completion_tokens": 9},
        })
    }

    #[test]
    fn answers_are_read_or_recorded_as_what_they_are() {
        let v = verdict(
            &answer(r#"{"score": 0.8, "reason": "supported"}"#),
            (0.0, 1.0),
        );
        assert_eq!((v.outcome, v.score), (Outcome::Scored, Some(0.8)));
        assert_eq!((v.input_tokens, v.output_tokens), (40, 9));
        assert_eq!(v.judge_model.as_deref(), Some("judge-small-0301"));
        let v = verdict(&answer(r#"{"score": 7, "reason": "x"}"#), (0.0, 1.0));
        assert_eq!((v.outcome, v.score), (Outcome::OutOfRange, Some(7.0)));
        for content in [
            "not json",
            r#"{"reason": "no score"}"#,
            r#"{"score": "high"}"#,
        ] {
            assert_eq!(
                verdict(&answer(content), (0.0, 1.0)).outcome,
                Outcome::Malformed
            );
        }
        assert_eq!(verdict(&json!({}), (0.0, 1.0)).outcome, Outcome::Malformed);
    }

    #[test]
    fn the_request_asks_for_a_json_schema_answer() {
        let request = Request {
            url: "http://127.0.0.1:1/v1/chat/completions".into(),
            api_key: None,
            model: "judge".into(),
            prompt: "Rate this".into(),
            score_range: (1.0, 5.0),
            timeout: Duration::from_secs(1),
            attempts: 1,
        };
        let b = body(&request);
        assert_eq!(b["response_format"]["type"], "json_schema");
        assert_eq!(
            b["response_format"]["json_schema"]["schema"]["properties"]["score"]["maximum"],
            5.0
        );
        assert_eq!(b["messages"][1]["content"], "Rate this");
    }

    #[test]
    fn retry_after_is_honoured_within_a_minute() {
        assert_eq!(backoff(1, Some("2")), Duration::from_secs(2));
        assert_eq!(backoff(1, Some("3600")), Duration::from_secs(60));
        assert_eq!(backoff(1, None), Duration::from_secs(1));
        assert_eq!(backoff(2, Some("soon")), Duration::from_secs(2));
    }
}

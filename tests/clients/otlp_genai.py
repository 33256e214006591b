"""An application's LLM calls, traced by OpenTelemetry into Lookout.

The `openai` client, instrumented by opentelemetry-instrumentation-openai-v2,
calls a local OpenAI-compatible server; the SDK's OTLP/HTTP exporter sends
the spans to Lookout's /v1/traces. Then the calls are read back over the
Postgres protocol and compared with what the app did.

Usage: otlp_genai.py --otlp http://127.0.0.1:PORT --pg PORT [--token T]
"""

import argparse
import sys

import openai
import psycopg
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from fake_llm import FakeLlm, completion


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--otlp", required=True)
    parser.add_argument("--pg", type=int, required=True)
    parser.add_argument("--token")
    args = parser.parse_args()

    def script(body):
        question = body["messages"][-1]["content"]
        if "fail" in question:
            return 500, {}, {"error": {"message": "upstream exploded", "type": "server_error"}}, 0
        words = len(question.split())
        return 200, {}, completion(body["model"], "answer", prompt_tokens=words, completion_tokens=2 * words), 0

    llm = FakeLlm(script)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{args.otlp}/v1/traces", headers=headers))
    )
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    client = openai.OpenAI(base_url=llm.url, api_key="test-key", max_retries=0)
    questions = ["how do I reset my password", "what is the refund policy for annual plans", "hello"]
    for q in questions:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": q}])
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "please fail"}])
        sys.exit("the failing call did not fail")
    except openai.InternalServerError:
        pass
    provider.force_flush()
    provider.shutdown()
    llm.stop()
    assert all(r["invalid"] is None for r in llm.requests), llm.requests

    with psycopg.connect(host="127.0.0.1", port=args.pg, user="lookout", dbname="lookout") as conn:
        rows = conn.execute(
            "SELECT status, operation, provider, model, input_tokens, output_tokens, service, "
            "length(trace_id), length(span_id), duration_ms > 0, error_type "
            "FROM genai_calls ORDER BY ts"
        ).fetchall()
    words = [len(q.split()) for q in questions]
    expected_ok = [("ok" if True else None, "chat", "openai", "gpt-4o-mini", w, 2 * w, "support-bot", 32, 16, True) for w in words]
    got_ok = [r[:10] for r in rows if r[0] != "error"]
    # The instrumentation leaves a successful span's status unset.
    got_ok = [("ok" if r[0] in ("ok", "unset") else r[0],) + r[1:] for r in got_ok]
    assert got_ok == expected_ok, f"successful calls: {got_ok} != {expected_ok}"
    errors = [r for r in rows if r[0] == "error"]
    assert len(errors) == 1, f"one failed call expected: {rows}"
    assert errors[0][3] == "gpt-4o-mini" and errors[0][10], errors
    print(f"{len(rows)} GenAI calls stored; failed call's error type: {errors[0][10]}")


if __name__ == "__main__":
    main()

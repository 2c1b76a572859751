"""Drives `veil proxy` with the official `openai` package, unchanged but for base_url.

Usage: openai_sdk.py BASE_URL CHAT_MODEL EMBEDDINGS_MODEL

Every check is an assertion naming what it expected; the last stdout line is a JSON
summary the Rust test (client/tests/proxy.rs) checks too. Exit status 0 only when all pass.
"""

import json
import math
import sys

import openai

base_url, chat_model, emb_model = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key="unused-the-proxy-holds-the-key", max_retries=0)
summary = {}

# Models: asked of the enclave through the sealed channel.
ids = sorted(m.id for m in client.models.list())
assert chat_model in ids and emb_model in ids, f"models: {ids}"
summary["models"] = ids

messages = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Name three primary colours."},
]

# Chat, whole.
whole = client.chat.completions.create(model=chat_model, messages=messages, max_tokens=24, temperature=0)
text = whole.choices[0].message.content
assert whole.object == "chat.completion", whole.object
assert whole.model == chat_model, whole.model
assert text and text.strip(), "empty completion"
assert whole.choices[0].finish_reason in ("stop", "length"), whole.choices[0].finish_reason
assert 0 < whole.usage.completion_tokens <= 24, whole.usage
assert whole.usage.prompt_tokens > 10, whole.usage
summary["chat"] = {"text": text, "usage": whole.usage.model_dump()}

# Chat, streamed: the same greedy text, delivered in several chunks, usage at the end.
chunks = list(
    client.chat.completions.create(
        model=chat_model,
        messages=messages,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
)
deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
streamed = "".join(deltas)
assert sum(1 for d in deltas if d) >= 3, f"expected several content chunks, got {len(deltas)}"
assert streamed == text, f"streamed text differs from the whole one: {streamed!r} vs {text!r}"
assert chunks[-1].usage is not None, "no usage chunk at the end of the stream"
assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens, chunks[-1].usage
summary["stream"] = {"chunks": len(chunks), "text": streamed}

# Embeddings (the SDK asks for base64 and decodes it).
inputs = ["The cat sat on the mat.", "A feline rested on the rug.", "Quarterly revenue rose 4%."]
emb = client.embeddings.create(model=emb_model, input=inputs)
vecs = [d.embedding for d in emb.data]
assert len(vecs) == 3 and all(len(v) == 384 for v in vecs), [len(v) for v in vecs]
for v in vecs:
    n = math.sqrt(sum(x * x for x in v))
    assert abs(n - 1.0) < 1e-3, f"not normalized: {n}"
cos = lambda a, b: sum(x * y for x, y in zip(a, b))
assert cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2]) + 0.2, "similar sentences are not closer"
assert emb.usage.prompt_tokens > 0, emb.usage
summary["embeddings"] = {"n": len(vecs), "dims": len(vecs[0]), "usage": emb.usage.model_dump()}

# Errors come back OpenAI-shaped and become the SDK's typed exceptions.
try:
    client.chat.completions.create(model="no-such-model", messages=messages, max_tokens=4)
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as e:
    assert e.status_code == 404, e.status_code
    err = e.body if isinstance(e.body, dict) else {}
    assert err.get("code") == "model_not_found", e.body
    summary["error_unknown_model"] = {"status": e.status_code, "code": err.get("code")}
try:
    client.chat.completions.create(model=chat_model, messages=messages, temperature=7)
    raise AssertionError("temperature 7 was accepted")
except openai.BadRequestError as e:
    err = e.body if isinstance(e.body, dict) else {}
    assert err.get("param") == "temperature", e.body
    summary["error_bad_param"] = {"status": e.status_code, "param": err.get("param")}

print(json.dumps(summary))

"""Drives a running Tollgate data plane with the official OpenAI Python SDK.

Prints one JSON object describing what the SDK saw; the Rust test asserts on it.
Environment: TOLLGATE_BASE_URL (…/v1), TOLLGATE_KEY (a valid key).
"""
import json
import os

import openai
from openai import OpenAI

base_url = os.environ["TOLLGATE_BASE_URL"]
key = os.environ["TOLLGATE_KEY"]
client = OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)
out = {}

resp = client.responses.create(model="gpt-5.1", input="Say hello")
out["non_stream"] = {
    "id": resp.id,
    "status": resp.status,
    "model": resp.model,
    "output_text": resp.output_text,
    "input_tokens": resp.usage.input_tokens if resp.usage else None,
}

events = []
final = None
with client.responses.create(model="gpt-5.1", input="Say hello", stream=True) as stream:
    for event in stream:
        events.append(event.type)
        if event.type == "response.completed":
            final = event.response
out["stream"] = {
    "types": events,
    "output_text": final.output_text if final else None,
}


def error_of(fn):
    try:
        fn()
    except openai.APIStatusError as e:
        body = e.body if isinstance(e.body, dict) else {}
        return {
            "class": type(e).__name__,
            "status": e.status_code,
            "code": e.code,
            "type": body.get("type"),
            "message": body.get("message"),
        }
    return None


bad = OpenAI(base_url=base_url, api_key="sk-not-a-real-key-000000", max_retries=0)
out["invalid_key"] = error_of(lambda: bad.responses.create(model="gpt-5.1", input="x"))
out["missing_model"] = error_of(lambda: client.responses.create(model="", input="x"))
out["models"] = [m.id for m in client.models.list()]
print(json.dumps(out))

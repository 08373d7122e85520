"""Drives a running Tollgate data plane's /v1/chat/completions with the official OpenAI
Python SDK: plain, streaming with usage, tool calls (plain and streamed), a tool result
turn, a JSON-schema answer, and an untranslatable parameter.

Prints one JSON object describing what the SDK saw; the Rust test asserts on it (and
scripts the fake upstream's answers in this order). Environment: TOLLGATE_BASE_URL
(…/v1), TOLLGATE_KEY (a valid key).
"""
import json
import os

import openai
from openai import OpenAI

client = OpenAI(
    base_url=os.environ["TOLLGATE_BASE_URL"],
    api_key=os.environ["TOLLGATE_KEY"],
    max_retries=0,
    timeout=30,
)
MODEL = "gpt-5.1"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
out = {}


def usage_of(u):
    if u is None:
        return None
    return {
        "prompt": u.prompt_tokens,
        "completion": u.completion_tokens,
        "total": u.total_tokens,
        "cached": u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details else None,
        "reasoning": (
            u.completion_tokens_details.reasoning_tokens if u.completion_tokens_details else None
        ),
    }


# 1. Plain.
r = client.chat.completions.create(
    model=MODEL,
    messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ],
    max_tokens=64,
    temperature=0.5,
)
out["plain"] = {
    "id": r.id,
    "object": r.object,
    "model": r.model,
    "content": r.choices[0].message.content,
    "role": r.choices[0].message.role,
    "finish_reason": r.choices[0].finish_reason,
    "usage": usage_of(r.usage),
}

# 2. Streaming with usage.
chunks = client.chat.completions.create(
    model=MODEL,
    messages=[{"role": "user", "content": "Say hello"}],
    stream=True,
    stream_options={"include_usage": True},
)
content, finish, usage, ids, n = "", None, None, set(), 0
for c in chunks:
    n += 1
    ids.add(c.id)
    if c.choices:
        content += c.choices[0].delta.content or ""
        finish = c.choices[0].finish_reason or finish
    if c.usage:
        usage = usage_of(c.usage)
out["stream"] = {
    "content": content,
    "finish_reason": finish,
    "usage": usage,
    "chunks": n,
    "ids": len(ids),
}

# 3. A tool call.
ask = [{"role": "user", "content": "Weather in Paris?"}]
r = client.chat.completions.create(model=MODEL, messages=ask, tools=TOOLS, tool_choice="auto")
call = r.choices[0].message.tool_calls[0]
out["tools"] = {
    "finish_reason": r.choices[0].finish_reason,
    "content": r.choices[0].message.content,
    "id": call.id,
    "name": call.function.name,
    "arguments": call.function.arguments,
    "calls": len(r.choices[0].message.tool_calls),
}

# 4. The same, streamed: the SDK's deltas assemble the call.
calls = {}
finish = None
for c in client.chat.completions.create(
    model=MODEL, messages=ask, tools=TOOLS, stream=True
):
    if not c.choices:
        continue
    finish = c.choices[0].finish_reason or finish
    for d in c.choices[0].delta.tool_calls or []:
        entry = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
        entry["id"] = d.id or entry["id"]
        if d.function:
            entry["name"] += d.function.name or ""
            entry["arguments"] += d.function.arguments or ""
out["tools_stream"] = {"finish_reason": finish, "calls": [calls[i] for i in sorted(calls)]}

# 5. The tool's result goes back.
r = client.chat.completions.create(
    model=MODEL,
    messages=ask
    + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
    ],
    tools=TOOLS,
)
out["tool_result"] = {"content": r.choices[0].message.content, "finish_reason": r.choices[0].finish_reason}

# 6. A JSON-schema answer.
r = client.chat.completions.create(
    model=MODEL,
    messages=[{"role": "user", "content": "Where is it sunny?"}],
    response_format={
        "type": "json_schema",
        "json_schema": {
            "name": "place",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    },
    reasoning_effort="low",
)
out["json"] = {"parsed": json.loads(r.choices[0].message.content)}

# 7. What cannot be translated is refused, naming the parameter.
try:
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], n=2
    )
    out["n2"] = None
except openai.BadRequestError as e:
    out["n2"] = {"status": e.status_code, "param": e.param, "code": e.code, "message": e.message}

print(json.dumps(out))

//! A Chat Completions request body translated to the equivalent Responses request body.
//! Everything the Responses API can express is carried over; anything it cannot (n > 1,
//! logprobs, stop sequences, …) is refused with a 400 naming the parameter, never
//! silently dropped, so a client never gets an answer to a different question.

use serde_json::{Map, Value, json};

use super::{invalid, unsupported};
use crate::proxy::errors::ClientError;

/// What the answer must look like, read from the Chat Completions request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplyOptions {
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk carrying the usage.
    pub include_usage: bool,
}

/// Parameters copied as they are (same name and meaning in both APIs).
const SAME: &[&str] = &[
    "model",
    "stream",
    "temperature",
    "top_p",
    "user",
    "metadata",
    "parallel_tool_calls",
    "store",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
];

/// Parameters the Responses API has no equivalent for: refused unless they hold their
/// default (which asks for nothing).
fn refuse_unless_default(key: &str, v: &Value) -> Result<(), ClientError> {
    let default = match key {
        "n" => v.as_i64() == Some(1),
        "logprobs" => v.as_bool() == Some(false),
        "frequency_penalty" | "presence_penalty" => v.as_f64() == Some(0.0),
        "logit_bias" => v.as_object().is_some_and(Map::is_empty),
        "modalities" => v.as_array().is_some_and(|m| m.iter().all(|x| x == "text")),
        _ => false,
    };
    if default {
        return Ok(());
    }
    let why = match key {
        "n" => "only n=1 is supported (one choice per request)",
        "logprobs" | "top_logprobs" => "logprobs are not supported on this endpoint",
        "stop" => "stop sequences are not supported on this endpoint",
        "seed" => "seed is not supported on this endpoint",
        "frequency_penalty" | "presence_penalty" | "logit_bias" => {
            "token penalties and logit_bias are not supported on this endpoint"
        }
        "audio" | "modalities" => "only text output is supported on this endpoint",
        "functions" | "function_call" => {
            "the deprecated functions/function_call parameters are not supported; use tools and tool_choice"
        }
        _ => "this parameter is not supported on this endpoint",
    };
    Err(unsupported(
        key,
        &format!("Unsupported parameter: '{key}': {why}"),
    ))
}

/// Translates a Chat Completions body into a Responses body (its `stream` kept) and the
/// shape the answer must take.
pub fn translate(
    chat: &Map<String, Value>,
) -> Result<(Map<String, Value>, ReplyOptions), ClientError> {
    let mut out = Map::new();
    let mut max_tokens: Option<Value> = None;
    // `text.format` and `text.verbosity` come from two chat parameters.
    let mut text = Map::new();
    for (key, v) in chat {
        // An explicit null asks for the default, as in the OpenAI API.
        if v.is_null() {
            continue;
        }
        match key.as_str() {
            k if SAME.contains(&k) => {
                out.insert(key.clone(), v.clone());
            }
            "messages" => {
                out.insert("input".into(), Value::Array(messages(v)?));
            }
            "max_completion_tokens" => max_tokens = Some(v.clone()),
            "max_tokens" => {
                max_tokens.get_or_insert_with(|| v.clone());
            }
            "reasoning_effort" => {
                out.insert("reasoning".into(), json!({ "effort": v }));
            }
            "tools" => {
                out.insert("tools".into(), Value::Array(tools(v)?));
            }
            "tool_choice" => {
                out.insert("tool_choice".into(), tool_choice(v)?);
            }
            "response_format" => {
                text.insert("format".into(), response_format(v)?);
            }
            "verbosity" => {
                text.insert("verbosity".into(), v.clone());
            }
            // Read below; has no Responses counterpart of its own.
            "stream_options" => {}
            other => refuse_unless_default(other, v)?,
        }
    }
    if let Some(m) = max_tokens {
        out.insert("max_output_tokens".into(), m);
    }
    if !text.is_empty() {
        out.insert("text".into(), Value::Object(text));
    }
    if !out.contains_key("input") {
        return Err(invalid("messages", "messages is required"));
    }
    let stream = chat.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = stream
        && chat
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true);
    Ok((
        out,
        ReplyOptions {
            stream,
            include_usage,
        },
    ))
}

/// `messages` → `input` items. System and developer messages become developer
/// messages: on a subscription account the backend reserves `instructions` for the
/// gateway's own, and a developer message means the same to the model on both kinds.
fn messages(v: &Value) -> Result<Vec<Value>, ClientError> {
    let Some(list) = v.as_array().filter(|l| !l.is_empty()) else {
        return Err(invalid("messages", "messages must be a non-empty array"));
    };
    let mut items = Vec::new();
    let mut call_ids: Vec<String> = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let at = |what: &str| format!("messages[{i}]{what}");
        let Some(m) = m.as_object() else {
            return Err(invalid(&at(""), &format!("{} must be an object", at(""))));
        };
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let content = m.get("content").filter(|c| !c.is_null());
        match role {
            "system" | "developer" | "user" => {
                let Some(content) = content else {
                    return Err(invalid(
                        &at(".content"),
                        &format!("{} is required", at(".content")),
                    ));
                };
                let parts = if role == "user" {
                    user_parts(content, &at(".content"))?
                } else {
                    text_parts(content, &at(".content"), "input_text")?
                };
                let role = if role == "user" { "user" } else { "developer" };
                items.push(json!({"type": "message", "role": role, "content": parts}));
            }
            "assistant" => {
                if m.get("function_call").is_some_and(|f| !f.is_null()) {
                    return Err(unsupported(
                        &at(".function_call"),
                        "The deprecated function_call on assistant messages is not supported; use tool_calls",
                    ));
                }
                if m.get("audio").is_some_and(|a| !a.is_null()) {
                    return Err(unsupported(
                        &at(".audio"),
                        "Audio is not supported on this endpoint",
                    ));
                }
                if content.is_some() || m.get("refusal").is_some_and(Value::is_string) {
                    let mut parts = match content {
                        Some(c) => text_parts(c, &at(".content"), "output_text")?,
                        None => Vec::new(),
                    };
                    // A refusal the client keeps in the history stays a refusal.
                    if let Some(r) = m
                        .get("refusal")
                        .and_then(Value::as_str)
                        .filter(|r| !r.is_empty())
                    {
                        parts.push(json!({"type": "refusal", "refusal": r}));
                    }
                    if !parts.is_empty() {
                        items.push(
                            json!({"type": "message", "role": "assistant", "content": parts}),
                        );
                    }
                }
                for (j, call) in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let item = tool_call(call, &at(&format!(".tool_calls[{j}]")))?;
                    if let Some(id) = item.get("call_id").and_then(Value::as_str) {
                        call_ids.push(id.to_owned());
                    }
                    items.push(item);
                }
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        invalid(
                            &at(".tool_call_id"),
                            &format!("{} is required", at(".tool_call_id")),
                        )
                    })?;
                if !call_ids.iter().any(|c| c == id) {
                    return Err(invalid(
                        &at(".tool_call_id"),
                        &format!(
                            "{}: tool_call_id '{id}' does not answer a tool call of an earlier assistant message",
                            at("")
                        ),
                    ));
                }
                let output = plain_text(content.unwrap_or(&Value::Null), &at(".content"))?;
                items
                    .push(json!({"type": "function_call_output", "call_id": id, "output": output}));
            }
            "function" => {
                return Err(unsupported(
                    &at(".role"),
                    "The deprecated 'function' role is not supported; use tool messages",
                ));
            }
            other => {
                return Err(invalid(
                    &at(".role"),
                    &format!("{}: unknown role '{other}'", at("")),
                ));
            }
        }
    }
    Ok(items)
}

/// An assistant's tool call → a `function_call` item.
fn tool_call(call: &Value, at: &str) -> Result<Value, ClientError> {
    let ty = call
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("function");
    if ty != "function" {
        return Err(unsupported(
            at,
            &format!("{at}: only function tool calls are supported"),
        ));
    }
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let f = call.get("function");
    let name = f.and_then(|f| f.get("name")).and_then(Value::as_str);
    let (Some(id), Some(name)) = (id, name) else {
        return Err(invalid(
            at,
            &format!("{at} needs an id and a function name"),
        ));
    };
    let arguments = f
        .and_then(|f| f.get("arguments"))
        .and_then(Value::as_str)
        .unwrap_or("{}");
    Ok(json!({"type": "function_call", "call_id": id, "name": name, "arguments": arguments}))
}

/// Text-only content (system, developer, assistant): a string or text parts, each
/// becoming a part of `part_type`. An assistant's refusal is kept as a refusal part.
fn text_parts(content: &Value, at: &str, part_type: &str) -> Result<Vec<Value>, ClientError> {
    match content {
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"type": part_type, "text": s})]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
                match (ty, p.get("text"), p.get("refusal")) {
                    ("text", Some(Value::String(t)), _) => {
                        Ok(json!({"type": part_type, "text": t}))
                    }
                    ("refusal", _, Some(Value::String(r))) if part_type == "output_text" => {
                        Ok(json!({"type": "refusal", "refusal": r}))
                    }
                    _ => Err(unsupported(
                        &format!("{at}[{j}]"),
                        &format!(
                            "{at}[{j}]: content part type '{ty}' is not supported in this message"
                        ),
                    )),
                }
            })
            .collect(),
        _ => Err(invalid(
            at,
            &format!("{at} must be a string or an array of content parts"),
        )),
    }
}

/// A tool result's content as one string (the text parts joined).
fn plain_text(content: &Value, at: &str) -> Result<String, ClientError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(_) => Ok(text_parts(content, at, "input_text")?
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("")),
        _ => Err(invalid(
            at,
            &format!("{at} must be a string or an array of content parts"),
        )),
    }
}

/// A user's content: text, images (`image_url` → `input_image`) and files.
fn user_parts(content: &Value, at: &str) -> Result<Vec<Value>, ClientError> {
    let Value::Array(parts) = content else {
        return text_parts(content, at, "input_text");
    };
    parts
        .iter()
        .enumerate()
        .map(|(j, p)| {
            let at = format!("{at}[{j}]");
            let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
            match ty {
                "text" => match p.get("text") {
                    Some(Value::String(t)) => Ok(json!({"type": "input_text", "text": t})),
                    _ => Err(invalid(&at, &format!("{at}.text must be a string"))),
                },
                "image_url" => {
                    let image = p.get("image_url");
                    // Both `{"url": …}` and a bare string are seen in the wild.
                    let url = image
                        .and_then(|i| i.get("url").or(Some(i)))
                        .and_then(Value::as_str)
                        .filter(|u| !u.is_empty())
                        .ok_or_else(|| invalid(&at, &format!("{at}.image_url.url is required")))?;
                    let detail = image
                        .and_then(|i| i.get("detail"))
                        .and_then(Value::as_str)
                        .unwrap_or("auto");
                    Ok(json!({"type": "input_image", "image_url": url, "detail": detail}))
                }
                "file" => {
                    let Some(file) = p.get("file").and_then(Value::as_object) else {
                        return Err(invalid(&at, &format!("{at}.file is required")));
                    };
                    let mut part = Map::new();
                    part.insert("type".into(), "input_file".into());
                    for k in ["file_id", "file_data", "filename"] {
                        if let Some(v) = file.get(k).filter(|v| !v.is_null()) {
                            part.insert(k.into(), v.clone());
                        }
                    }
                    Ok(Value::Object(part))
                }
                other => Err(unsupported(
                    &at,
                    &format!("{at}: content part type '{other}' is not supported on this endpoint"),
                )),
            }
        })
        .collect()
}

/// Chat function tools (`{type, function: {name, …}}`) → Responses function tools.
fn tools(v: &Value) -> Result<Vec<Value>, ClientError> {
    let Some(list) = v.as_array() else {
        return Err(invalid("tools", "tools must be an array"));
    };
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            let at = format!("tools[{i}]");
            let ty = t.get("type").and_then(Value::as_str).unwrap_or("");
            if ty != "function" {
                return Err(unsupported(
                    &at,
                    &format!("{at}: tool type '{ty}' is not supported; only function tools are"),
                ));
            }
            let f = t.get("function").and_then(Value::as_object);
            let Some(name) = f
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            else {
                return Err(invalid(&at, &format!("{at}.function.name is required")));
            };
            let mut out = Map::new();
            out.insert("type".into(), "function".into());
            out.insert("name".into(), name.into());
            for k in ["description", "parameters", "strict"] {
                if let Some(v) = f.and_then(|f| f.get(k)).filter(|v| !v.is_null()) {
                    out.insert(k.into(), v.clone());
                }
            }
            Ok(Value::Object(out))
        })
        .collect()
}

/// `"none" | "auto" | "required"` pass; a named function loses its `function` wrapper.
fn tool_choice(v: &Value) -> Result<Value, ClientError> {
    match v {
        Value::String(s) if matches!(s.as_str(), "none" | "auto" | "required") => Ok(v.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice", "tool_choice.function.name is required"))?;
            Ok(json!({"type": "function", "name": name}))
        }
        _ => Err(unsupported(
            "tool_choice",
            "tool_choice must be \"none\", \"auto\", \"required\" or a named function",
        )),
    }
}

/// `response_format` → `text.format` (the json_schema fields move up one level).
fn response_format(v: &Value) -> Result<Value, ClientError> {
    match v.get("type").and_then(Value::as_str) {
        Some("text") => Ok(json!({"type": "text"})),
        Some("json_object") => Ok(json!({"type": "json_object"})),
        Some("json_schema") => {
            let Some(s) = v.get("json_schema").and_then(Value::as_object) else {
                return Err(invalid(
                    "response_format.json_schema",
                    "response_format.json_schema is required",
                ));
            };
            let mut out = Map::new();
            out.insert("type".into(), "json_schema".into());
            for k in ["name", "description", "schema", "strict"] {
                if let Some(v) = s.get(k).filter(|v| !v.is_null()) {
                    out.insert(k.into(), v.clone());
                }
            }
            if !out.contains_key("name") {
                return Err(invalid(
                    "response_format.json_schema.name",
                    "response_format.json_schema.name is required",
                ));
            }
            Ok(Value::Object(out))
        }
        _ => Err(unsupported(
            "response_format",
            "response_format.type must be text, json_object or json_schema",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tr(v: Value) -> Result<(Map<String, Value>, ReplyOptions), ClientError> {
        translate(v.as_object().unwrap())
    }

    fn ok(v: Value) -> Value {
        Value::Object(tr(v).unwrap().0)
    }

    /// The refusal's status, `param` and message.
    fn refused(v: Value) -> (u16, String, String) {
        let e = tr(v).unwrap_err();
        let body = e.body_json();
        (
            e.status().as_u16(),
            body["error"]["param"].as_str().unwrap_or("").to_owned(),
            e.message,
        )
    }

    #[test]
    fn roles_become_input_items() {
        let out = ok(json!({"model": "gpt-5.1", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use English."}]},
            {"role": "user", "content": "Hi", "name": "ann"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "assistant", "content": null, "refusal": "I can't."},
            {"role": "user", "content": "Bye"}
        ]}));
        assert_eq!(
            out["input"],
            json!([
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Use English."}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]},
                {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Bye"}]}
            ])
        );
        assert!(out.get("messages").is_none() && out.get("instructions").is_none());
    }

    #[test]
    fn images_and_files() {
        let out = ok(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "file", "file": {"file_id": "file-1"}}
            ]}]}),
        );
        assert_eq!(
            out["input"][0]["content"],
            json!([
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"},
                {"type": "input_file", "file_id": "file-1"}
            ])
        );
        let (status, param, msg) = refused(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}
            ]}]}),
        );
        assert_eq!((status, param.as_str()), (400, "messages[0].content[0]"));
        assert!(msg.contains("'input_audio' is not supported"), "{msg}");
    }

    #[test]
    fn tool_calls_and_results() {
        let out = ok(json!({"model": "m",
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"}
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "d", "parameters": {"type": "object"}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "parallel_tool_calls": false
        }));
        assert_eq!(
            out["input"][1],
            json!({"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"})
        );
        assert_eq!(
            out["input"][2],
            json!({"type": "function_call_output", "call_id": "call_1", "output": "18C"})
        );
        assert_eq!(
            out["input"].as_array().unwrap().len(),
            3,
            "no empty assistant message"
        );
        assert_eq!(
            out["tools"],
            json!([{"type": "function", "name": "weather", "description": "d", "parameters": {"type": "object"}, "strict": true}])
        );
        assert_eq!(
            out["tool_choice"],
            json!({"type": "function", "name": "weather"})
        );
        assert_eq!(out["parallel_tool_calls"], false);
        assert_eq!(
            ok(
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"})
            )["tool_choice"],
            "required"
        );

        // A tool result must answer an earlier call.
        let (status, param, msg) = refused(json!({"model": "m", "messages": [
            {"role": "tool", "tool_call_id": "call_9", "content": "x"}
        ]}));
        assert_eq!((status, param.as_str()), (400, "messages[0].tool_call_id"));
        assert!(
            msg.contains("'call_9' does not answer a tool call"),
            "{msg}"
        );
        let (_, param, _) = refused(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "custom", "custom": {"name": "x"}}]}),
        );
        assert_eq!(param, "tools[0]");
    }

    #[test]
    fn response_format_and_limits() {
        let msgs = json!([{"role": "user", "content": "x"}]);
        let out = ok(
            json!({"model": "m", "messages": msgs, "response_format": {"type": "json_schema",
            "json_schema": {"name": "person", "schema": {"type": "object"}, "strict": true}}, "verbosity": "low"}),
        );
        assert_eq!(
            out["text"],
            json!({"format": {"type": "json_schema", "name": "person", "schema": {"type": "object"}, "strict": true}, "verbosity": "low"})
        );
        let out =
            ok(json!({"model": "m", "messages": msgs, "response_format": {"type": "json_object"}}));
        assert_eq!(out["text"]["format"], json!({"type": "json_object"}));
        let out = ok(json!({"model": "m", "messages": msgs, "response_format": {"type": "text"}}));
        assert_eq!(out["text"]["format"], json!({"type": "text"}));

        let out = ok(
            json!({"model": "m", "messages": msgs, "max_tokens": 10, "max_completion_tokens": 20,
            "reasoning_effort": "high", "temperature": 0.5, "top_p": 0.9, "user": "u1", "metadata": {"k": "v"}}),
        );
        assert_eq!(out["max_output_tokens"], 20, "max_completion_tokens wins");
        assert_eq!(out["reasoning"], json!({"effort": "high"}));
        assert_eq!(
            (out["temperature"].as_f64(), out["top_p"].as_f64()),
            (Some(0.5), Some(0.9))
        );
        assert_eq!(
            (&out["user"], &out["metadata"]),
            (&json!("u1"), &json!({"k": "v"}))
        );
        assert_eq!(
            ok(json!({"model": "m", "messages": msgs, "max_tokens": 10}))["max_output_tokens"],
            10
        );
        assert_eq!(
            refused(
                json!({"model": "m", "messages": msgs, "response_format": {"type": "json_schema"}})
            )
            .1,
            "response_format.json_schema"
        );
    }

    #[test]
    fn streaming_options() {
        let msgs = json!([{"role": "user", "content": "x"}]);
        let (body, o) = tr(json!({"model": "m", "messages": msgs, "stream": true, "stream_options": {"include_usage": true}})).unwrap();
        assert_eq!(body["stream"], true);
        assert!(body.get("stream_options").is_none());
        assert_eq!(
            o,
            ReplyOptions {
                stream: true,
                include_usage: true
            }
        );
        let (_, o) =
            tr(json!({"model": "m", "messages": msgs, "stream_options": {"include_usage": true}}))
                .unwrap();
        assert_eq!(
            o,
            ReplyOptions {
                stream: false,
                include_usage: false
            }
        );
    }

    #[test]
    fn untranslatable_parameters_are_refused_not_dropped() {
        let msgs = json!([{"role": "user", "content": "x"}]);
        for (k, v) in [
            ("n", json!(2)),
            ("logprobs", json!(true)),
            ("top_logprobs", json!(3)),
            ("stop", json!(["\n"])),
            ("seed", json!(7)),
            ("frequency_penalty", json!(0.5)),
            ("logit_bias", json!({"50256": -100})),
            ("audio", json!({"voice": "alloy"})),
            ("modalities", json!(["text", "audio"])),
            ("functions", json!([])),
            ("web_search_options", json!({})),
            ("unheard_of", json!(1)),
        ] {
            let mut body = json!({"model": "m", "messages": msgs});
            body[k] = v;
            let (status, param, msg) = refused(body);
            assert_eq!((status, param.as_str()), (400, k), "{k}: {msg}");
            assert!(
                msg.starts_with(&format!("Unsupported parameter: '{k}'")),
                "{msg}"
            );
        }
        // Defaults (and nulls) ask for nothing and pass.
        ok(
            json!({"model": "m", "messages": msgs, "n": 1, "logprobs": false, "stop": null,
            "presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {}, "modalities": ["text"], "seed": null}),
        );
    }

    #[test]
    fn malformed_messages() {
        assert_eq!(refused(json!({"model": "m"})).2, "messages is required");
        assert_eq!(
            refused(json!({"model": "m", "messages": []})).2,
            "messages must be a non-empty array"
        );
        assert_eq!(
            refused(json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]})).1,
            "messages[0].role"
        );
        assert_eq!(
            refused(json!({"model": "m", "messages": [{"role": "user"}]})).1,
            "messages[0].content"
        );
        assert_eq!(
            refused(json!({"model": "m", "messages": [{"role": "user", "content": 5}]})).1,
            "messages[0].content"
        );
        assert_eq!(refused(json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]})).1, "messages[0].role");
        let (_, param, _) = refused(
            json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]}),
        );
        assert_eq!(param, "messages[0].tool_calls[0]");
    }
}

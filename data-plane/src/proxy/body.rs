//! Reading and validating the Responses request body (responses-flow.md §2), and
//! recognising Codex CLI.

use http::HeaderMap;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tollgate_shared::ErrorCode;

use super::errors::ClientError;

fn bad(msg: impl Into<String>) -> ClientError {
    ClientError::new(ErrorCode::InvalidRequest, msg)
}

/// "100MB" for whole MiB limits, bytes below 1 MiB.
pub fn limit_text(limit: usize) -> String {
    if limit >= 1 << 20 {
        format!("{}MB", limit >> 20)
    } else {
        format!("{limit} bytes")
    }
}

/// A parsed, validated request body.
#[derive(Debug, Clone)]
pub struct RequestBody {
    pub json: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    pub raw_len: usize,
}

pub fn parse(raw: &[u8]) -> Result<RequestBody, ClientError> {
    if raw.is_empty() {
        return Err(bad("Request body is empty"));
    }
    let Ok(Value::Object(json)) = serde_json::from_slice::<Value>(raw) else {
        return Err(bad("Failed to parse request body"));
    };
    let model = match json.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.trim().to_owned(),
        _ => return Err(bad("model is required")),
    };
    check_model(&model)?;
    let stream = match json.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("invalid stream field type")),
    };
    check_tool_continuation(&json)?;
    Ok(RequestBody {
        json,
        model,
        stream,
        raw_len: raw.len(),
    })
}

/// Longest `model` accepted, bytes. Real model names are far shorter; the control plane
/// stores at most 256 bytes, so a name that passes here can always be billed.
pub const MODEL_MAX_BYTES: usize = 128;

/// `model` is a name, never free text: bounded, printable ASCII without spaces, so that
/// it can be priced, stored with its usage record and logged as it is.
fn check_model(model: &str) -> Result<(), ClientError> {
    if model.len() > MODEL_MAX_BYTES {
        return Err(bad(format!(
            "model must be at most {MODEL_MAX_BYTES} bytes, got {}",
            model.len()
        )));
    }
    if !model.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "model must contain only printable ASCII characters (no spaces or control characters)",
        ));
    }
    Ok(())
}

fn non_blank(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str)
        .is_some_and(|s| !s.trim().is_empty())
}

fn item_type(item: &Value) -> &str {
    item.get("type").and_then(Value::as_str).unwrap_or("")
}

/// The function_call_output rules of the spec, only when `input` holds such an item.
fn check_tool_continuation(json: &Map<String, Value>) -> Result<(), ClientError> {
    let Some(Value::Array(items)) = json.get("input") else {
        return Ok(());
    };
    let outputs: Vec<&Value> = items
        .iter()
        .filter(|i| item_type(i) == "function_call_output")
        .collect();
    if outputs.is_empty() || non_blank(json.get("previous_response_id")) {
        return Ok(());
    }
    let has_call_context = items.iter().any(|i| {
        matches!(item_type(i), "function_call" | "tool_call") && non_blank(i.get("call_id"))
    });
    if has_call_context {
        return Ok(());
    }
    if outputs.iter().any(|o| !non_blank(o.get("call_id"))) {
        return Err(bad(
            "function_call_output requires call_id or previous_response_id; if relying on history, ensure store=true and reuse previous_response_id",
        ));
    }
    let reference_ids: Vec<&str> = items
        .iter()
        .filter(|i| item_type(i) == "item_reference")
        .filter_map(|i| i.get("id").and_then(Value::as_str))
        .collect();
    let all_referenced = outputs
        .iter()
        .filter_map(|o| o.get("call_id").and_then(Value::as_str))
        .all(|id| reference_ids.contains(&id));
    if all_referenced {
        Ok(())
    } else {
        Err(bad(
            "function_call_output requires item_reference ids matching each call_id, or previous_response_id/tool_call context; if relying on history, ensure store=true and reuse previous_response_id",
        ))
    }
}

/// Codex CLI: `originator` starting with `codex`, or a User-Agent `codex_*/<ver>` or
/// `codex-*/<ver>` (case-insensitive).
pub fn is_codex_cli(headers: &HeaderMap) -> bool {
    // Lossy: a User-Agent may carry non-ASCII bytes after the product token.
    let get = |n: &str| {
        headers
            .get(n)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase())
    };
    if get("originator").is_some_and(|o| o.trim().starts_with("codex")) {
        return true;
    }
    get("user-agent").is_some_and(|ua| {
        let product = ua.split_whitespace().next().unwrap_or("");
        (product.starts_with("codex_") || product.starts_with("codex-")) && product.contains('/')
    })
}

/// Inserts the default instructions into a request that has none (or blank ones): for
/// non-Codex clients on subscription accounts only.
pub fn ensure_instructions(json: &mut Map<String, Value>, default: &str) {
    let blank = json
        .get("instructions")
        .is_none_or(|v| v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty()));
    if blank {
        json.insert("instructions".into(), Value::String(default.to_owned()));
    }
}

/// Stickiness: header `session_id`/`session-id`, then `conversation_id`/`conversation-id`,
/// then body `prompt_cache_key`; SHA-256 lower-case hex; `None` = no stickiness.
pub fn session_hash(headers: &HeaderMap, json: &Map<String, Value>) -> Option<String> {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let source = header("session_id")
        .or_else(|| header("session-id"))
        .or_else(|| header("conversation_id"))
        .or_else(|| header("conversation-id"))
        .map(str::to_owned)
        .or_else(|| {
            json.get("prompt_cache_key")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })?;
    Some(hex::encode(Sha256::digest(source.as_bytes())))
}

pub fn reasoning_effort(json: &Map<String, Value>) -> String {
    json.get("reasoning")
        .and_then(|r| r.get("effort"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(raw: &str) -> String {
        parse(raw.as_bytes()).unwrap_err().message
    }

    #[test]
    fn body_errors() {
        assert_eq!(msg(""), "Request body is empty");
        assert_eq!(msg("[1]"), "Failed to parse request body");
        assert_eq!(msg("{"), "Failed to parse request body");
        assert_eq!(msg(r#"{"model":"  "}"#), "model is required");
        assert_eq!(msg(r#"{"input":"x"}"#), "model is required");
        assert_eq!(
            msg(r#"{"model":"m","stream":"yes"}"#),
            "invalid stream field type"
        );
        assert_eq!(
            msg(&format!(
                r#"{{"model":"{}"}}"#,
                "m".repeat(MODEL_MAX_BYTES + 1)
            )),
            "model must be at most 128 bytes, got 129"
        );
        let printable =
            "model must contain only printable ASCII characters (no spaces or control characters)";
        assert_eq!(msg(r#"{"model":"gpt-5\u0000"}"#), printable);
        assert_eq!(msg(r#"{"model":"gpt\u001b[31m-5"}"#), printable);
        assert_eq!(msg(r#"{"model":"gpt 5"}"#), printable);
        assert_eq!(msg(r#"{"model":"gpt-5\u200b"}"#), printable);
        let longest = "m".repeat(MODEL_MAX_BYTES);
        assert!(parse(format!(r#"{{"model":"{longest}"}}"#).as_bytes()).is_ok());
        assert!(parse(br#"{"model":"ft:gpt-4o-mini-2024-07-18:org:custom:abc123"}"#).is_ok());
        let ok = parse(br#"{"model":"gpt-5","stream":true}"#).unwrap();
        assert!(ok.stream);
        assert_eq!(ok.model, "gpt-5");
    }

    #[test]
    fn tool_continuation_rules() {
        let body = |input: Value, extra: Value| {
            let mut v = json!({"model": "m", "input": input});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            parse(v.to_string().as_bytes())
                .map(|_| ())
                .map_err(|e| e.message)
        };
        let out = json!({"type": "function_call_output", "call_id": "c1", "output": "x"});
        assert!(body(json!([out]), json!({"previous_response_id": "resp_1"})).is_ok());
        assert!(
            body(
                json!([{"type": "function_call", "call_id": "c1"}, out]),
                json!({})
            )
            .is_ok()
        );
        assert!(
            body(
                json!([{"type": "item_reference", "id": "c1"}, out]),
                json!({})
            )
            .is_ok()
        );
        let e = body(json!([out]), json!({})).unwrap_err();
        assert!(
            e.starts_with("function_call_output requires item_reference ids"),
            "{e}"
        );
        let e = body(
            json!([{"type": "function_call_output", "output": "x"}]),
            json!({}),
        )
        .unwrap_err();
        assert!(
            e.starts_with("function_call_output requires call_id"),
            "{e}"
        );
    }

    #[test]
    fn codex_detection() {
        let h = |k: &str, v: &str| {
            let mut m = HeaderMap::new();
            m.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
            m
        };
        assert!(is_codex_cli(&h("originator", "codex_exec")));
        assert!(is_codex_cli(&h("originator", "Codex-TUI")));
        assert!(is_codex_cli(&h(
            "user-agent",
            "codex_exec/0.169.0 (Debian 12.0.0; x86_64) xterm (codex_exec; 0.169.0)"
        )));
        assert!(is_codex_cli(&h("user-agent", "codex-tui/0.169.0 (…)")));
        assert!(!is_codex_cli(&h("user-agent", "OpenAI/Python 1.99.0")));
        assert!(!is_codex_cli(&h("user-agent", "codexfoo")));
    }

    #[test]
    fn session_hash_sources() {
        let mut h = HeaderMap::new();
        let body = json!({"prompt_cache_key": "pck"})
            .as_object()
            .unwrap()
            .clone();
        let from_body = session_hash(&h, &body).unwrap();
        h.insert("session-id", "thread-1".parse().unwrap());
        let from_header = session_hash(&h, &body).unwrap();
        assert_ne!(from_body, from_header);
        assert_eq!(from_header.len(), 64);
        assert!(session_hash(&HeaderMap::new(), &Map::new()).is_none());
    }

    #[test]
    fn limit_text_forms() {
        assert_eq!(limit_text(100 << 20), "100MB");
        assert_eq!(limit_text(1000), "1000 bytes");
    }
}

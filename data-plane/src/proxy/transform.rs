//! What goes upstream: the body transformations and header rules of accounts.md, per
//! account kind. Pure functions over the parsed body and the client's headers.

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

/// Client headers forwarded upstream; nothing else is (no authorization, cookies, …).
const FORWARDED: &[&str] = &[
    "accept-language",
    "content-type",
    "conversation_id",
    "session_id",
    "session-id",
    "thread-id",
    "x-client-request-id",
    "user-agent",
    "originator",
    "x-codex-turn-metadata",
    "x-codex-window-id",
    "x-codex-beta-features",
];

/// The rules differ by the kind of account the lease is for.
pub use tollgate_shared::domain::AccountKind as Kind;

pub struct Target<'a> {
    pub kind: Kind,
    pub model_mapping: &'a HashMap<String, String>,
    pub codex_client: bool,
    pub default_codex_model: &'a str,
}

// One implementation for both planes: the control plane prices this very name.
pub use tollgate_shared::served_model::{normalize_codex_model, strip_date_suffix};

/// Fields only Codex CLI may send (other clients' are dropped for the upstream).
const NOT_FOR_OTHER_CLIENTS: [&str; 4] = [
    "max_output_tokens",
    "max_completion_tokens",
    "prompt_cache_retention",
    "safety_identifier",
];

fn has_minimal_effort(reasoning: &Map<String, Value>) -> bool {
    reasoning.get("effort").and_then(Value::as_str) == Some("minimal")
}

/// The model name sent upstream when [`body`] would leave `json` exactly as it is (an
/// API-key account, no mapping for the model, nothing to drop or rewrite): the caller
/// then encodes the client's body without copying it. `None` when `body` must run.
pub fn untouched(
    json: &Map<String, Value>,
    requested_model: &str,
    t: &Target<'_>,
) -> Option<String> {
    let unchanged = t.kind != Kind::OAuth
        && !t.model_mapping.contains_key(requested_model)
        && json.get("model").and_then(Value::as_str) == Some(requested_model)
        && !matches!(json.get("reasoning"), Some(Value::Object(r)) if has_minimal_effort(r))
        && (t.codex_client || !NOT_FOR_OTHER_CLIENTS.iter().any(|k| json.contains_key(*k)));
    unchanged.then(|| requested_model.to_owned())
}

/// Applies the body rules; returns the model name sent upstream.
pub fn body(json: &mut Map<String, Value>, requested_model: &str, t: &Target<'_>) -> String {
    let mut model = t
        .model_mapping
        .get(requested_model)
        .cloned()
        .unwrap_or_else(|| requested_model.to_owned());
    if let Some(Value::Object(reasoning)) = json.get_mut("reasoning")
        && has_minimal_effort(reasoning)
    {
        reasoning.insert("effort".into(), Value::String("none".into()));
    }
    if !t.codex_client {
        for k in NOT_FOR_OTHER_CLIENTS {
            json.remove(k);
        }
    }
    if t.kind == Kind::OAuth {
        json.insert("store".into(), Value::Bool(false));
        json.insert("stream".into(), Value::Bool(true));
        for k in [
            "max_output_tokens",
            "max_completion_tokens",
            "temperature",
            "top_p",
            "frequency_penalty",
            "presence_penalty",
        ] {
            json.remove(k);
        }
        model = normalize_codex_model(&model, t.default_codex_model);
        flatten_tools(json);
        fix_input_items(json);
    }
    json.insert("model".into(), Value::String(model.clone()));
    model
}

/// Chat-Completions style function tools → Responses style; unusable ones dropped.
fn flatten_tools(json: &mut Map<String, Value>) {
    let Some(Value::Array(tools)) = json.get_mut("tools") else {
        return;
    };
    let flattened: Vec<Value> = tools
        .drain(..)
        .filter_map(|tool| {
            if tool.get("type").and_then(Value::as_str) != Some("function") {
                return Some(tool);
            }
            if tool
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty())
            {
                return Some(tool);
            }
            let f = tool.get("function")?.as_object()?;
            let name = f.get("name")?.as_str().filter(|n| !n.is_empty())?;
            let mut out = Map::new();
            out.insert("type".into(), Value::String("function".into()));
            out.insert("name".into(), Value::String(name.to_owned()));
            for k in ["description", "parameters", "strict"] {
                if let Some(v) = f.get(k) {
                    out.insert(k.into(), v.clone());
                }
            }
            Some(Value::Object(out))
        })
        .collect();
    *tools = flattened;
}

fn is_tool_continuation(json: &Map<String, Value>) -> bool {
    let has = |k: &str| json.get(k).is_some_and(|v| !v.is_null());
    if has("previous_response_id") || has("tools") || has("tool_choice") {
        return true;
    }
    matches!(json.get("input"), Some(Value::Array(items)) if items.iter().any(|i| {
        matches!(i.get("type").and_then(Value::as_str), Some("function_call_output" | "item_reference"))
    }))
}

fn fix_input_items(json: &mut Map<String, Value>) {
    let continuation = is_tool_continuation(json);
    let Some(Value::Array(items)) = json.get_mut("input") else {
        return;
    };
    for item in items.iter_mut() {
        let Some(obj) = item.as_object_mut() else {
            continue;
        };
        let ty = obj.get("type").and_then(Value::as_str).unwrap_or("");
        let is_call = ty.ends_with("_call") || ty.ends_with("_call_output");
        if is_call
            && obj.get("call_id").is_none_or(Value::is_null)
            && let Some(id) = obj.get("id").cloned()
        {
            obj.insert("call_id".into(), id);
        }
    }
    if !continuation {
        items.retain(|i| i.get("type").and_then(Value::as_str) != Some("item_reference"));
        for item in items.iter_mut() {
            if let Some(obj) = item.as_object_mut() {
                obj.remove("id");
            }
        }
    }
}

/// Headers for the upstream request (without the auth header, which the caller adds).
pub fn headers(
    client: &HeaderMap,
    kind: Kind,
    user_agent_override: &str,
    codex_client: bool,
    default_originator: &str,
    prompt_cache_key: Option<&str>,
) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in FORWARDED {
        if let Some(v) = client.get(*name) {
            out.insert(HeaderName::from_static(name), v.clone());
        }
    }
    out.entry(http::header::CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/json"));
    if !user_agent_override.is_empty()
        && let Ok(v) = HeaderValue::from_str(user_agent_override)
    {
        out.insert(http::header::USER_AGENT, v);
    }
    if kind == Kind::OAuth {
        out.insert(
            "openai-beta",
            HeaderValue::from_static("responses=experimental"),
        );
        if (!codex_client || !out.contains_key("originator"))
            && let Ok(v) = HeaderValue::from_str(default_originator)
        {
            out.insert("originator", v);
        }
        out.insert(
            http::header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        if let Some(Ok(v)) = prompt_cache_key.map(HeaderValue::from_str) {
            out.insert(HeaderName::from_static("conversation_id"), v.clone());
            out.insert(HeaderName::from_static("session_id"), v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target(kind: Kind, mapping: &HashMap<String, String>, codex: bool) -> Target<'_> {
        Target {
            kind,
            model_mapping: mapping,
            codex_client: codex,
            default_codex_model: "gpt-5.1-codex",
        }
    }

    /// `untouched` says "no change" exactly when `body` changes nothing.
    #[test]
    fn untouched_agrees_with_body() {
        let mapping = HashMap::from([("alias".to_owned(), "gpt-5.1".to_owned())]);
        let cases = [
            json!({"model": "gpt-5.1", "input": "hi", "stream": true}),
            json!({"model": "gpt-5.1", "reasoning": {"effort": "high"}, "temperature": 1}),
            json!({"model": "gpt-5.1", "reasoning": {"effort": "minimal"}}),
            json!({"model": "gpt-5.1", "max_output_tokens": 5}),
            json!({"model": "gpt-5.1", "safety_identifier": "x"}),
            json!({"model": "alias", "input": "hi"}),
            json!({"model": " gpt-5.1 ", "input": "hi"}),
            json!({"model": "gpt-5.1", "tools": [{"type": "function", "function": {"name": "f"}}]}),
        ];
        for case in cases {
            let requested = case["model"].as_str().unwrap().trim().to_owned();
            for kind in [Kind::ApiKey, Kind::OAuth] {
                for codex in [false, true] {
                    let t = target(kind, &mapping, codex);
                    let original = case.as_object().unwrap().clone();
                    let mut changed = original.clone();
                    let model = body(&mut changed, &requested, &t);
                    match untouched(&original, &requested, &t) {
                        Some(m) => {
                            assert_eq!(changed, original, "{case} {kind:?} codex={codex}");
                            assert_eq!(m, model);
                        }
                        None => assert!(
                            changed != original || kind == Kind::OAuth,
                            "needless copy for {case} {kind:?} codex={codex}"
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn api_key_account_body() {
        let mapping = HashMap::from([("alias".to_owned(), "gpt-5.1".to_owned())]);
        let mut b = json!({"model": "alias", "reasoning": {"effort": "minimal"}, "max_output_tokens": 5, "temperature": 0.2, "safety_identifier": "x"})
            .as_object().unwrap().clone();
        let m = body(&mut b, "alias", &target(Kind::ApiKey, &mapping, false));
        assert_eq!(m, "gpt-5.1");
        assert_eq!(b["model"], "gpt-5.1");
        assert_eq!(b["reasoning"]["effort"], "none");
        assert!(!b.contains_key("max_output_tokens") && !b.contains_key("safety_identifier"));
        assert_eq!(
            b["temperature"], 0.2,
            "API-key accounts keep sampling parameters"
        );
        // Codex clients keep their limits.
        let mut b = json!({"model": "gpt-5", "max_output_tokens": 5})
            .as_object()
            .unwrap()
            .clone();
        body(
            &mut b,
            "gpt-5",
            &target(Kind::ApiKey, &HashMap::new(), true),
        );
        assert_eq!(b["max_output_tokens"], 5);
    }

    #[test]
    fn oauth_account_body() {
        let mut b = json!({
            "model": "gpt-5.1-codex-high", "stream": false, "store": true, "temperature": 1, "top_p": 1,
            "tools": [
                {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}},
                {"type": "function", "function": {}},
                {"type": "web_search"}
            ],
            "input": [{"type": "function_call", "id": "fc_1", "name": "f", "arguments": "{}"}]
        }).as_object().unwrap().clone();
        let m = body(
            &mut b,
            "gpt-5.1-codex-high",
            &target(Kind::OAuth, &HashMap::new(), false),
        );
        assert_eq!(m, "gpt-5.1-codex");
        assert_eq!(b["stream"], true);
        assert_eq!(b["store"], false);
        assert!(!b.contains_key("temperature") && !b.contains_key("top_p"));
        let tools = b["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 2);
        assert_eq!(
            tools[0],
            json!({"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}})
        );
        // A tool continuation keeps ids, and calls get call_id from id.
        assert_eq!(b["input"][0]["call_id"], "fc_1");
        assert_eq!(b["input"][0]["id"], "fc_1");
    }

    #[test]
    fn oauth_plain_input_drops_references_and_ids() {
        let mut b = json!({"model": "weird-model", "input": [
            {"type": "message", "id": "msg_1", "role": "user", "content": "hi"},
            {"type": "item_reference", "id": "x"}
        ]})
        .as_object()
        .unwrap()
        .clone();
        // No tools / previous_response_id: but item_reference makes it a continuation.
        body(
            &mut b,
            "weird-model",
            &target(Kind::OAuth, &HashMap::new(), false),
        );
        assert_eq!(b["model"], "gpt-5.1-codex", "unknown → configured default");
        let mut b = json!({"model": "gpt-5.2", "input": [{"type": "message", "id": "msg_1", "role": "user", "content": "hi"}]})
            .as_object().unwrap().clone();
        body(
            &mut b,
            "gpt-5.2",
            &target(Kind::OAuth, &HashMap::new(), false),
        );
        assert!(b["input"][0].get("id").is_none());
    }

    #[test]
    fn date_suffixes() {
        assert_eq!(strip_date_suffix("gpt-5-20250807"), "gpt-5");
        assert_eq!(strip_date_suffix("gpt-5.1-2025-11-13"), "gpt-5.1");
        assert_eq!(strip_date_suffix("gpt-5"), "gpt-5");
    }

    #[test]
    fn header_rules() {
        let mut client = HeaderMap::new();
        client.insert("authorization", "Bearer sk-client".parse().unwrap());
        client.insert("cookie", "a=b".parse().unwrap());
        client.insert("session-id", "t1".parse().unwrap());
        client.insert("user-agent", "codex_exec/0.169.0".parse().unwrap());
        client.insert("originator", "codex_exec".parse().unwrap());
        let h = headers(&client, Kind::ApiKey, "", true, "codex_cli_rs", None);
        assert!(h.get("authorization").is_none() && h.get("cookie").is_none());
        assert_eq!(h["session-id"], "t1");
        assert_eq!(h["content-type"], "application/json");
        let h = headers(
            &client,
            Kind::OAuth,
            "my-agent",
            true,
            "codex_cli_rs",
            Some("pck"),
        );
        assert_eq!(h["originator"], "codex_exec");
        assert_eq!(h["user-agent"], "my-agent");
        assert_eq!(h["accept"], "text/event-stream");
        assert_eq!(h["openai-beta"], "responses=experimental");
        assert_eq!(h["session_id"], "pck");
        let h = headers(&client, Kind::OAuth, "", false, "codex_cli_rs", None);
        assert_eq!(h["originator"], "codex_cli_rs");
    }
}

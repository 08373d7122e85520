//! Stored responses, as OpenAI keeps them: a response belongs to the credential (the
//! organisation) that created it. `previous_response_id` naming a response of another
//! credential, or one never created, gets OpenAI's 404; so do retrieve, delete, cancel
//! and input items (`/v1/responses/{id}[/cancel|/input_items]`) of a foreign id.

use std::collections::HashMap;

use http::Method;
use serde_json::{Value, json};

use super::record::Received;

/// One stored response.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    bearer: Option<String>,
    model: String,
    input: Value,
    status: &'static str,
}

#[derive(Debug, Default)]
pub(crate) struct StoredResponses {
    by_id: HashMap<String, Stored>,
}

/// An operation on a stored response, by method and the path after `/responses/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Retrieve,
    Delete,
    Cancel,
    InputItems,
}

impl Operation {
    /// The operation and response id of a request, if it is one.
    pub(crate) fn of(method: &Method, path: &str) -> Option<(Self, String)> {
        let (_, rest) = path.split_once("/responses/")?;
        let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let op = match (method, tail) {
            (&Method::GET, "") => Self::Retrieve,
            (&Method::DELETE, "") => Self::Delete,
            (&Method::POST, "cancel") => Self::Cancel,
            (&Method::GET, "input_items") => Self::InputItems,
            _ => return None,
        };
        (!id.is_empty()).then(|| (op, id.to_owned()))
    }
}

/// OpenAI's answer to an unknown or foreign previous response id.
pub(crate) fn previous_not_found(id: &str) -> String {
    json!({ "error": {
        "message": format!("Previous response with id '{id}' not found."),
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }})
    .to_string()
}

fn not_found(id: &str) -> String {
    json!({ "error": {
        "message": format!("Response with id '{id}' not found."),
        "type": "invalid_request_error",
        "param": null,
        "code": null,
    }})
    .to_string()
}

impl StoredResponses {
    /// `Err(body)` when the request continues a response this credential does not hold.
    pub(crate) fn check_previous(&self, rec: &Received) -> Result<(), String> {
        let Some(prev) = rec
            .body_json
            .get("previous_response_id")
            .and_then(Value::as_str)
        else {
            return Ok(());
        };
        match self.by_id.get(prev) {
            Some(s) if s.bearer == rec.bearer => Ok(()),
            _ => Err(previous_not_found(prev)),
        }
    }

    /// Keeps the response a request created (unless it asked for `store: false`).
    pub(crate) fn keep(&mut self, rec: &Received, response_id: String, model: &str) {
        if rec.body_json.get("store").and_then(Value::as_bool) == Some(false) {
            return;
        }
        self.by_id.insert(
            response_id,
            Stored {
                bearer: rec.bearer.clone(),
                model: model.to_owned(),
                input: rec.body_json.get("input").cloned().unwrap_or(Value::Null),
                status: "completed",
            },
        );
    }

    /// The answer (status, JSON body) to an operation.
    pub(crate) fn operate(
        &mut self,
        op: Operation,
        id: &str,
        bearer: Option<&str>,
    ) -> (u16, String) {
        let Some(s) = self
            .by_id
            .get_mut(id)
            .filter(|s| s.bearer.as_deref() == bearer)
        else {
            return (404, not_found(id));
        };
        let body = match op {
            Operation::Retrieve => object(id, s),
            Operation::Cancel => {
                s.status = "cancelled";
                object(id, s)
            }
            Operation::InputItems => {
                let items: Vec<Value> = match &s.input {
                    Value::Array(items) => items.clone(),
                    Value::String(text) => vec![json!({
                        "type": "message", "role": "user",
                        "content": [{ "type": "input_text", "text": text }],
                    })],
                    _ => Vec::new(),
                };
                json!({ "object": "list", "data": items, "has_more": false })
            }
            Operation::Delete => {
                self.by_id.remove(id);
                json!({ "id": id, "object": "response.deleted", "deleted": true })
            }
        };
        (200, body.to_string())
    }
}

fn object(id: &str, s: &Stored) -> Value {
    json!({ "id": id, "object": "response", "status": s.status, "model": s.model, "output": [] })
}

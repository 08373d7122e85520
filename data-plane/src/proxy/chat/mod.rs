//! `POST /v1/chat/completions`: an edge adapter around the Responses flow. The request
//! body is translated to the equivalent Responses body before the flow sees it (so auth,
//! admission, failover and billing are the Responses flow's, unchanged), and the answer
//! is translated back as it leaves: a `chat.completion` object, or `chat.completion.chunk`
//! events ending in `data: [DONE]`. Works on both account kinds, since both speak
//! Responses.

pub mod request;
pub mod response;
pub mod stream;

use bytes::Bytes;
use serde_json::{Map, Value};
use tollgate_shared::ErrorCode;

use super::body::{self, RequestBody};
use super::errors::ClientError;

/// Which API the client speaks; the flow behind it is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    Responses,
    ChatCompletions,
}

impl Front {
    /// The validated Responses request, and for chat clients how to shape the answer.
    pub fn parse(self, raw: &[u8]) -> Result<(RequestBody, Option<Reply>), ClientError> {
        match self {
            Self::Responses => Ok((body::parse(raw)?, None)),
            Self::ChatCompletions => {
                let (body, options) = parse_chat(raw)?;
                Ok((body, Some(Reply::new(options))))
            }
        }
    }
}

/// A Chat Completions body → the equivalent Responses body, validated exactly as if the
/// client had sent that (its size is what an estimate would count).
fn parse_chat(raw: &[u8]) -> Result<(RequestBody, request::ReplyOptions), ClientError> {
    if raw.is_empty() {
        return body::parse(raw).map(|b| (b, request::ReplyOptions::default()));
    }
    let Ok(Value::Object(chat)) = serde_json::from_slice::<Value>(raw) else {
        return Err(ClientError::new(
            ErrorCode::InvalidRequest,
            "Failed to parse request body",
        ));
    };
    if chat
        .get("stream")
        .is_some_and(|s| !s.is_null() && !s.is_boolean())
    {
        return Err(ClientError::new(
            ErrorCode::InvalidRequest,
            "invalid stream field type",
        ));
    }
    let (responses, options) = request::translate(&chat)?;
    let encoded = serde_json::to_vec(&responses).map_err(|_| {
        ClientError::new(
            ErrorCode::Internal,
            "Failed to encode the translated request",
        )
    })?;
    Ok((body::parse(&encoded)?, options))
}

/// How the answer goes back to a chat client: the stream's translation state, and the
/// final-object conversion.
#[derive(Debug)]
pub struct Reply {
    chunks: stream::Chunks,
}

impl Reply {
    pub fn new(options: request::ReplyOptions) -> Self {
        Self {
            chunks: stream::Chunks::new(options.include_usage),
        }
    }

    /// The chat chunks for one upstream Responses event.
    pub fn events(&mut self, raw: &[u8]) -> Vec<Bytes> {
        self.chunks.translate(raw)
    }

    /// The `chat.completion` for a final Responses object.
    pub fn completion(&self, response: &Value) -> Result<Value, ClientError> {
        response::completion(response)
    }
}

/// A 400 for a malformed value, naming the parameter.
pub(crate) fn invalid(param: &str, message: &str) -> ClientError {
    with_param(param, message, None)
}

/// A 400 for something the Responses API cannot express, naming the parameter.
pub(crate) fn unsupported(param: &str, message: &str) -> ClientError {
    with_param(param, message, Some("unsupported_parameter"))
}

fn with_param(param: &str, message: &str, code: Option<&str>) -> ClientError {
    let mut e = ClientError::new(ErrorCode::InvalidRequest, message);
    let mut obj = Map::new();
    obj.insert("type".into(), "invalid_request_error".into());
    if let Some(c) = code {
        obj.insert("code".into(), c.into());
    }
    obj.insert("message".into(), message.into());
    obj.insert("param".into(), param.into());
    e.error_object = Some(obj);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(raw: &str) -> String {
        Front::ChatCompletions
            .parse(raw.as_bytes())
            .unwrap_err()
            .message
    }

    #[test]
    fn the_body_checks_are_the_responses_flows() {
        assert_eq!(refused(""), "Request body is empty");
        assert_eq!(refused("[1]"), "Failed to parse request body");
        assert_eq!(
            refused(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#),
            "invalid stream field type"
        );
        assert_eq!(
            refused(r#"{"messages":[{"role":"user","content":"x"}]}"#),
            "model is required"
        );
        assert_eq!(
            refused(r#"{"model":"gpt 5","messages":[{"role":"user","content":"x"}]}"#),
            "model must contain only printable ASCII characters (no spaces or control characters)"
        );
        let (body, reply) = Front::ChatCompletions
            .parse(br#"{"model":" gpt-5.1 ","messages":[{"role":"user","content":"x"}],"stream":true}"#)
            .unwrap();
        assert_eq!((body.model.as_str(), body.stream), ("gpt-5.1", true));
        assert!(body.json.contains_key("input") && !body.json.contains_key("messages"));
        assert!(reply.is_some());
        let (_, reply) = Front::Responses
            .parse(br#"{"model":"m","input":"x"}"#)
            .unwrap();
        assert!(
            reply.is_none(),
            "Responses clients get the upstream's bytes"
        );
    }

    #[test]
    fn refusals_name_the_parameter() {
        let e = unsupported("n", "Unsupported parameter: 'n'");
        assert_eq!(e.status().as_u16(), 400);
        assert_eq!(
            e.body_json(),
            serde_json::json!({"error": {"type": "invalid_request_error", "code": "unsupported_parameter",
                "message": "Unsupported parameter: 'n'", "param": "n"}})
        );
        assert!(
            invalid("messages", "m").body_json()["error"]
                .get("code")
                .is_none()
        );
    }
}

//! `GET /v1/models`: the models the key may use — its group's mapped models, or the
//! default list — in the OpenAI list shape.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::responses::Flow;
use crate::http_server::Body;

const DEFAULT_MODELS: &[&str] = &[
    "gpt-5",
    "gpt-5-mini",
    "gpt-5.1",
    "gpt-5.1-codex",
    "gpt-5.1-codex-max",
    "gpt-5.1-codex-mini",
    "gpt-5.2",
];

pub async fn handle(flow: &Flow, req: &Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let (key, _) = match flow
        .authenticate(req.uri().query(), req.headers(), peer)
        .await
    {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let models: Vec<String> = match key.group.as_ref().map(|g| &g.models) {
        Some(m) if !m.is_empty() => m.clone(),
        _ => DEFAULT_MODELS.iter().map(|m| (*m).to_owned()).collect(),
    };
    let data: Vec<serde_json::Value> = models
        .iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "openai"}))
        .collect();
    let body = serde_json::json!({"object": "list", "data": data}).to_string();
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

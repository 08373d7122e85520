//! The client side of one request. Before the response is committed an error is a JSON
//! response with its status; once committed (first SSE ping or first upstream byte) it
//! is an SSE `error` event and the status stays 200. Knows when the client has gone.
//! For a Chat Completions client it also shapes the answer (`chat::Reply`): upstream
//! events become chat chunks, a final response a `chat.completion`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::http_server::Body;
use crate::proxy::chat::Reply;
use crate::proxy::errors::ClientError;

pub const PING: &[u8] = b":\n\n";

pub struct Downstream {
    head: Option<oneshot::Sender<Response<Body>>>,
    /// Plain `Bytes` rather than body frames: a channel allocates its slots in blocks of
    /// 32, and a `Frame` (room for trailers) is about three times the size of its `Bytes`, for
    /// every open stream.
    tx: Option<mpsc::Sender<Bytes>>,
    gone: bool,
    /// `Some` for a Chat Completions client.
    chat: Option<Reply>,
}

impl Downstream {
    pub fn new(head: oneshot::Sender<Response<Body>>) -> Self {
        Self {
            head: Some(head),
            tx: None,
            gone: false,
            chat: None,
        }
    }

    /// Answers in the Chat Completions shape when `reply` is set.
    pub fn reply_as(mut self, reply: Option<Reply>) -> Self {
        self.chat = reply;
        self
    }

    /// The client speaks the Responses API (it sees response ids; a chat client never
    /// does).
    pub fn speaks_responses(&self) -> bool {
        self.chat.is_none()
    }

    /// Relays one upstream event, translated for a chat client (possibly into no
    /// chunk at all); false once the client has gone.
    pub async fn send_event(&mut self, raw: Bytes) -> bool {
        let Some(chat) = &mut self.chat else {
            return self.send(raw).await;
        };
        for chunk in chat.events(&raw) {
            if !self.send(chunk).await {
                return false;
            }
        }
        !self.is_gone()
    }

    /// The final response object as this client reads it: as is, or the
    /// `chat.completion` (an error when the response failed).
    pub fn final_body(
        &self,
        response: serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        match &self.chat {
            None => Ok(response),
            Some(chat) => chat.completion(&response),
        }
    }

    pub fn committed(&self) -> bool {
        self.tx.is_some()
    }

    pub fn is_gone(&self) -> bool {
        self.gone || self.head.as_ref().is_some_and(oneshot::Sender::is_closed)
    }

    /// Sends a complete response (only possible before commit).
    pub fn respond(&mut self, resp: Response<Body>) {
        if let Some(h) = self.head.take()
            && h.send(resp).is_err()
        {
            self.gone = true;
        }
    }

    /// The error in the form the client can still receive.
    pub async fn fail(&mut self, err: ClientError) {
        if self.committed() {
            self.send(err.sse_event()).await;
        } else {
            self.respond(err.into_response());
        }
    }

    /// Commits status 200 with the SSE headers; later bytes are streamed.
    pub fn commit_sse(&mut self, request_id: Option<HeaderValue>) {
        if self.committed() {
            return;
        }
        let (tx, rx) = mpsc::channel::<Bytes>(32);
        let frames =
            ReceiverStream::new(rx).map(|b| Ok::<_, std::io::Error>(http_body::Frame::data(b)));
        let body = StreamBody::new(frames).boxed();
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::OK;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        // The upstream's id under its own name: `x-request-id` is the gateway's.
        if let Some(id) = request_id {
            h.insert(crate::request_id::UPSTREAM_HEADER, id);
        }
        self.tx = Some(tx);
        self.respond(resp);
    }

    /// Writes (and thereby flushes) one chunk; false once the client has gone.
    pub async fn send(&mut self, bytes: impl Into<Bytes>) -> bool {
        if self.gone {
            return false;
        }
        let Some(tx) = &self.tx else { return false };
        if tx.send(bytes.into()).await.is_err() {
            self.gone = true;
            return false;
        }
        true
    }

    /// Resolves when the client goes away (never, if it already has and we know).
    pub async fn closed(&mut self) {
        if let Some(tx) = &self.tx {
            tx.closed().await;
        } else if let Some(h) = &mut self.head {
            h.closed().await;
        } else {
            std::future::pending::<()>().await;
        }
        self.gone = true;
    }
}

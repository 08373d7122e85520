//! Request ids. Every request gets the gateway's own id (a UUIDv7) before anything else
//! runs: it is returned as `x-request-id` on every response — success, error, stream,
//! and the refusals made before admission (401, 404, 503) — it is the usage record's
//! `request_id`, and it is a field of the span every log line of the request is written
//! in. A client's own `x-request-id` is kept beside it (sanitised), never instead of it;
//! the upstream's is returned as `upstream-request-id`.

use std::convert::Infallible;

use http::{HeaderMap, HeaderValue, Request, Response};
use tower::Service;

/// The gateway's id, on every response.
pub const HEADER: &str = "x-request-id";
/// The upstream's own `x-request-id`, passed on under this name.
pub const UPSTREAM_HEADER: &str = "upstream-request-id";
/// Longest client request id kept (bytes); the rest is cut.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// The ids of one request, in its extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIds {
    /// The gateway's id.
    pub id: String,
    /// The client's `x-request-id`, sanitised; empty = none.
    pub client: String,
}

impl RequestIds {
    pub fn new(headers: &HeaderMap) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            client: headers
                .get(HEADER)
                .map(|v| sanitize(v.as_bytes()))
                .unwrap_or_default(),
        }
    }

    /// The ids a request was given by the layer (a fresh set for a request that did not
    /// pass it: only in-process callers).
    pub fn of<B>(req: &Request<B>) -> Self {
        req.extensions()
            .get::<Self>()
            .cloned()
            .unwrap_or_else(|| Self::new(req.headers()))
    }

    /// Like [`Self::of`], but moved out of the request's extensions rather than copied:
    /// for the handler, the last reader (the request span has been made by then).
    pub fn take<B>(req: &mut Request<B>) -> Self {
        req.extensions_mut()
            .remove::<Self>()
            .unwrap_or_else(|| Self::new(req.headers()))
    }
}

/// A client-supplied id as logs and the usage table may hold it: printable ASCII only
/// (anything else dropped), at most `MAX_CLIENT_ID_LEN` bytes, trimmed.
pub fn sanitize(raw: &[u8]) -> String {
    let kept: String = raw
        .iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .take(MAX_CLIENT_ID_LEN)
        .map(|b| char::from(*b))
        .collect();
    kept.trim().to_owned()
}

/// The outermost layer: gives the request its ids (in its extensions, for the request
/// span and the flow) and writes `x-request-id` on whatever response comes back.
#[derive(Clone)]
pub struct WithRequestId<S> {
    pub inner: S,
}

impl<S, B, RB> Service<Request<B>> for WithRequestId<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = Infallible> + Send,
    S::Future: Send + 'static,
    RB: 'static,
{
    type Response = Response<RB>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<RB>, Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let ids = RequestIds::new(req.headers());
        let header = HeaderValue::from_str(&ids.id).ok();
        // The request span below (`stack.rs`) reads them from here: one span per
        // request carries the gateway's, the client's and the trace's ids.
        req.extensions_mut().insert(ids);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            if let Some(v) = header {
                resp.headers_mut().insert(HEADER, v);
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_printable_and_bounded() {
        assert_eq!(sanitize(b"  abc-123  "), "abc-123");
        assert_eq!(sanitize(b"a\nb\x1b[31mc\x7f"), "ab[31mc");
        assert_eq!(sanitize("é-x".as_bytes()), "-x");
        assert_eq!(sanitize(&[b'z'; 500]).len(), MAX_CLIENT_ID_LEN);
    }

    #[test]
    fn every_request_gets_a_fresh_id_and_keeps_the_clients() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("client-1"));
        let a = RequestIds::new(&h);
        let b = RequestIds::new(&h);
        assert_ne!(a.id, b.id);
        assert_eq!(a.client, "client-1");
        assert!(uuid::Uuid::parse_str(&a.id).is_ok());
    }
}

//! The proxy's tower stack, built here and only here. Layers, outermost first; a request
//! passes them top to bottom, its response bottom to top.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tollgate_shared::ErrorCode;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::http_server::Body;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::proxy::errors::ClientError;

/// The client's socket address, put in each request's extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The stack around the proxy's routes.
pub fn proxy(
    proxy: Proxy,
    metrics: Arc<Metrics>,
    max_in_flight: usize,
) -> impl Service<
    Request<Incoming>,
    Response = Response<
        impl http_body::Body<Data = bytes::Bytes, Error: Into<BoxError>> + Send + 'static,
    >,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    // The routes: Responses flow, models, OpenAI-shaped 404 for the rest. The handler's
    // future is large (kilobytes: every step of the flow up to the spawned run); boxed
    // here, once, each layer above moves a pointer instead of copying it again.
    let routes = tower::service_fn(move |req: Request<Incoming>| {
        let proxy = proxy.clone();
        Box::pin(async move { Ok::<_, Infallible>(proxy.handle(req).await) })
    });
    layers(routes, metrics, max_in_flight)
}

/// The layers, generic over what they wrap (so tests can wrap a panicking service).
pub fn layers<S, B>(
    inner: S,
    metrics: Arc<Metrics>,
    max_in_flight: usize,
) -> impl Service<
    Request<B>,
    Response = Response<
        impl http_body::Body<Data = bytes::Bytes, Error: Into<BoxError>> + Send + 'static,
    >,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
{
    ServiceBuilder::new()
        // The request's ids (`request_id.rs`): given before anything else runs, and
        // `x-request-id` on every response below, refusals and rescues included.
        .layer(tower::layer::layer_fn(|inner| {
            crate::request_id::WithRequestId { inner }
        }))
        // A tracing span per request (method, path: never the query, which may hold a
        // key), closed with status and latency. It continues the client's `traceparent`
        // and carries the request ids and the trace id into every log line inside it:
        // the request's one span (`request_span`).
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        // Responses by route, status and error code: above the rescues, so load-shed
        // 503s and rescued panics are counted like every other answer.
        .layer(tower::layer::layer_fn(move |inner| Counted {
            inner,
            metrics: metrics.clone(),
        }))
        // Rescue a panic in any layer below: an OpenAI-shaped 500, and the connection lives.
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                tracing::error!("request handler panicked");
                ClientError::new(ErrorCode::Internal, "Internal error").into_response()
            },
        ))
        // Load shedding: past the in-flight limit refuse at once, with an OpenAI-shaped
        // 503, instead of queueing in memory (fair waiting happens in the control plane,
        // not here).
        .layer(tower::layer::layer_fn(move |inner| Shed {
            inner,
            permits: Arc::new(Semaphore::new(max_in_flight)),
        }))
        .service(inner)
}

/// The request's one span: every log line of the request is written in it, and it is the
/// data plane's span of the client's trace. ERROR level so that the span (and with it the
/// request's ids) is on every line the filter lets through, whatever its level.
fn request_span<B>(req: &Request<B>) -> tracing::Span {
    // Given by `WithRequestId` above; a fresh set only for a request that did not pass it.
    let fresh;
    let ids = match req.extensions().get::<crate::request_id::RequestIds>() {
        Some(ids) => ids,
        None => {
            fresh = crate::request_id::RequestIds::new(req.headers());
            &fresh
        }
    };
    let span = tracing::error_span!(
        "request",
        otel.name = %format_args!("{} {}", req.method(), req.uri().path()),
        otel.kind = "server",
        method = %req.method(),
        path = req.uri().path(),
        request_id = %ids.id,
        client_request_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    if !ids.client.is_empty() {
        span.record("client_request_id", ids.client.as_str());
    }
    tollgate_shared::telemetry::continue_trace(&span, req.headers());
    if let Some(id) = tollgate_shared::telemetry::trace_id(&span) {
        span.record("trace_id", id.as_str());
    }
    span
}

/// Counts responses by route, status and error code (route from the request's path, code
/// from the `ErrorCode` an error response carries in its extensions).
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> Service<Request<B>> for Counted<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = Infallible> + Send,
    S::Future: Send + 'static,
    RB: Send + 'static,
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

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let route = crate::proxy::route_name(req.method(), req.uri().path());
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let code = resp
                .extensions()
                .get::<ErrorCode>()
                .map_or("none", |c| c.name());
            metrics.count_request(route, resp.status().as_u16(), code);
            Ok(resp)
        })
    }
}

/// The in-flight limit: a request that finds no permit is answered with an OpenAI-shaped
/// 503 at once; one that gets a permit holds it until its response (head) is ready. What
/// `load_shed().concurrency_limit(n)` with a rescue of its error did, without cloning a
/// semaphore poller (an allocation) and the layers below for every request: always
/// ready, it takes its permit in `call`.
#[derive(Clone)]
struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, B> Service<Request<B>> for Shed<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Box::pin(std::future::ready(Ok(overloaded())));
        };
        // The routes are always ready; `oneshot` keeps the readiness contract anyway.
        let fut = self.inner.clone().oneshot(req);
        Box::pin(async move {
            let resp = fut.await;
            drop(permit);
            resp
        })
    }
}

fn overloaded() -> Response<Body> {
    ClientError::new(
        ErrorCode::Unavailable,
        "Gateway overloaded, please retry later",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use tower::ServiceExt;

    fn req(path: &str) -> Request<Empty<bytes::Bytes>> {
        Request::post(path).body(Empty::new()).unwrap()
    }

    async fn body_json(
        resp: Response<impl http_body::Body<Data = bytes::Bytes, Error: Into<BoxError>>>,
    ) -> serde_json::Value {
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(Into::into)
            .unwrap()
            .to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_panic_becomes_an_openai_500() {
        let inner = tower::service_fn(|_req: Request<Empty<bytes::Bytes>>| async move {
            if true {
                panic!("bug");
            }
            Ok::<_, Infallible>(
                ClientError::new(ErrorCode::Internal, "unreachable").into_response(),
            )
        });
        let metrics = Arc::new(Metrics::new());
        let resp = layers(inner, metrics.clone(), 10)
            .oneshot(req("/v1/responses"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 500);
        assert_eq!(body_json(resp).await["error"]["type"], "api_error");
        // The rescued panic is counted, with its code.
        assert!(
            metrics
                .encode()
                .contains("route=\"responses\",status=\"500\",code=\"internal\"} 1"),
            "{}",
            metrics.encode()
        );
    }

    #[tokio::test]
    async fn past_the_in_flight_limit_requests_are_shed_with_503() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let g = gate.clone();
        let inner = tower::service_fn(move |_req: Request<Empty<bytes::Bytes>>| {
            let g = g.clone();
            async move {
                g.notified().await;
                Ok::<_, Infallible>(ClientError::new(ErrorCode::NotFound, "done").into_response())
            }
        });
        let metrics = Arc::new(Metrics::new());
        let svc = layers(inner, metrics.clone(), 1);
        #[allow(clippy::disallowed_methods)] // a test's own task, awaited below
        let first = tokio::task::spawn(svc.clone().oneshot(req("/v1/responses")));
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let shed = svc.clone().oneshot(req("/v1/responses")).await.unwrap();
        assert_eq!(shed.status(), 503);
        assert_eq!(
            body_json(shed).await["error"]["message"],
            "Gateway overloaded, please retry later"
        );
        gate.notify_one();
        assert_eq!(first.await.unwrap().unwrap().status(), 404);
        // Both counted by route, status and code, the shed 503 included.
        let text = metrics.encode();
        assert!(
            text.contains("route=\"responses\",status=\"404\",code=\"not_found\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("route=\"responses\",status=\"503\",code=\"unavailable\"} 1"),
            "{text}"
        );
    }
}

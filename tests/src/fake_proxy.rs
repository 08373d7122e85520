//! Real outbound proxies for system tests, each on `127.0.0.1:0`, recording what went
//! through them; dropping one stops it (listener and every connection).
//!
//! - [`HttpProxy`]: an HTTP/1.1 forward proxy. Absolute-form requests
//!   (`POST http://127.0.0.1:P/v1/responses HTTP/1.1`) are forwarded on a fresh connection
//!   to the target and the answer is streamed back frame by frame; `CONNECT host:port`
//!   opens a byte tunnel. With credentials it answers `407` to any request without the
//!   right `Proxy-Authorization: Basic`.
//! - [`Socks5Proxy`]: a SOCKS5 server (RFC 1928, `CONNECT` only; IPv4, IPv6 and domain
//!   name addresses — `socks5h` clients send names) with optional RFC 1929 username and
//!   password authentication, tunnelling bytes.
//!
//! Both note the bearer tokens they see: the `Authorization` header of a forwarded request,
//! and `Authorization:` lines in the plain-text HTTP going through a tunnel (the fake
//! upstream speaks plain HTTP), so a test can tell whose traffic a proxy carried.
//!
//! ```ignore
//! let proxy = HttpProxy::with_credentials("user", "p@ss").await;
//! // proxy_url = proxy.url_with("user", "p@ss")  (percent-encoded as needed)
//! assert_eq!(proxy.forwarded()[0].credentials, Some(("user".into(), "p@ss".into())));
//! let socks = Socks5Proxy::with_credentials("user", "pw").await;
//! // proxy_url = socks.url_with("socks5h", "user", "pw")
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::uri::Scheme;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a client may take over a SOCKS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest header line the bearer scanner looks at.
const SCAN_LINE_LIMIT: usize = 8 << 10;

/// `scheme://user:pass@host:port` with user and password percent-encoded as URL userinfo.
pub fn url_with_credentials(url: &str, user: &str, pass: &str) -> String {
    // `url` leaves `%` alone (it may start an escape); escape it first.
    let mut u = url::Url::parse(url).unwrap();
    u.set_username(&user.replace('%', "%25")).unwrap();
    u.set_password(Some(&pass.replace('%', "%25"))).unwrap();
    u.as_str().trim_end_matches('/').to_owned()
}

/// Stops the listener and connections of a fake proxy.
struct Lifetime {
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Lifetime {
    fn new() -> Self {
        Self {
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    fn stop(&self) {
        self.shutdown.cancel();
        self.tasks.close();
    }

    async fn stop_and_wait(&self) {
        self.stop();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
    }
}

// ---------------------------------------------------------------------------------------
// Bearer tokens in plain-text HTTP

/// The token of an `Authorization: Bearer <token>` value.
fn bearer_token(value: &str) -> Option<String> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn bearer_header(headers: &HeaderMap) -> Option<String> {
    bearer_token(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// Finds `Authorization: Bearer …` lines in a byte stream (HTTP/1 heads in a tunnel).
#[derive(Default)]
struct BearerScanner {
    line: Vec<u8>,
    overflow: bool,
}

impl BearerScanner {
    fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut found = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if !self.overflow
                    && let Some(t) = Self::bearer_in_line(&self.line)
                {
                    found.push(t);
                }
                self.line.clear();
                self.overflow = false;
            } else if self.line.len() < SCAN_LINE_LIMIT {
                self.line.push(b);
            } else {
                self.overflow = true;
            }
        }
        found
    }

    fn bearer_in_line(line: &[u8]) -> Option<String> {
        let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("authorization")
            .then(|| bearer_token(value))?
    }
}

/// Copies bytes both ways until both directions end (or shutdown); `on_up` sees every
/// client→target chunk.
async fn tunnel<C>(
    client: C,
    target: TcpStream,
    mut on_up: impl FnMut(&[u8]) + Send,
    shutdown: &CancellationToken,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send,
{
    let _ = target.set_nodelay(true);
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut tr, mut tw) = target.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            on_up(&buf[..n]);
            if tw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = tw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut tr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        () = shutdown.cancelled() => {}
    }
}

// ---------------------------------------------------------------------------------------
// HTTP forward proxy

/// One request the HTTP proxy received.
#[derive(Clone, Debug)]
pub struct ProxiedRequest {
    /// The client connection it came on (1, 2, … in accept order).
    pub conn: u64,
    pub method: Method,
    /// The absolute URI of a forwarded request; `host:port` for `CONNECT`.
    pub target: String,
    /// User name and password of `Proxy-Authorization: Basic`, as sent.
    pub credentials: Option<(String, String)>,
    /// `false` = answered 407.
    pub authorized: bool,
    /// The status answered (0 while not answered yet); 200 for an established tunnel.
    pub status: u16,
    /// Bearer tokens seen: the forwarded request's `Authorization`, or `Authorization:`
    /// lines of the plain-text HTTP sent through a tunnel (updated as bytes flow).
    pub bearers: Vec<String>,
}

struct HttpState {
    credentials: Option<(String, String)>,
    requests: Mutex<Vec<ProxiedRequest>>,
    connections: AtomicU64,
    life: Lifetime,
}

impl HttpState {
    fn record(&self, r: ProxiedRequest) -> usize {
        let mut v = self.requests.lock().unwrap();
        v.push(r);
        v.len() - 1
    }

    fn update(&self, idx: usize, f: impl FnOnce(&mut ProxiedRequest)) {
        if let Some(r) = self.requests.lock().unwrap().get_mut(idx) {
            f(r);
        }
    }
}

/// A running HTTP forward proxy. Dropping it stops it.
pub struct HttpProxy {
    addr: SocketAddr,
    state: Arc<HttpState>,
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

fn text(status: u16, msg: &str) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{msg}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and those named by `Connection`.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<String> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    for n in named {
        h.remove(n.as_str());
    }
    for n in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        h.remove(n);
    }
}

fn basic_credentials(h: &HeaderMap) -> Option<(String, String)> {
    let v = h.get(header::PROXY_AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

impl HttpProxy {
    /// A proxy that lets everyone through.
    pub async fn start() -> Self {
        Self::bind(None).await
    }

    /// A proxy that answers 407 unless `Proxy-Authorization: Basic user:pass` is sent.
    pub async fn with_credentials(user: &str, pass: &str) -> Self {
        Self::bind(Some((user.to_owned(), pass.to_owned()))).await
    }

    async fn bind(credentials: Option<(String, String)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(HttpState {
            credentials,
            requests: Mutex::default(),
            connections: AtomicU64::new(0),
            life: Lifetime::new(),
        });
        state
            .life
            .tasks
            .spawn(http_accept_loop(listener, state.clone()));
        Self { addr, state }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no credentials).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://user:pass@127.0.0.1:PORT`, percent-encoded.
    pub fn url_with(&self, user: &str, pass: &str) -> String {
        url_with_credentials(&self.url(), user, pass)
    }

    /// Every request received (also the rejected ones), in arrival order.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The requests let through (authorized).
    pub fn forwarded(&self) -> Vec<ProxiedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.authorized)
            .collect()
    }

    /// The requests answered 407.
    pub fn rejected(&self) -> Vec<ProxiedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| !r.authorized)
            .collect()
    }

    /// Number of requests let through.
    pub fn count(&self) -> usize {
        self.forwarded().len()
    }

    /// Distinct client connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Every bearer token seen, in order (with repeats).
    pub fn bearers(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .flat_map(|r| r.bearers)
            .collect()
    }

    /// The client connections that carried requests with this bearer token.
    pub fn connections_of(&self, bearer: &str) -> std::collections::BTreeSet<u64> {
        self.requests()
            .into_iter()
            .filter(|r| r.bearers.iter().any(|b| b == bearer))
            .map(|r| r.conn)
            .collect()
    }

    /// Stops accepting, drops every connection and waits (up to 5 s) for the tasks; the
    /// port then refuses connections.
    pub async fn shutdown(&self) {
        self.state.life.stop_and_wait().await;
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        self.state.life.stop();
    }
}

async fn http_accept_loop(listener: TcpListener, state: Arc<HttpState>) {
    loop {
        let stream = tokio::select! {
            () = state.life.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = state.connections.fetch_add(1, Ordering::SeqCst) + 1;
        let svc = {
            let state = state.clone();
            hyper::service::service_fn(move |req| http_serve(state.clone(), conn, req))
        };
        let shutdown = state.life.shutdown.clone();
        state.life.tasks.spawn(async move {
            let c = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::select! {
                _ = c => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

async fn http_serve(
    state: Arc<HttpState>,
    conn: u64,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, hyper::Error> {
    let credentials = basic_credentials(req.headers());
    let authorized = match &state.credentials {
        None => true,
        Some(want) => credentials.as_ref() == Some(want),
    };
    let connect = req.method() == Method::CONNECT;
    let target = if connect {
        req.uri()
            .authority()
            .map(ToString::to_string)
            .unwrap_or_default()
    } else {
        req.uri().to_string()
    };
    let idx = state.record(ProxiedRequest {
        conn,
        method: req.method().clone(),
        target,
        credentials,
        authorized,
        status: 0,
        bearers: if connect {
            Vec::new()
        } else {
            bearer_header(req.headers()).into_iter().collect()
        },
    });
    let resp = if !authorized {
        // Never echo what was sent: it is a credential.
        let mut r = text(407, "fake proxy: proxy authentication required");
        r.headers_mut().insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"fake-proxy\""),
        );
        r
    } else if connect {
        http_connect(&state, idx, req).await
    } else {
        http_forward(&state, req).await
    };
    let status = resp.status().as_u16();
    state.update(idx, |r| r.status = status);
    Ok(resp)
}

/// `CONNECT host:port`: 200, then the upgraded connection is a tunnel to the target.
async fn http_connect(
    state: &Arc<HttpState>,
    idx: usize,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let Some(authority) = req.uri().authority().cloned() else {
        return text(400, "fake proxy: CONNECT needs host:port");
    };
    let target = match TcpStream::connect(authority.as_str()).await {
        Ok(t) => t,
        Err(e) => return text(502, &format!("fake proxy: cannot reach {authority}: {e}")),
    };
    let st = state.clone();
    state.life.tasks.spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let mut scanner = BearerScanner::default();
        let on_up = |b: &[u8]| {
            let found = scanner.feed(b);
            if !found.is_empty() {
                st.update(idx, |r| r.bearers.extend(found));
            }
        };
        tunnel(TokioIo::new(upgraded), target, on_up, &st.life.shutdown).await;
    });
    Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    )
}

/// An absolute-form request: forwarded on a fresh connection, the answer streamed back.
async fn http_forward(state: &Arc<HttpState>, req: Request<Incoming>) -> Response<ProxyBody> {
    let uri = req.uri().clone();
    if uri.scheme() != Some(&Scheme::HTTP) {
        return text(
            400,
            "fake proxy: only absolute-form http:// requests and CONNECT are proxied",
        );
    }
    let Some(authority) = uri.authority().cloned() else {
        return text(400, "fake proxy: the request URI has no host");
    };
    let port = authority.port_u16().unwrap_or(80);
    let stream = match TcpStream::connect(format!("{}:{port}", authority.host())).await {
        Ok(s) => s,
        Err(e) => return text(502, &format!("fake proxy: cannot reach {authority}: {e}")),
    };
    let _ = stream.set_nodelay(true);
    // hyper's client side (the "client" feature comes with reqwest).
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => return text(502, &format!("fake proxy: handshake with {authority}: {e}")),
    };
    let shutdown = state.life.shutdown.clone();
    state.life.tasks.spawn(async move {
        tokio::select! {
            _ = conn => {}
            () = shutdown.cancelled() => {}
        }
    });
    let (mut parts, body) = req.into_parts();
    let origin_form = uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = origin_form.parse::<Uri>().unwrap();
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    if !parts.headers.contains_key(header::HOST) {
        parts
            .headers
            .insert(header::HOST, authority.as_str().parse().unwrap());
    }
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => text(502, &format!("fake proxy: {authority} failed: {e}")),
    }
}

// ---------------------------------------------------------------------------------------
// SOCKS5

/// The destination of a SOCKS5 `CONNECT`, as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocksTarget {
    /// ATYP 1 (IPv4) or 4 (IPv6): the client resolved the name itself (`socks5`).
    Ip(SocketAddr),
    /// ATYP 3: a name for the proxy to resolve (`socks5h`).
    Domain(String, u16),
}

impl SocksTarget {
    pub fn port(&self) -> u16 {
        match self {
            Self::Ip(a) => a.port(),
            Self::Domain(_, p) => *p,
        }
    }

    pub fn is_domain(&self) -> bool {
        matches!(self, Self::Domain(..))
    }
}

impl fmt::Display for SocksTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(a) => write!(f, "{a}"),
            Self::Domain(d, p) => write!(f, "{d}:{p}"),
        }
    }
}

/// One SOCKS5 client connection (one tunnel at most).
#[derive(Clone, Debug)]
pub struct SocksSession {
    /// 1, 2, … in accept order.
    pub conn: u64,
    /// The RFC 1929 user name offered (`None` when no sub-negotiation happened).
    pub username: Option<String>,
    /// Passed authentication (always, when the server has no credentials).
    pub authenticated: bool,
    /// The `CONNECT` destination, once requested.
    pub target: Option<SocksTarget>,
    /// The reply code sent (0 = succeeded), once the request was answered.
    pub reply: Option<u8>,
    /// `Authorization: Bearer` tokens in the plain-text HTTP sent through the tunnel.
    pub bearers: Vec<String>,
}

impl SocksSession {
    /// Authenticated and connected to its target.
    pub fn tunnelled(&self) -> bool {
        self.authenticated && self.reply == Some(0)
    }
}

struct SocksState {
    credentials: Option<(String, String)>,
    sessions: Mutex<Vec<SocksSession>>,
    life: Lifetime,
}

impl SocksState {
    fn update(&self, idx: usize, f: impl FnOnce(&mut SocksSession)) {
        if let Some(s) = self.sessions.lock().unwrap().get_mut(idx) {
            f(s);
        }
    }
}

/// A running SOCKS5 server. Dropping it stops it.
pub struct Socks5Proxy {
    addr: SocketAddr,
    state: Arc<SocksState>,
}

impl Socks5Proxy {
    /// A server that accepts "no authentication".
    pub async fn start() -> Self {
        Self::bind(None).await
    }

    /// A server that requires username/password authentication (RFC 1929).
    pub async fn with_credentials(user: &str, pass: &str) -> Self {
        Self::bind(Some((user.to_owned(), pass.to_owned()))).await
    }

    async fn bind(credentials: Option<(String, String)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(SocksState {
            credentials,
            sessions: Mutex::default(),
            life: Lifetime::new(),
        });
        state
            .life
            .tasks
            .spawn(socks_accept_loop(listener, state.clone()));
        Self { addr, state }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `<scheme>://127.0.0.1:PORT` (`socks5` or `socks5h`).
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    /// `<scheme>://user:pass@127.0.0.1:PORT`, percent-encoded.
    pub fn url_with(&self, scheme: &str, user: &str, pass: &str) -> String {
        url_with_credentials(&self.url(scheme), user, pass)
    }

    /// Every client connection, in accept order.
    pub fn sessions(&self) -> Vec<SocksSession> {
        self.state.sessions.lock().unwrap().clone()
    }

    /// The sessions that became tunnels.
    pub fn tunnels(&self) -> Vec<SocksSession> {
        self.sessions()
            .into_iter()
            .filter(SocksSession::tunnelled)
            .collect()
    }

    /// Distinct client connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.sessions.lock().unwrap().len() as u64
    }

    /// Every bearer token seen in tunnels, in order (with repeats).
    pub fn bearers(&self) -> Vec<String> {
        self.sessions()
            .into_iter()
            .flat_map(|s| s.bearers)
            .collect()
    }

    /// Stops accepting, drops every connection and waits (up to 5 s) for the tasks; the
    /// port then refuses connections.
    pub async fn shutdown(&self) {
        self.state.life.stop_and_wait().await;
    }
}

impl Drop for Socks5Proxy {
    fn drop(&mut self) {
        self.state.life.stop();
    }
}

async fn socks_accept_loop(listener: TcpListener, state: Arc<SocksState>) {
    loop {
        let stream = tokio::select! {
            () = state.life.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let idx = {
            let mut s = state.sessions.lock().unwrap();
            let conn = s.len() as u64 + 1;
            s.push(SocksSession {
                conn,
                username: None,
                authenticated: false,
                target: None,
                reply: None,
                bearers: Vec::new(),
            });
            s.len() - 1
        };
        state
            .life
            .tasks
            .spawn(socks_session(state.clone(), idx, stream));
    }
}

async fn socks_session(state: Arc<SocksState>, idx: usize, mut client: TcpStream) {
    let handshake =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, socks_handshake(&state, idx, &mut client));
    let target = tokio::select! {
        r = handshake => match r {
            Ok(Ok(t)) => t,
            _ => return,
        },
        () = state.life.shutdown.cancelled() => return,
    };
    let mut scanner = BearerScanner::default();
    let on_up = |b: &[u8]| {
        let found = scanner.feed(b);
        if !found.is_empty() {
            state.update(idx, |s| s.bearers.extend(found));
        }
    };
    tunnel(client, target, on_up, &state.life.shutdown).await;
}

const SOCKS_VERSION: u8 = 5;
const AUTH_NONE: u8 = 0x00;
const AUTH_USER_PASS: u8 = 0x02;
const AUTH_NO_ACCEPTABLE: u8 = 0xff;
const CMD_CONNECT: u8 = 1;
const REPLY_HOST_UNREACHABLE: u8 = 4;
const REPLY_CONNECTION_REFUSED: u8 = 5;
const REPLY_COMMAND_NOT_SUPPORTED: u8 = 7;
const REPLY_ADDRESS_TYPE_NOT_SUPPORTED: u8 = 8;

fn refused(msg: &str) -> io::Error {
    io::Error::other(format!("fake socks: {msg}"))
}

async fn read_string(c: &mut TcpStream) -> io::Result<Vec<u8>> {
    let len = c.read_u8().await? as usize;
    let mut buf = vec![0u8; len];
    c.read_exact(&mut buf).await?;
    Ok(buf)
}

/// A reply with the bound address (all zeros when there is none).
async fn socks_reply(c: &mut TcpStream, code: u8, bound: Option<SocketAddr>) -> io::Result<()> {
    let bound = bound.unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    let mut msg = vec![SOCKS_VERSION, code, 0];
    match bound.ip() {
        IpAddr::V4(a) => {
            msg.push(1);
            msg.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            msg.push(4);
            msg.extend_from_slice(&a.octets());
        }
    }
    msg.extend_from_slice(&bound.port().to_be_bytes());
    c.write_all(&msg).await
}

async fn socks_handshake(
    state: &SocksState,
    idx: usize,
    c: &mut TcpStream,
) -> io::Result<TcpStream> {
    // Method selection.
    let ver = c.read_u8().await?;
    if ver != SOCKS_VERSION {
        return Err(refused("not SOCKS5"));
    }
    let methods = read_string(c).await?;
    let wanted = if state.credentials.is_some() {
        AUTH_USER_PASS
    } else {
        AUTH_NONE
    };
    if !methods.contains(&wanted) {
        c.write_all(&[SOCKS_VERSION, AUTH_NO_ACCEPTABLE]).await?;
        return Err(refused("no acceptable authentication method"));
    }
    c.write_all(&[SOCKS_VERSION, wanted]).await?;

    // RFC 1929 sub-negotiation.
    if let Some((user, pass)) = &state.credentials {
        if c.read_u8().await? != 1 {
            return Err(refused("bad sub-negotiation version"));
        }
        let got_user = String::from_utf8_lossy(&read_string(c).await?).into_owned();
        let got_pass = read_string(c).await?;
        let ok = got_user == *user && got_pass == pass.as_bytes();
        state.update(idx, |s| {
            s.username = Some(got_user);
            s.authenticated = ok;
        });
        c.write_all(&[1, if ok { 0 } else { 1 }]).await?;
        if !ok {
            return Err(refused("authentication failed"));
        }
    } else {
        state.update(idx, |s| s.authenticated = true);
    }

    // The request.
    let mut head = [0u8; 4];
    c.read_exact(&mut head).await?;
    let [ver, cmd, _rsv, atyp] = head;
    if ver != SOCKS_VERSION {
        return Err(refused("bad request version"));
    }
    let target = match atyp {
        1 => {
            let mut a = [0u8; 4];
            c.read_exact(&mut a).await?;
            let port = c.read_u16().await?;
            SocksTarget::Ip(SocketAddr::from((Ipv4Addr::from(a), port)))
        }
        3 => {
            let name = String::from_utf8_lossy(&read_string(c).await?).into_owned();
            let port = c.read_u16().await?;
            SocksTarget::Domain(name, port)
        }
        4 => {
            let mut a = [0u8; 16];
            c.read_exact(&mut a).await?;
            let port = c.read_u16().await?;
            SocksTarget::Ip(SocketAddr::from((Ipv6Addr::from(a), port)))
        }
        _ => {
            state.update(idx, |s| s.reply = Some(REPLY_ADDRESS_TYPE_NOT_SUPPORTED));
            socks_reply(c, REPLY_ADDRESS_TYPE_NOT_SUPPORTED, None).await?;
            return Err(refused("address type not supported"));
        }
    };
    state.update(idx, |s| s.target = Some(target.clone()));
    if cmd != CMD_CONNECT {
        state.update(idx, |s| s.reply = Some(REPLY_COMMAND_NOT_SUPPORTED));
        socks_reply(c, REPLY_COMMAND_NOT_SUPPORTED, None).await?;
        return Err(refused("command not supported"));
    }
    let stream = match connect_target(&target).await {
        Ok(s) => s,
        Err(e) => {
            let code = if e.kind() == io::ErrorKind::ConnectionRefused {
                REPLY_CONNECTION_REFUSED
            } else {
                REPLY_HOST_UNREACHABLE
            };
            state.update(idx, |s| s.reply = Some(code));
            socks_reply(c, code, None).await?;
            return Err(e);
        }
    };
    socks_reply(c, 0, stream.local_addr().ok()).await?;
    state.update(idx, |s| s.reply = Some(0));
    Ok(stream)
}

/// Connects to an address, or to each address a name resolves to until one answers.
async fn connect_target(target: &SocksTarget) -> io::Result<TcpStream> {
    match target {
        SocksTarget::Ip(a) => TcpStream::connect(a).await,
        SocksTarget::Domain(name, port) => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, "name resolved to nothing");
            for a in tokio::net::lookup_host((name.as_str(), *port)).await? {
                match TcpStream::connect(a).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}

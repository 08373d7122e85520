//! Sending the request upstream. Connections are pooled per account and proxy so one
//! login's traffic never shares a connection with another's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;

use super::failover::UpstreamFailure;
use super::outbound::{self, AddressRefused, GuardedResolver};
use crate::control::domain::AccountLease;

/// Clients by account id, then by proxy URL (nested so that a lookup needs no key built).
type Clients = HashMap<i64, HashMap<String, reqwest::Client>>;

#[derive(Clone)]
pub struct UpstreamPool {
    clients: Arc<Mutex<Clients>>,
    connect_timeout: Duration,
    /// `TOLLGATE_ALLOW_PRIVATE_UPSTREAMS`: skip the outbound address rule.
    allow_private: bool,
}

impl UpstreamPool {
    pub fn new(connect_timeout: Duration, allow_private: bool) -> Self {
        Self {
            clients: Arc::default(),
            connect_timeout,
            allow_private,
        }
    }

    fn client(&self, account_id: i64, proxy_url: &str) -> Result<reqwest::Client, String> {
        let mut map = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = map.get(&account_id).and_then(|m| m.get(proxy_url)) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            // Never follow redirects with a bearer credential attached.
            .redirect(reqwest::redirect::Policy::none());
        b = if proxy_url.is_empty() {
            let b = b.no_proxy();
            if self.allow_private {
                b
            } else {
                b.dns_resolver(Arc::new(GuardedResolver))
            }
        } else {
            // Through a proxy the resolver would only see the proxy's host (operator
            // configured, often private); the upstream name is resolved by the proxy.
            // The message never includes the URL: it may carry credentials.
            b.proxy(
                reqwest::Proxy::all(proxy_url)
                    .map_err(|_| "invalid account proxy URL".to_owned())?,
            )
        };
        let c = b
            .build()
            .map_err(|e| format!("cannot build upstream client: {e}"))?;
        map.entry(account_id)
            .or_default()
            .insert(proxy_url.to_owned(), c.clone());
        Ok(c)
    }

    /// `Err` = no response at all (connect refused, TLS, reset before the head), or a
    /// proxy's 407: a `Connect` failure.
    pub async fn send(
        &self,
        account: &AccountLease,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, UpstreamFailure> {
        if !self.allow_private
            && let Some(refused) = outbound::literal_refusal(&account.upstream_url)
        {
            return Err(refused_failure(account.account_id, &refused));
        }
        let client = self
            .client(account.account_id, account.proxy_url.expose())
            .map_err(UpstreamFailure::connect)?;
        let mut req = client
            .post(&account.upstream_url)
            .headers(headers)
            .bearer_auth(account.bearer.expose())
            .body(body);
        if !account.chatgpt_account_id.is_empty() {
            req = req.header("chatgpt-account-id", &account.chatgpt_account_id);
        }
        // reqwest errors can embed the URL but never headers; the URL holds no secret.
        let resp = req
            .send()
            .await
            .map_err(|e| match outbound::refusal_in(&e) {
                Some(refused) => refused_failure(account.account_id, refused),
                None => UpstreamFailure::connect(format!("upstream connection failed: {e}")),
            })?;
        // An `http://` upstream through an HTTP proxy gets the proxy's refusal as a
        // response (an `https://` one gets it as a CONNECT error): a failure to reach the
        // upstream, never an answer to pass through to the client.
        if resp.status() == reqwest::StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            return Err(UpstreamFailure::connect(
                "upstream connection failed: proxy authentication required (407)",
            ));
        }
        Ok(resp)
    }
}

impl UpstreamPool {
    /// A response operation (retrieve, delete, cancel, input items) on `url`, with the
    /// account's credential, no body.
    pub async fn send_operation(
        &self,
        account: &AccountLease,
        method: http::Method,
        url: &str,
        headers: HeaderMap,
    ) -> Result<reqwest::Response, UpstreamFailure> {
        if !self.allow_private
            && let Some(refused) = outbound::literal_refusal(url)
        {
            return Err(refused_failure(account.account_id, &refused));
        }
        let client = self
            .client(account.account_id, account.proxy_url.expose())
            .map_err(UpstreamFailure::connect)?;
        let mut req = client
            .request(method, url)
            .headers(headers)
            .bearer_auth(account.bearer.expose());
        if !account.chatgpt_account_id.is_empty() {
            req = req.header("chatgpt-account-id", &account.chatgpt_account_id);
        }
        req.send()
            .await
            .map_err(|e| match outbound::refusal_in(&e) {
                Some(refused) => refused_failure(account.account_id, refused),
                None => UpstreamFailure::connect(format!("upstream connection failed: {e}")),
            })
    }
}

/// A connect failure of the account, logged once with the reason operators act on.
fn refused_failure(account_id: i64, refused: &AddressRefused) -> UpstreamFailure {
    tracing::warn!(account_id, reason = %refused, "upstream connection refused by the outbound address rule");
    UpstreamFailure::refused(format!("upstream connection refused: {refused}"))
}

/// Health-relevant response headers for the outcome report (lower-case names).
pub fn outcome_headers(h: &HeaderMap) -> HashMap<String, String> {
    h.iter()
        .filter(|(n, _)| n.as_str().starts_with("x-codex-") || n.as_str() == "retry-after")
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

/// `error.message` from an OpenAI-shaped error body, else the (truncated) text.
pub fn error_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if let Some(m) = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(|m| m.as_str())
    {
        return m.chars().take(1000).collect();
    }
    String::from_utf8_lossy(body).chars().take(1000).collect()
}

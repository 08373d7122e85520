//! Finding the API key and the client IP in a request (responses-flow.md §1).

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use tollgate_shared::ErrorCode;

use super::errors::ClientError;

/// The presented key, in the spec's order: a key in the query string is refused (it
/// ends up in logs); then `Authorization: Bearer` (scheme case-insensitive, value
/// trimmed), `x-api-key`, `x-goog-api-key`.
pub fn api_key(query: Option<&str>, headers: &HeaderMap) -> Result<String, ClientError> {
    if let Some(q) = query {
        let in_query = url_query_names(q).any(|name| name == "key" || name == "api_key");
        if in_query {
            return Err(ClientError::of(ErrorCode::ApiKeyInQuery));
        }
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(auth) = header("authorization")
        && let Some((scheme, rest)) = auth.split_once(char::is_whitespace)
        && scheme.eq_ignore_ascii_case("bearer")
        && !rest.trim().is_empty()
    {
        return Ok(rest.trim().to_owned());
    }
    for name in ["x-api-key", "x-goog-api-key"] {
        if let Some(v) = header(name) {
            return Ok(v.to_owned());
        }
    }
    Err(ClientError::of(ErrorCode::ApiKeyRequired))
}

fn url_query_names(q: &str) -> impl Iterator<Item = &str> {
    q.split('&')
        .map(|pair| pair.split_once('=').map_or(pair, |(n, _)| n))
}

/// Lower-case hex SHA-256, the form the control plane looks keys up by.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The client IP: the socket peer, unless the peer is a trusted proxy, in which case the
/// right-most untrusted address of `X-Forwarded-For` (or `X-Real-IP`) is used.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer_ip = tollgate_shared::refusal::canonical(peer.ip());
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer_ip) {
        return peer_ip;
    }
    if let Some(xff) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        let hops: Vec<IpAddr> = xff
            .split(',')
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .map(tollgate_shared::refusal::canonical)
            .collect();
        if let Some(ip) = hops.iter().rev().find(|ip| !is_trusted(ip)) {
            return *ip;
        }
        if let Some(first) = hops.first() {
            return *first;
        }
    }
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<IpAddr>().ok())
        .map_or(peer_ip, tollgate_shared::refusal::canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn extraction_order_and_forms() {
        let h = headers(&[
            ("authorization", "  BEARER   sk-abc  "),
            ("x-api-key", "other"),
        ]);
        assert_eq!(api_key(None, &h).unwrap(), "sk-abc");
        let h = headers(&[("x-api-key", "k1"), ("x-goog-api-key", "k2")]);
        assert_eq!(api_key(None, &h).unwrap(), "k1");
        let h = headers(&[("x-goog-api-key", "k2")]);
        assert_eq!(api_key(None, &h).unwrap(), "k2");
        assert_eq!(
            api_key(None, &HeaderMap::new()).unwrap_err().code,
            ErrorCode::ApiKeyRequired
        );
        let h = headers(&[("authorization", "Basic abc")]);
        assert_eq!(
            api_key(None, &h).unwrap_err().code,
            ErrorCode::ApiKeyRequired
        );
        assert_eq!(
            api_key(Some("a=1&api_key=x"), &h).unwrap_err().code,
            ErrorCode::ApiKeyInQuery
        );
        assert_eq!(
            api_key(Some("key"), &h).unwrap_err().code,
            ErrorCode::ApiKeyInQuery
        );
    }

    #[test]
    fn forwarded_headers_only_from_trusted_peers() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 10.0.0.5")]);
        let peer: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        assert_eq!(
            client_ip(peer, &h, &[]),
            "10.0.0.9".parse::<IpAddr>().unwrap()
        );
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "1.1.1.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn hash_is_lower_hex_sha256() {
        assert_eq!(
            key_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

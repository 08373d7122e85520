//! Property tests over arbitrary input for every parser a client or an upstream feeds
//! (issue: "fuzz the parsers"): request body validation and transformation, SSE
//! splitting and usage extraction, key extraction from headers, client-IP and CIDR
//! parsing. Each property says what must hold for *any* input — above all, no panic.
//!
//! A bounded run is part of `cargo test` (proptest's default of 256 cases per property,
//! a few seconds in all). Longer runs: `PROPTEST_CASES=100000 cargo test -p
//! tollgate-data-plane --lib fuzz_tests` (see README "Fuzzing"). A failing case is
//! shrunk and written to `proptest-regressions/`; keep that file, and add the case as a
//! named regression test below.

use std::collections::HashMap;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::sse::{Observer, Splitter, Usage, fields};
use super::{auth_info, body, extract, transform};

/// Arbitrary JSON values, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Request bodies shaped like Responses requests, with hostile field values.
fn request_object() -> impl Strategy<Value = Map<String, Value>> {
    (
        prop_oneof![
            ".{0,40}".prop_map(Value::String),
            "[a-z0-9.-]{1,20}".prop_map(Value::String),
            json_value()
        ],
        prop_oneof![
            Just(None),
            any::<bool>().prop_map(|b| Some(json!(b))),
            json_value().prop_map(Some)
        ],
        prop::collection::btree_map(
            prop_oneof![
                Just("input".to_owned()),
                Just("instructions".to_owned()),
                Just("reasoning".to_owned()),
                Just("previous_response_id".to_owned()),
                Just("prompt_cache_key".to_owned()),
                Just("store".to_owned()),
                Just("tools".to_owned()),
                Just("max_output_tokens".to_owned()),
                ".{1,12}",
            ],
            json_value(),
            0..6,
        ),
    )
        .prop_map(|(model, stream, rest)| {
            let mut m: Map<String, Value> = rest.into_iter().collect();
            m.insert("model".into(), model);
            if let Some(s) = stream {
                m.insert("stream".into(), s);
            }
            m
        })
}

fn header_map(pairs: &[(String, Vec<u8>)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            h.append(n, v);
        }
    }
    h
}

/// Header names the extractors read, plus noise.
fn header_pairs() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop::collection::vec(
        (
            prop_oneof![
                Just("authorization".to_owned()),
                Just("x-api-key".to_owned()),
                Just("x-goog-api-key".to_owned()),
                Just("x-forwarded-for".to_owned()),
                Just("x-real-ip".to_owned()),
                Just("session_id".to_owned()),
                Just("user-agent".to_owned()),
                Just("originator".to_owned()),
                "[a-z-]{1,16}",
            ],
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..64),
                "(Bearer|bearer|BEARER|Basic)?[ \t]{0,3}.{0,40}".prop_map(String::into_bytes),
                "([0-9a-f:.]{1,20}, ?){0,4}".prop_map(String::into_bytes),
            ],
        ),
        0..8,
    )
}

proptest! {
    /// Any bytes: a clear refusal or a body whose model can be priced and stored.
    #[test]
    fn body_parse_never_panics(raw in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(b) = body::parse(&raw) {
            prop_assert!(!b.model.is_empty() && b.model.len() <= body::MODEL_MAX_BYTES);
            prop_assert!(b.model.bytes().all(|c| c.is_ascii_graphic()));
            prop_assert_eq!(b.raw_len, raw.len());
        }
    }

    /// Valid-looking JSON with hostile fields: parse, then every transformation of
    /// every account kind, then the upstream payload encodes.
    #[test]
    fn body_transform_never_panics(
        obj in request_object(),
        mapping in prop::collection::hash_map("[a-z0-9.*-]{1,12}", ".{0,16}", 0..4),
        codex_client in any::<bool>(),
        headers in header_pairs(),
    ) {
        let raw = serde_json::to_vec(&Value::Object(obj)).unwrap();
        let Ok(parsed) = body::parse(&raw) else { return Ok(()); };
        let headers = header_map(&headers);
        let mapping: HashMap<String, String> = mapping;
        for kind in [transform::Kind::ApiKey, transform::Kind::OAuth] {
            let mut json = parsed.json.clone();
            body::ensure_instructions(&mut json, "default");
            let _ = body::session_hash(&headers, &json);
            let _ = body::reasoning_effort(&json);
            let target = transform::Target {
                kind,
                model_mapping: &mapping,
                codex_client,
                default_codex_model: "gpt-5.1-codex",
            };
            let served = transform::body(&mut json, &parsed.model, &target);
            prop_assert!(!served.is_empty());
            prop_assert!(serde_json::to_vec(&json).is_ok());
            let out = transform::headers(&headers, kind, "ua/1", codex_client, "codex_cli_rs", Some("k"));
            prop_assert!(out.get("authorization").is_none(), "credentials never forwarded");
        }
    }

    /// SSE splitting does not depend on how the bytes are chunked, never panics, and
    /// every event it emits ends its last line.
    #[test]
    fn sse_split_is_chunking_invariant(
        raw in prop::collection::vec(
            prop_oneof![
                4 => any::<u8>(),
                2 => Just(b'\n'),
                1 => Just(b'\r'),
                1 => Just(b':'),
            ],
            0..600,
        ),
        cuts in prop::collection::vec(0usize..600, 0..8),
    ) {
        let whole = split(&raw, &[]);
        let chunked = split(&raw, &cuts);
        prop_assert_eq!(&whole, &chunked);
        if let Ok((events, _)) = &whole {
            for e in events {
                prop_assert_eq!(e.last(), Some(&b'\n'));
            }
        }
    }

    /// Any event an upstream sends: observed, passed on, usage read when present.
    #[test]
    fn sse_observe_never_panics(
        ty in prop_oneof![
            Just("response.completed".to_owned()),
            Just("response.output_text.delta".to_owned()),
            Just("response.created".to_owned()),
            Just("error".to_owned()),
            ".{0,24}",
        ],
        data in prop_oneof![json_value().prop_map(|v| v.to_string()), ".{0,64}"],
        usage in json_value(),
        raw in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut obs = Observer::new("gpt-5-2025", "gpt-5");
        let event = format!("event: {ty}\ndata: {data}\n\n");
        let _ = obs.observe(bytes::Bytes::from(event));
        let wrapped = json!({"type": "response.completed", "response": {"model": "gpt-5-2025", "usage": usage}});
        let _ = obs.observe(bytes::Bytes::from(format!("data: {wrapped}\n\n")));
        let _ = obs.observe(bytes::Bytes::from(raw.clone()));
        let _ = fields(&raw);
        let _ = obs.output_text_bytes();
        if let Some(u) = obs.usage {
            prop_assert!(u.input_tokens >= 0 && u.output_tokens >= 0);
            prop_assert!(u.cached_tokens >= 0 && u.reasoning_tokens >= 0);
        }
        if let Some(u) = Usage::from_json(&usage) {
            prop_assert!(u.input_tokens >= 0 && u.output_tokens >= 0);
        }
    }

    /// Key extraction: a refusal or a non-empty, trimmed key; a key in the query string
    /// is always refused.
    #[test]
    fn api_key_extraction_never_panics(
        query in prop::option::of("((key|api_key|[a-z_]{0,8})(=[^&]{0,8})?&?){0,4}"),
        headers in header_pairs(),
    ) {
        let headers = header_map(&headers);
        let result = extract::api_key(query.as_deref(), &headers);
        if let Ok(k) = &result {
            prop_assert!(!k.is_empty());
            prop_assert_eq!(k.trim(), k.as_str());
        }
        let in_query = query.as_deref().is_some_and(|q| {
            q.split('&').any(|p| matches!(p.split_once('=').map_or(p, |(n, _)| n), "key" | "api_key"))
        });
        if in_query {
            prop_assert!(result.is_err());
        }
        let _ = extract::key_hash(&result.unwrap_or_default());
    }

    /// The client IP: the peer itself unless the peer is a trusted proxy.
    #[test]
    fn client_ip_never_panics(
        peer in any::<std::net::SocketAddr>(),
        headers in header_pairs(),
        trusted in prop::collection::vec(".{0,20}|[0-9./:a-f]{1,20}", 0..3),
        trust_peer in any::<bool>(),
    ) {
        let headers = header_map(&headers);
        let mut nets: Vec<ipnet::IpNet> = trusted.iter().filter_map(|s| auth_info::parse_net(s)).collect();
        if trust_peer {
            nets.push(ipnet::IpNet::from(peer.ip()));
        }
        let ip = extract::client_ip(peer, &headers, &nets);
        let canonical = tollgate_shared::refusal::canonical(peer.ip());
        if !nets.iter().any(|n| n.contains(&canonical)) {
            prop_assert_eq!(ip, canonical);
        }
    }

    /// CIDR / address parsing: `None` or a network that prints and re-parses to itself.
    #[test]
    fn cidr_parse_round_trips(s in ".{0,40}|[0-9./:a-fA-F]{1,43}") {
        if let Some(net) = auth_info::parse_net(&s) {
            prop_assert_eq!(auth_info::parse_net(&net.to_string()), Some(net));
        }
    }
}

/// The events a splitter emitted, and what `finish` left; `Err` on a too-long line.
type Split = Result<(Vec<Vec<u8>>, Option<Vec<u8>>), ()>;

/// The events of `raw` fed in pieces cut at `cuts`, and what `finish` leaves.
fn split(raw: &[u8], cuts: &[usize]) -> Split {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (raw.len() + 1)).collect();
    cuts.push(raw.len());
    cuts.sort_unstable();
    let mut s = Splitter::new(128);
    let mut out = Vec::new();
    let mut from = 0;
    for c in cuts {
        s.push(&raw[from..c], &mut out).map_err(|_| ())?;
        from = c;
    }
    let rest = s.finish().map(|b| b.to_vec());
    Ok((out.into_iter().map(|b| b.to_vec()).collect(), rest))
}

#[test]
fn an_address_without_a_prefix_is_a_host_network() {
    let ip: IpAddr = "10.1.2.3".parse().unwrap();
    let net = auth_info::parse_net("10.1.2.3").unwrap();
    assert!(net.contains(&ip));
    assert!(!net.contains(&"10.1.2.4".parse::<IpAddr>().unwrap()));
}

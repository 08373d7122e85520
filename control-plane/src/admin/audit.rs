//! What an Admin write records in the audit log: the caller, the RPC, the target row and
//! the request's fields, filtered by an allow-list of field names.
//!
//! The fields are read generically (the request is re-decoded against the service's
//! descriptor), so every write is described the same way. A field whose name is not in
//! [`ALLOWED`] appears only as `"<redacted>"`: a new field is kept secret until someone
//! decides it is safe, and a test makes that decision explicit for every field of every
//! audited request (the test's `SECRET` lists the ones decided against).

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MapKey, MessageDescriptor, Value};
use serde_json::{Map, Value as Json};

use super::access::SERVICE;
use super::caller::Caller;
use crate::storage::{NewAuditEntry, Store};

/// Request field names whose values may be written to the audit log (at any depth).
pub const ALLOWED: &[&str] = &[
    // ids and references
    "id",
    "user_id",
    "group_id",
    "account_id",
    "groups",
    "priority",
    // users and balances
    "email",
    "name",
    "role",
    "status",
    "concurrency",
    "notes",
    "initial_balance_nanos",
    "op",
    "amount_nanos",
    "reason",
    "allow_negative",
    "cascade",
    // groups
    "platform",
    "rate_multiplier",
    "kind",
    "daily_limit_nanos",
    "weekly_limit_nanos",
    "monthly_limit_nanos",
    "exclusive",
    "description",
    // keys
    "quota_nanos",
    "expires_at_ms",
    "expires_in_days",
    "ip_allow",
    "ip_deny",
    "values",
    // accounts (base_url is validated to carry no user info, query or fragment)
    "base_url",
    "schedulable",
    "model_mapping",
    "entries",
    "user_agent",
    "cost_multiplier",
    // subscriptions
    "starts_at_ms",
    "duration_days",
    "days",
    // prices
    "price",
    "model",
    "input_per_mtok_nanos",
    "output_per_mtok_nanos",
    "cached_input_per_mtok_nanos",
    "updated_at_ms",
    // admin tokens
    "scope",
];

pub const REDACTED: &str = "<redacted>";

static POOL: LazyLock<Option<DescriptorPool>> =
    LazyLock::new(|| DescriptorPool::decode(tollgate_shared::proto::FILE_DESCRIPTOR_SET).ok());

/// The input message of an Admin RPC.
pub fn request_descriptor(method: &str) -> Option<MessageDescriptor> {
    let service = POOL.as_ref()?.get_service_by_name(SERVICE)?;
    let found = service.methods().find(|m| m.name() == method)?;
    Some(found.input())
}

/// The audit entry of a write by `caller` (its target is filled in after the write).
pub fn entry<M: prost::Message>(caller: &Caller, action: &str, request: &M) -> NewAuditEntry {
    NewAuditEntry {
        actor_kind: caller.kind.as_str().to_owned(),
        actor: caller.name.clone(),
        action: action.to_owned(),
        target: String::new(),
        details: details(action, &request.encode_to_vec()),
    }
}

/// Records an entry after its write committed. A failure is logged, not returned: the
/// write has happened, and an error reply would invite a retry that repeats it.
pub async fn record(store: &Store, entry: NewAuditEntry) {
    if let Err(e) = store.record_audit(&entry).await {
        tracing::error!(
            error = %e,
            actor = %entry.actor,
            action = %entry.action,
            target = %entry.target,
            "audit log entry lost"
        );
    }
}

/// JSON object of the set fields of the encoded request of `method`, secrets redacted.
pub fn details(method: &str, encoded: &[u8]) -> String {
    let decoded =
        request_descriptor(method).and_then(|desc| DynamicMessage::decode(desc, encoded).ok());
    let json = match decoded {
        Some(msg) => message_json(&msg),
        None => {
            tracing::warn!(method, "audit: request fields unavailable");
            Json::Object(Map::new())
        }
    };
    json.to_string()
}

fn message_json(msg: &DynamicMessage) -> Json {
    let mut out = Map::new();
    for (field, value) in msg.fields() {
        let v = if ALLOWED.contains(&field.name()) {
            value_json(&field.kind(), value)
        } else {
            Json::String(REDACTED.to_owned())
        };
        out.insert(field.name().to_owned(), v);
    }
    Json::Object(out)
}

fn value_json(kind: &Kind, value: &Value) -> Json {
    match value {
        Value::Bool(b) => Json::Bool(*b),
        Value::I32(i) => Json::from(*i),
        Value::I64(i) => Json::from(*i),
        Value::U32(i) => Json::from(*i),
        Value::U64(i) => Json::from(*i),
        Value::F32(f) => Json::from(f64::from(*f)),
        Value::F64(f) => Json::from(*f),
        Value::String(s) => Json::String(s.clone()),
        // No allowed field is bytes; never write raw bytes.
        Value::Bytes(_) => Json::String(REDACTED.to_owned()),
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) => e
                .get_value(*n)
                .map_or_else(|| Json::from(*n), |v| Json::String(v.name().to_owned())),
            _ => Json::from(*n),
        },
        Value::Message(m) => message_json(m),
        Value::List(items) => Json::Array(items.iter().map(|v| value_json(kind, v)).collect()),
        Value::Map(map) => {
            let value_kind = match kind {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                other => other.clone(),
            };
            let mut sorted: Vec<_> = map.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            Json::Object(
                sorted
                    .into_iter()
                    .map(|(k, v)| (map_key(k), value_json(&value_kind, v)))
                    .collect(),
            )
        }
    }
}

fn map_key(k: &MapKey) -> String {
    match k {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(i) => i.to_string(),
        MapKey::I64(i) => i.to_string(),
        MapKey::U32(i) => i.to_string(),
        MapKey::U64(i) => i.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

#[cfg(test)]
mod tests {
    use tollgate_shared::proto::admin::v1 as pb;

    use super::*;
    use crate::admin::access::access;

    /// Request fields that carry secrets (credentials, API keys, tokens, proxy URLs, OAuth
    /// codes). Listed only so the completeness test can tell "decided secret" from
    /// "forgotten"; redaction itself is by [`ALLOWED`].
    const SECRET: &[&str] = &[
        "custom_key",
        "api_key",
        "oauth",
        "proxy_url",
        "session_id",
        "code",
        "state",
    ];

    fn details_of<M: prost::Message>(method: &str, m: &M) -> serde_json::Value {
        serde_json::from_str(&details(method, &m.encode_to_vec())).unwrap()
    }

    #[test]
    fn every_field_of_every_audited_request_is_classified() {
        let pool = POOL.as_ref().unwrap();
        let service = pool.get_service_by_name(SERVICE).unwrap();
        let mut unclassified = Vec::new();
        let mut stack: Vec<MessageDescriptor> = service
            .methods()
            .filter(|m| access(m.name()).is_some_and(|a| a.audited))
            .map(|m| m.input())
            .collect();
        let mut seen = std::collections::HashSet::new();
        while let Some(msg) = stack.pop() {
            if !seen.insert(msg.full_name().to_owned()) {
                continue;
            }
            for f in msg.fields() {
                let name = f.name();
                let allowed = ALLOWED.contains(&name);
                let secret = SECRET.contains(&name);
                assert!(!(allowed && secret), "{name} is both allowed and secret");
                if !allowed && !secret {
                    unclassified.push(format!("{}.{name}", msg.name()));
                }
                // Fields inside an allowed message are shown too: classify them as well.
                if allowed && let Kind::Message(inner) = f.kind() {
                    if inner.is_map_entry() {
                        if let Kind::Message(v) = inner.map_entry_value_field().kind() {
                            stack.push(v);
                        }
                    } else {
                        stack.push(inner);
                    }
                }
            }
        }
        assert!(
            unclassified.is_empty(),
            "classify these fields in ALLOWED or SECRET: {unclassified:?}"
        );
    }

    #[test]
    fn secrets_are_redacted_and_the_rest_kept() {
        let d = details_of(
            "CreateKey",
            &pb::CreateKeyRequest {
                user_id: 7,
                name: "ci".into(),
                quota_nanos: 5,
                ip_allow: vec!["10.0.0.0/8".into()],
                custom_key: "my-very-secret-key-0001".into(),
                expiry: Some(pb::create_key_request::Expiry::ExpiresInDays(3)),
                ..Default::default()
            },
        );
        assert_eq!(
            d,
            serde_json::json!({
                "user_id": 7, "name": "ci", "quota_nanos": 5, "expires_in_days": 3,
                "ip_allow": ["10.0.0.0/8"], "custom_key": REDACTED,
            })
        );
        let d = details_of(
            "UpdateAccount",
            &pb::UpdateAccountRequest {
                id: 3,
                proxy_url: Some("socks5://u:pw@proxy:1080".into()),
                credential: Some(pb::update_account_request::Credential::Oauth(
                    pb::OAuthCredential {
                        access_token: "at-secret".into(),
                        refresh_token: "rt-secret".into(),
                        ..Default::default()
                    },
                )),
                model_mapping: Some(pb::StringMap {
                    entries: [("a".to_owned(), "b".to_owned())].into(),
                }),
                ..Default::default()
            },
        );
        assert_eq!(
            d,
            serde_json::json!({
                "id": 3, "proxy_url": REDACTED, "oauth": REDACTED,
                "model_mapping": {"entries": {"a": "b"}},
            })
        );
        let text = d.to_string();
        for secret in ["at-secret", "rt-secret", "pw@proxy"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[test]
    fn enums_are_named() {
        let d = details_of(
            "AdjustBalance",
            &pb::AdjustBalanceRequest {
                user_id: 1,
                op: pb::BalanceOp::Add as i32,
                amount_nanos: 10,
                reason: "gift".into(),
                allow_negative: false,
            },
        );
        assert_eq!(d["op"], "BALANCE_OP_ADD");
    }
}

//! The claims Tollgate reads from an OpenAI id token: the login's email and, under
//! `https://api.openai.com/auth`, the ChatGPT account id and plan type.
//!
//! The token is only decoded, not verified: it comes straight from the token endpoint
//! over TLS in answer to our own request, and nothing here is an authorization decision.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// The namespaced claim holding the ChatGPT facts.
pub const AUTH_CLAIM: &str = "https://api.openai.com/auth";
const PROFILE_CLAIM: &str = "https://api.openai.com/profile";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdClaims {
    pub email: String,
    pub chatgpt_account_id: String,
    pub chatgpt_plan_type: String,
    pub chatgpt_user_id: String,
    /// `exp`, unix ms.
    pub expires_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("the id token is not a JWT (header.payload.signature)")]
    NotAJwt,
    #[error("the id token payload is not base64url")]
    NotBase64,
    #[error("the id token payload is not a JSON object")]
    NotJson,
}

/// Decodes the payload of `id_token` (no signature check) and picks the claims.
pub fn decode(id_token: &str) -> Result<IdClaims, ClaimsError> {
    let mut parts = id_token.trim().split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ClaimsError::NotAJwt);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| ClaimsError::NotBase64)?;
    let json: Value = serde_json::from_slice(&bytes).map_err(|_| ClaimsError::NotJson)?;
    if !json.is_object() {
        return Err(ClaimsError::NotJson);
    }
    Ok(from_payload(&json))
}

fn from_payload(p: &Value) -> IdClaims {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").trim().to_owned();
    let auth = p.get(AUTH_CLAIM);
    let email = match text(p.get("email")) {
        e if e.is_empty() => text(p.get(PROFILE_CLAIM).and_then(|v| v.get("email"))),
        e => e,
    };
    let chatgpt_user_id = match text(auth.and_then(|a| a.get("chatgpt_user_id"))) {
        u if u.is_empty() => text(auth.and_then(|a| a.get("user_id"))),
        u => u,
    };
    IdClaims {
        email,
        chatgpt_account_id: text(auth.and_then(|a| a.get("chatgpt_account_id"))),
        chatgpt_plan_type: text(auth.and_then(|a| a.get("chatgpt_plan_type"))),
        chatgpt_user_id,
        expires_at_ms: p
            .get("exp")
            .and_then(Value::as_i64)
            .map(|s| s.saturating_mul(1000)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn jwt(payload: &Value) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            URL_SAFE_NO_PAD.encode("sig"),
        )
    }

    #[test]
    fn reads_email_and_the_openai_auth_claim() {
        let token = jwt(&json!({
            "email": "a@example.com",
            "exp": 1_700_000_000,
            AUTH_CLAIM: {
                "chatgpt_account_id": "acct-1",
                "chatgpt_plan_type": "pro",
                "chatgpt_user_id": "user-1",
            },
        }));
        assert_eq!(
            decode(&token).unwrap(),
            IdClaims {
                email: "a@example.com".into(),
                chatgpt_account_id: "acct-1".into(),
                chatgpt_plan_type: "pro".into(),
                chatgpt_user_id: "user-1".into(),
                expires_at_ms: Some(1_700_000_000_000),
            }
        );
    }

    #[test]
    fn falls_back_to_the_profile_email_and_user_id_and_tolerates_padding() {
        let token = jwt(&json!({
            PROFILE_CLAIM: { "email": "p@example.com" },
            AUTH_CLAIM: { "user_id": "u-2" },
        }));
        let padded = {
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            while !parts[1].len().is_multiple_of(4) {
                parts[1].push('=');
            }
            parts.join(".")
        };
        let c = decode(&padded).unwrap();
        assert_eq!(c.email, "p@example.com");
        assert_eq!(c.chatgpt_user_id, "u-2");
        assert_eq!(c.chatgpt_account_id, "");
        assert_eq!(c.expires_at_ms, None);
    }

    #[test]
    fn missing_claims_are_empty_not_errors() {
        assert_eq!(decode(&jwt(&json!({}))).unwrap(), IdClaims::default());
    }

    #[test]
    fn malformed_tokens_are_refused() {
        assert_eq!(decode("abc"), Err(ClaimsError::NotAJwt));
        assert_eq!(decode("a.b.c.d"), Err(ClaimsError::NotAJwt));
        assert_eq!(decode("a.!!!.c"), Err(ClaimsError::NotBase64));
        let not_json = format!("a.{}.c", URL_SAFE_NO_PAD.encode("not json"));
        assert_eq!(decode(&not_json), Err(ClaimsError::NotJson));
        let array = format!("a.{}.c", URL_SAFE_NO_PAD.encode("[1]"));
        assert_eq!(decode(&array), Err(ClaimsError::NotJson));
    }
}

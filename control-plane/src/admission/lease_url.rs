//! The Responses endpoint a lease points at (accounts.md, "Kinds").

use tollgate_shared::domain::AccountKind;

/// Upstream of an API-key account without a `base_url`.
pub const DEFAULT_API_BASE_URL: &str = "https://api.openai.com";

/// Where subscription (OAuth) accounts send Responses requests, unless configured.
pub const DEFAULT_CODEX_URL: &str = "https://chatgpt.com/backend-api/codex/responses";

/// API-key accounts: from `base_url` (default [`DEFAULT_API_BASE_URL`]); one ending in
/// `/responses` is used as is, one ending in `/v1` gets `/responses`, anything else gets
/// `/v1/responses` (a trailing `/` is trimmed first). OAuth accounts: `codex_url`.
pub fn upstream_url(kind: AccountKind, base_url: &str, codex_url: &str) -> String {
    match kind {
        AccountKind::OAuth => codex_url.to_owned(),
        AccountKind::ApiKey => {
            let base = base_url.trim();
            let base = if base.is_empty() {
                DEFAULT_API_BASE_URL
            } else {
                base
            };
            let base = base.trim_end_matches('/');
            if base.ends_with("/responses") {
                base.to_owned()
            } else if base.ends_with("/v1") {
                format!("{base}/responses")
            } else {
                format!("{base}/v1/responses")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(base: &str) -> String {
        upstream_url(AccountKind::ApiKey, base, DEFAULT_CODEX_URL)
    }

    #[test]
    fn api_key_rules() {
        assert_eq!(api(""), "https://api.openai.com/v1/responses");
        assert_eq!(api("  "), "https://api.openai.com/v1/responses");
        assert_eq!(
            api("https://api.openai.com"),
            "https://api.openai.com/v1/responses"
        );
        assert_eq!(
            api("https://api.openai.com/"),
            "https://api.openai.com/v1/responses"
        );
        assert_eq!(
            api("https://proxy.example/v1"),
            "https://proxy.example/v1/responses"
        );
        assert_eq!(
            api("https://proxy.example/v1/"),
            "https://proxy.example/v1/responses"
        );
        assert_eq!(
            api("https://proxy.example/custom/responses"),
            "https://proxy.example/custom/responses"
        );
        assert_eq!(
            api("https://proxy.example/openai"),
            "https://proxy.example/openai/v1/responses"
        );
    }

    #[test]
    fn oauth_uses_the_codex_url() {
        assert_eq!(
            upstream_url(AccountKind::OAuth, "https://ignored", DEFAULT_CODEX_URL),
            DEFAULT_CODEX_URL
        );
        assert_eq!(
            upstream_url(AccountKind::OAuth, "", "http://127.0.0.1:9/codex/responses"),
            "http://127.0.0.1:9/codex/responses"
        );
    }
}

//! Validation of the URLs an account carries: the upstream `base_url` (scheme, host and
//! the operator's upstream policy, see `accounts.md`) and the outbound `proxy_url`.

use std::net::{Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

use super::UpstreamPolicy;
use crate::error::{Error, Result};

/// The upstream of an API-key account when none is given.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com";

const PROXY_SCHEMES: &[&str] = &["http", "https", "socks5", "socks5h"];

/// A `base_url` allowed by `policy`, returned trimmed and without a trailing slash (so the
/// data plane's "ends in `/v1`" rule sees what the operator meant).
pub fn base_url(policy: &UpstreamPolicy, field: &str, value: &str) -> Result<String> {
    let text = value.trim();
    let url =
        Url::parse(text).map_err(|e| Error::invalid(field, format!("is not a valid URL ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_insecure => {}
        "http" => {
            return Err(Error::invalid(
                field,
                "must use https: plain http upstreams are refused unless the control plane \
                 runs with --allow-insecure-upstreams (TOLLGATE_ALLOW_INSECURE_UPSTREAMS=true)",
            ));
        }
        other => {
            return Err(Error::invalid(
                field,
                format!("scheme must be https, not {other:?}"),
            ));
        }
    }
    let host = url
        .host()
        .ok_or_else(|| Error::invalid(field, "must have a host"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::invalid(field, "must not contain credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::invalid(field, "must not have a query or fragment"));
    }
    if !policy.allow_private && is_private_host(&host) {
        return Err(Error::invalid(
            field,
            format!(
                "host {host} is loopback, private or link-local, refused unless the control \
                 plane runs with --allow-private-upstreams (TOLLGATE_ALLOW_PRIVATE_UPSTREAMS=true; \
                 the data planes need it too)"
            ),
        ));
    }
    if !policy.host_allowlist.is_empty() && !allowlisted(&policy.host_allowlist, &host) {
        return Err(Error::invalid(
            field,
            format!(
                "host {host} is not in the upstream host allow-list \
                 (--upstream-host-allowlist / TOLLGATE_UPSTREAM_HOST_ALLOWLIST)"
            ),
        ));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// A `proxy_url` (`http`, `https`, `socks5`, `socks5h`, optional credentials); empty = none.
pub fn proxy_url(field: &str, value: &str) -> Result<String> {
    let text = value.trim();
    if text.is_empty() {
        return Ok(String::new());
    }
    // Never echo the value: it may carry a password.
    let url =
        Url::parse(text).map_err(|e| Error::invalid(field, format!("is not a valid URL ({e})")))?;
    if !PROXY_SCHEMES.contains(&url.scheme()) {
        return Err(Error::invalid(
            field,
            format!(
                "scheme must be one of {}, not {:?}",
                PROXY_SCHEMES.join(", "),
                url.scheme()
            ),
        ));
    }
    if url.host().is_none() {
        return Err(Error::invalid(field, "must have a host"));
    }
    Ok(text.to_owned())
}

/// The proxy URL as operators may see it: user name and password removed.
pub fn strip_credentials(proxy_url: &str) -> String {
    if proxy_url.is_empty() {
        return String::new();
    }
    match Url::parse(proxy_url) {
        Ok(mut url) => {
            // Both fail only for URLs without a host, which validation refused.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string().trim_end_matches('/').to_owned()
        }
        // Unparseable: show nothing rather than risk showing a secret.
        Err(_) => String::new(),
    }
}

fn allowlisted(list: &[String], host: &Host<&str>) -> bool {
    let got = match host {
        Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
        Host::Ipv4(a) => a.to_string(),
        Host::Ipv6(a) => a.to_string(),
    };
    list.iter().any(|entry| {
        let e = entry.trim().trim_start_matches('[').trim_end_matches(']');
        e.trim_end_matches('.').eq_ignore_ascii_case(&got)
    })
}

fn is_private_host(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        Host::Ipv4(a) => is_private_v4(*a),
        Host::Ipv6(a) => is_private_v6(*a),
    }
}

/// Loopback, private, link-local, unspecified, "this network", shared (CGNAT) or broadcast.
fn is_private_v4(a: Ipv4Addr) -> bool {
    let [o0, o1, ..] = a.octets();
    a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
        || o0 == 0
        || (o0 == 100 && (o1 & 0xc0) == 64)
}

fn is_private_v6(a: Ipv6Addr) -> bool {
    if let Some(v4) = a.to_ipv4_mapped() {
        return is_private_v4(v4);
    }
    let s0 = a.segments()[0];
    a.is_loopback()
        || a.is_unspecified()
        || (s0 & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s0 & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s0 & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated, still private)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> UpstreamPolicy {
        UpstreamPolicy::default()
    }

    #[test]
    fn base_urls() {
        let p = strict();
        assert_eq!(
            base_url(&p, "base_url", "https://api.openai.com/").unwrap(),
            "https://api.openai.com"
        );
        assert_eq!(
            base_url(&p, "base_url", "https://x.example/v1").unwrap(),
            "https://x.example/v1"
        );
        for bad in [
            "",
            "api.openai.com",
            "http://api.openai.com",
            "ftp://api.openai.com",
            "https://",
            "https://localhost/v1",
            "https://LOCALHOST./v1",
            "https://a.localhost",
            "https://127.0.0.1",
            "https://10.1.2.3",
            "https://172.16.0.1",
            "https://192.168.0.1",
            "https://169.254.169.254",
            "https://0.0.0.0",
            "https://100.64.0.1",
            "https://[::1]",
            "https://[::]",
            "https://[fd00::1]",
            "https://[fe80::1]",
            "https://[::ffff:127.0.0.1]",
            "https://user:pw@api.openai.com",
            "https://api.openai.com/v1?x=1",
        ] {
            let e = base_url(&p, "base_url", bad).unwrap_err().to_string();
            assert!(e.contains("base_url"), "{bad}: {e}");
        }
    }

    #[test]
    fn policy_relaxations_and_allowlist() {
        let open = UpstreamPolicy {
            allow_insecure: true,
            allow_private: true,
            host_allowlist: vec![],
        };
        assert!(base_url(&open, "base_url", "http://127.0.0.1:8080/v1").is_ok());
        assert!(base_url(&open, "base_url", "http://localhost:1").is_ok());
        let listed = UpstreamPolicy {
            host_allowlist: vec!["API.openai.com".into(), "[2001:db8::1]".into()],
            ..strict()
        };
        assert!(base_url(&listed, "base_url", "https://api.openai.com").is_ok());
        assert!(base_url(&listed, "base_url", "https://[2001:db8::1]/v1").is_ok());
        assert!(base_url(&listed, "base_url", "https://evil.example").is_err());
    }

    #[test]
    fn proxies() {
        assert_eq!(proxy_url("proxy_url", " ").unwrap(), "");
        for ok in [
            "http://p:1",
            "https://p",
            "socks5://u:pw@10.0.0.1:1080",
            "socks5h://p:1080",
        ] {
            assert!(proxy_url("proxy_url", ok).is_ok(), "{ok}");
        }
        for bad in ["ftp://p", "socks4://p:1", "p:1080", "http://"] {
            let e = proxy_url("proxy_url", bad).unwrap_err().to_string();
            assert!(e.contains("proxy_url"), "{bad}: {e}");
        }
        assert_eq!(
            strip_credentials("socks5://u:secret@10.0.0.1:1080"),
            "socks5://10.0.0.1:1080"
        );
        assert_eq!(
            strip_credentials("http://u:secret@proxy.example:3128/"),
            "http://proxy.example:3128"
        );
        assert_eq!(strip_credentials(""), "");
    }
}

/// Property tests over arbitrary input (conventions in data-plane `proxy/fuzz_tests.rs`:
/// `PROPTEST_CASES` raises the case count).
#[cfg(test)]
mod fuzz_tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any text: a clear error or a proxy URL of an allowed scheme with a host, whose
        /// operator view carries no password.
        #[test]
        fn proxy_urls_never_panic(
            s in ".{0,60}|(http|https|socks5|socks5h|ftp)://([a-z]{0,6}(:[^@/]{0,8})?@)?[a-z0-9.:\\[\\]-]{0,24}(/.{0,8})?"
        ) {
            if let Ok(v) = proxy_url("proxy_url", &s)
                && !v.is_empty()
            {
                let url = Url::parse(&v).unwrap();
                prop_assert!(PROXY_SCHEMES.contains(&url.scheme()));
                let shown = strip_credentials(&v);
                let shown_url = Url::parse(&shown).unwrap();
                prop_assert!(shown_url.password().is_none());
            }
        }

        /// Any text: a clear error or a base URL that validates again to itself.
        #[test]
        fn base_urls_never_panic(
            s in ".{0,60}|https?://[a-z0-9.:\\[\\]-]{0,30}(/[a-z0-9/]{0,10})?",
            allow_private in any::<bool>(),
            allow_insecure in any::<bool>(),
        ) {
            let policy = UpstreamPolicy {
                allow_private,
                allow_insecure,
                ..UpstreamPolicy::default()
            };
            if let Ok(v) = base_url(&policy, "base_url", &s) {
                prop_assert_eq!(base_url(&policy, "base_url", &v).ok(), Some(v));
            }
        }
    }
}

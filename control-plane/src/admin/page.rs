//! Pagination at the edge: `PageRequest` → storage `Page`, and the opaque page token.
//!
//! The token is URL-safe base64 (no padding) of `v1:<last id>`. Clients must treat it as
//! opaque; the version tag lets the format change without misreading old tokens.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use tollgate_shared::proto::admin::v1 as pb;

use crate::error::{Error, Result};
use crate::model::Page;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 1000;

/// Converts a request page (absent = first page of the default size).
pub fn page(req: Option<&pb::PageRequest>) -> Result<Page> {
    let Some(req) = req else {
        return Ok(Page::default());
    };
    let limit = match req.limit {
        0 => DEFAULT_LIMIT,
        n if n > MAX_LIMIT => {
            return Err(Error::invalid(
                "page.limit",
                format!("must be at most {MAX_LIMIT} (got {n})"),
            ));
        }
        n => n,
    };
    let after_id = decode_token(&req.page_token)?;
    Ok(Page { after_id, limit })
}

/// The token for the page after `next_after_id`; empty when there is none.
pub fn next_token(next_after_id: Option<i64>) -> String {
    next_after_id.map(encode_token).unwrap_or_default()
}

fn encode_token(after_id: i64) -> String {
    B64.encode(format!("v1:{after_id}"))
}

fn decode_token(token: &str) -> Result<i64> {
    if token.is_empty() {
        return Ok(0);
    }
    let bad = || Error::invalid("page.page_token", "malformed page token");
    let raw = B64.decode(token.trim()).map_err(|_| bad())?;
    let text = std::str::from_utf8(&raw).map_err(|_| bad())?;
    let id: i64 = text
        .strip_prefix("v1:")
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)?;
    if id < 0 {
        return Err(bad());
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(limit: u32, token: &str) -> pb::PageRequest {
        pb::PageRequest {
            limit,
            page_token: token.to_owned(),
        }
    }

    #[test]
    fn defaults_and_limits() {
        assert_eq!(page(None).unwrap(), Page::default());
        assert_eq!(page(Some(&req(0, ""))).unwrap().limit, DEFAULT_LIMIT);
        assert_eq!(page(Some(&req(1000, ""))).unwrap().limit, 1000);
        let e = page(Some(&req(1001, ""))).unwrap_err().to_string();
        assert!(e.contains("page.limit"), "{e}");
    }

    #[test]
    fn token_round_trips_and_rejects_garbage() {
        let t = next_token(Some(42));
        assert_eq!(page(Some(&req(5, &t))).unwrap().after_id, 42);
        assert_eq!(next_token(None), "");
        for bad in [
            "%%%",
            "bm90LWEtdG9rZW4",
            &B64.encode("v1:-3"),
            &B64.encode("42"),
        ] {
            let e = page(Some(&req(0, bad))).unwrap_err().to_string();
            assert!(e.contains("page.page_token"), "{bad}: {e}");
        }
    }
}

//! Field validators used by every Admin handler. Each failure is
//! `Error::InvalidArgument` naming the request field, so operators see exactly what to fix.
//! Handlers validate the whole request with these before they write anything.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use tollgate_shared::DAY_MS;
use tollgate_shared::Multiplier;
use tollgate_shared::domain::UnknownValue;

use crate::error::{Error, Result};

/// Longest accepted name (users, groups, keys, accounts).
pub const MAX_NAME: usize = 200;
/// Longest accepted free text (notes, descriptions, reasons).
pub const MAX_TEXT: usize = 10_000;
/// Most entries in one IP allow or deny list.
pub const MAX_IP_RULES: usize = 256;

/// A vocabulary value ("active", "subscription", …); the error lists the allowed values.
pub fn vocab<T: FromStr<Err = UnknownValue>>(field: &str, value: &str) -> Result<T> {
    value
        .parse()
        .map_err(|e: UnknownValue| Error::invalid(field, e.to_string()))
}

/// Like [`vocab`], with `default` for the empty string.
pub fn vocab_or<T: FromStr<Err = UnknownValue>>(field: &str, value: &str, default: T) -> Result<T> {
    if value.is_empty() {
        Ok(default)
    } else {
        vocab(field, value)
    }
}

/// Optional vocabulary filter: empty = no filter.
pub fn vocab_filter<T: FromStr<Err = UnknownValue>>(field: &str, value: &str) -> Result<Option<T>> {
    if value.is_empty() {
        Ok(None)
    } else {
        vocab(field, value).map(Some)
    }
}

/// An exact, non-negative decimal multiplier ("1", "0.5"; at most 6 decimals).
pub fn multiplier(field: &str, value: &str) -> Result<Multiplier> {
    if value.trim().is_empty() {
        return Err(Error::invalid(
            field,
            "must be a decimal number such as \"1\" or \"0.5\"",
        ));
    }
    value
        .parse()
        .map_err(|e: tollgate_shared::money::MoneyError| Error::invalid(field, e.to_string()))
}

/// Like [`multiplier`], with `default` for the empty string.
pub fn multiplier_or(field: &str, value: &str, default: Multiplier) -> Result<Multiplier> {
    if value.is_empty() {
        Ok(default)
    } else {
        multiplier(field, value)
    }
}

pub fn non_negative_i64(field: &str, v: i64) -> Result<i64> {
    if v < 0 {
        return Err(Error::invalid(
            field,
            format!("must not be negative (got {v})"),
        ));
    }
    Ok(v)
}

pub fn non_negative_i32(field: &str, v: i32) -> Result<i32> {
    if v < 0 {
        return Err(Error::invalid(
            field,
            format!("must not be negative (got {v})"),
        ));
    }
    Ok(v)
}

/// A required short name: trimmed, non-empty, at most [`MAX_NAME`] characters.
pub fn required_name(field: &str, value: &str) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    optional_name(field, v)
}

/// An optional short name: trimmed, at most [`MAX_NAME`] characters, no control characters.
pub fn optional_name(field: &str, value: &str) -> Result<String> {
    let v = value.trim();
    if v.chars().count() > MAX_NAME {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_NAME} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(v.to_owned())
}

/// Free text (notes, descriptions): at most [`MAX_TEXT`] characters.
pub fn text(field: &str, value: &str) -> Result<String> {
    if value.chars().count() > MAX_TEXT {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_TEXT} characters"),
        ));
    }
    Ok(value.to_owned())
}

/// An e-mail address: trimmed, `local@domain`, no whitespace.
pub fn email(field: &str, value: &str) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    let well_formed = v.len() <= 254
        && !v.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(v.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if !well_formed {
        return Err(Error::invalid(field, "is not an e-mail address"));
    }
    Ok(v.to_owned())
}

/// A referenced id where 0 means "none": `Ok(None)` for 0, an error for negatives.
pub fn optional_id(field: &str, id: i64) -> Result<Option<i64>> {
    match id {
        0 => Ok(None),
        i if i < 0 => Err(Error::invalid(
            field,
            format!("must be a positive id (got {i})"),
        )),
        i => Ok(Some(i)),
    }
}

/// A referenced id that is required (> 0).
pub fn required_id(field: &str, id: i64) -> Result<i64> {
    optional_id(field, id)?.ok_or_else(|| Error::invalid(field, "is required"))
}

/// A time that must lie in the future.
pub fn future_time(field: &str, at_ms: i64, now_ms: i64) -> Result<i64> {
    if at_ms <= now_ms {
        return Err(Error::invalid(
            field,
            format!("must be in the future (got {at_ms}, now is {now_ms})"),
        ));
    }
    Ok(at_ms)
}

/// `start + days`, with `days > 0`.
pub fn days_after(field: &str, start_ms: i64, days: u32) -> Result<i64> {
    if days == 0 {
        return Err(Error::invalid(field, "must be at least 1 day"));
    }
    i64::from(days)
        .checked_mul(DAY_MS)
        .and_then(|d| start_ms.checked_add(d))
        .ok_or_else(|| Error::invalid(field, "is too large"))
}

/// IPs and CIDRs (v4 and v6), normalised: CIDRs to their network address, IPs to their
/// canonical text. Duplicates are dropped, order kept.
pub fn ip_list(field: &str, values: &[String]) -> Result<Vec<String>> {
    if values.len() > MAX_IP_RULES {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_IP_RULES} entries"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for raw in values {
        let v = raw.trim();
        let norm = if v.contains('/') {
            IpNet::from_str(v).ok().map(|n| n.trunc().to_string())
        } else {
            IpAddr::from_str(v).ok().map(|a| a.to_string())
        }
        .ok_or_else(|| Error::invalid(field, format!("{raw:?} is not an IP address or CIDR")))?;
        if !out.contains(&norm) {
            out.push(norm);
        }
    }
    Ok(out)
}

/// A value that goes into an HTTP header (user agent): visible ASCII and spaces only.
pub fn header_text(field: &str, value: &str) -> Result<String> {
    if value.len() > 1000 || !value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(Error::invalid(
            field,
            "must be at most 1000 printable ASCII characters",
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_shared::domain::KeyStatus;

    fn field_of(e: Error) -> String {
        match e {
            Error::InvalidArgument { field, .. } => field,
            other => panic!("not InvalidArgument: {other}"),
        }
    }

    #[test]
    fn ip_lists() {
        let ok = ip_list(
            "ip_allow",
            &[
                "10.0.0.1".into(),
                " 192.168.1.5/24 ".into(),
                "2001:db8::/32".into(),
                "::1".into(),
                "10.0.0.1".into(),
            ],
        )
        .unwrap();
        assert_eq!(ok, ["10.0.0.1", "192.168.1.0/24", "2001:db8::/32", "::1"]);
        for bad in [
            "",
            "10.0.0.300",
            "10.0.0.0/33",
            "example.com",
            "1.2.3.4/x",
            "::/129",
        ] {
            let e = ip_list("ip_deny", &[bad.to_owned()]).unwrap_err();
            assert_eq!(field_of(e), "ip_deny", "{bad}");
        }
    }

    #[test]
    fn multipliers_and_vocab() {
        assert_eq!(multiplier("m", "0").unwrap(), Multiplier::ZERO);
        assert_eq!(
            multiplier_or("m", "", Multiplier::ONE).unwrap(),
            Multiplier::ONE
        );
        for bad in ["-1", "x", "", "0.0000001", "NaN"] {
            assert_eq!(field_of(multiplier("m", bad).unwrap_err()), "m", "{bad}");
        }
        assert_eq!(
            vocab::<KeyStatus>("status", "expired").unwrap(),
            KeyStatus::Expired
        );
        let e = vocab::<KeyStatus>("status", "paused")
            .unwrap_err()
            .to_string();
        assert!(e.contains("status") && e.contains("quota_exhausted"), "{e}");
    }

    #[test]
    fn texts_ids_times() {
        assert!(email("email", "a@b.example").is_ok());
        for bad in ["", "   ", "nobody", "@x", "a@", "a b@c", "a@b@c"] {
            assert_eq!(field_of(email("email", bad).unwrap_err()), "email", "{bad}");
        }
        assert_eq!(required_name("name", "  g  ").unwrap(), "g");
        assert!(required_name("name", " ").is_err());
        assert_eq!(optional_id("group_id", 0).unwrap(), None);
        assert!(optional_id("group_id", -1).is_err());
        assert!(future_time("t", 10, 10).is_err());
        assert_eq!(days_after("d", 0, 2).unwrap(), 2 * DAY_MS);
        assert!(days_after("d", 0, 0).is_err());
        assert!(header_text("ua", "a\r\nb").is_err());
    }
}

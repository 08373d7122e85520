//! Conversions at the CLI edge: clap value parsers for what operators type (USD decimals,
//! RFC 3339 times, multipliers, IPs, `a=b` pairs) and formatters for what the API returns.
//! Money is exact throughout (`parse_usd`/`format_usd`, never floating point).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tollgate_shared::Multiplier;
use tollgate_shared::money::parse_usd;
use tollgate_shared::proto::admin::v1 as pb;

const MS_PER_DAY: i64 = 86_400_000;

/// Default per-group priority of an account membership given without `:PRIORITY`.
pub const DEFAULT_GROUP_PRIORITY: i32 = 50;

/// A non-negative USD amount ("12.50", "100", "$0.25") as nano-USD, exactly.
pub fn usd(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let t = t.strip_prefix('$').unwrap_or(t);
    let nanos = parse_usd(t).map_err(|e| e.to_string())?;
    if nanos < 0 {
        return Err(format!("'{t}' must not be negative"));
    }
    Ok(nanos)
}

/// A rate or cost multiplier: validated exactly, passed on as the decimal string typed.
pub fn multiplier(s: &str) -> Result<String, String> {
    let t = s.trim();
    t.parse::<Multiplier>().map_err(|e| e.to_string())?;
    Ok(t.to_owned())
}

/// A date ("2025-01-31", its UTC midnight) or an RFC 3339 time ("2025-01-31T12:00:00Z",
/// "2025-01-31T13:00:00+01:00") as unix ms; sub-millisecond digits are dropped.
pub fn timestamp(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let date_only = time::macros::format_description!("[year]-[month]-[day]");
    let dt = match time::Date::parse(t, &date_only) {
        Ok(date) => date.midnight().assume_utc(),
        Err(_) => OffsetDateTime::parse(t, &Rfc3339).map_err(|e| {
            format!("'{t}' is neither a date like 2025-01-31 nor an RFC 3339 time like 2025-01-31T12:00:00Z ({e})")
        })?,
    };
    let ms = dt.unix_timestamp_nanos().div_euclid(1_000_000);
    i64::try_from(ms).map_err(|_| format!("'{t}' is out of range"))
}

/// Unix ms as RFC 3339 in UTC; the raw number if it is out of the representable range.
pub fn format_time(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// `now + days`, as unix ms.
pub fn days_from_now(days: u32) -> i64 {
    tollgate_shared::now_ms().saturating_add(i64::from(days).saturating_mul(MS_PER_DAY))
}

/// `now - days`, as unix ms.
pub fn days_ago(days: u32) -> i64 {
    tollgate_shared::now_ms().saturating_sub(i64::from(days).saturating_mul(MS_PER_DAY))
}

/// An IP address or CIDR network ("10.0.0.1", "10.0.0.0/8", "::1").
pub fn ip_or_cidr(s: &str) -> Result<String, String> {
    let t = s.trim();
    let ok = t.parse::<std::net::IpAddr>().is_ok() || t.parse::<ipnet::IpNet>().is_ok();
    if ok {
        Ok(t.to_owned())
    } else {
        Err(format!("'{t}' is neither an IP address nor a CIDR network"))
    }
}

/// `requested=upstream` (a model mapping entry).
pub fn mapping(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((from, to)) if !from.trim().is_empty() && !to.trim().is_empty() => {
            Ok((from.trim().to_owned(), to.trim().to_owned()))
        }
        _ => Err(format!(
            "'{s}' is not of the form requested-model=upstream-model"
        )),
    }
}

/// `GROUP_ID` or `GROUP_ID:PRIORITY` (an account's membership of a group).
pub fn account_group(s: &str) -> Result<pb::AccountGroup, String> {
    let t = s.trim();
    let (id, priority) = match t.split_once(':') {
        Some((id, p)) => (id, Some(p)),
        None => (t, None),
    };
    let group_id = id
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("'{t}': the group id must be a positive integer"))?;
    let priority = match priority {
        Some(p) => p
            .trim()
            .parse::<i32>()
            .map_err(|_| format!("'{t}': the priority must be an integer"))?,
        None => DEFAULT_GROUP_PRIORITY,
    };
    Ok(pb::AccountGroup { group_id, priority })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_is_exact_and_non_negative() {
        assert_eq!(usd("12.50"), Ok(12_500_000_000));
        assert_eq!(usd("100"), Ok(100_000_000_000));
        assert_eq!(usd("$0.25"), Ok(250_000_000));
        assert_eq!(usd(" 0.000000001 "), Ok(1));
        assert_eq!(usd("0.1"), Ok(100_000_000));
        assert!(usd("0.0000000001").is_err());
        assert!(usd("-1").is_err());
        assert!(usd("ten").is_err());
        assert!(usd("1e3").is_err());
    }

    #[test]
    fn multipliers_are_validated_not_rewritten() {
        assert_eq!(multiplier("1.25"), Ok("1.25".to_owned()));
        assert_eq!(multiplier(" 0 "), Ok("0".to_owned()));
        assert!(multiplier("-1").is_err());
        assert!(multiplier("0.0000001").is_err());
        assert!(multiplier("x").is_err());
    }

    #[test]
    fn times_round_trip() {
        assert_eq!(timestamp("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(timestamp("2025-01-31T12:00:00Z"), Ok(1_738_324_800_000));
        assert_eq!(
            timestamp("2025-01-31T13:00:00+01:00"),
            Ok(1_738_324_800_000)
        );
        assert_eq!(timestamp("2025-01-31T12:00:00.123Z"), Ok(1_738_324_800_123));
        // A date alone is its UTC midnight.
        assert_eq!(timestamp("2025-01-31"), Ok(1_738_281_600_000));
        assert_eq!(timestamp(" 1970-01-01 "), Ok(0));
        assert!(timestamp("2025-02-30").is_err());
        assert!(timestamp("2025-1-31").is_err());
        assert!(timestamp("yesterday").is_err());
        assert_eq!(format_time(1_738_324_800_000), "2025-01-31T12:00:00Z");
        assert_eq!(format_time(1_738_324_800_123), "2025-01-31T12:00:00.123Z");
        for ms in [0, 1, 1_738_324_800_123, -1_000] {
            assert_eq!(timestamp(&format_time(ms)), Ok(ms));
        }
        assert_eq!(format_time(i64::MAX), i64::MAX.to_string());
    }

    #[test]
    fn days_are_relative_to_now() {
        let before = tollgate_shared::now_ms();
        let t = days_from_now(2);
        assert!(t >= before + 2 * MS_PER_DAY && t < before + 2 * MS_PER_DAY + 60_000);
        assert!(days_ago(1) <= before - MS_PER_DAY + 60_000);
    }

    #[test]
    fn ips_pairs_and_groups() {
        assert!(ip_or_cidr("10.0.0.1").is_ok());
        assert!(ip_or_cidr("10.0.0.0/8").is_ok());
        assert!(ip_or_cidr("2001:db8::/32").is_ok());
        assert!(ip_or_cidr("10.0.0.300").is_err());
        assert!(ip_or_cidr("").is_err());
        assert_eq!(
            mapping("gpt-5=gpt-5.1"),
            Ok(("gpt-5".to_owned(), "gpt-5.1".to_owned()))
        );
        assert!(mapping("gpt-5").is_err());
        assert!(mapping("=x").is_err());
        assert_eq!(
            account_group("3:10"),
            Ok(pb::AccountGroup {
                group_id: 3,
                priority: 10
            })
        );
        assert_eq!(
            account_group("4").map(|g| g.priority),
            Ok(DEFAULT_GROUP_PRIORITY)
        );
        assert!(account_group("0").is_err());
        assert!(account_group("a:1").is_err());
        assert!(account_group("3:x").is_err());
    }
}

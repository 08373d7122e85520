//! Small closed vocabularies both planes agree on. They travel as lower-case strings on
//! the wire and in the database; parsing is the validation.

use std::fmt;
use std::str::FromStr;

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $s),+ }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s { $($s => Ok(Self::$variant),)+ _ => Err(UnknownValue {
                    what: stringify!($name),
                    value: s.to_owned(),
                    allowed: &[$($s),+],
                }) }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{value}' (expected one of: {})", allowed.join(", "))]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
    pub allowed: &'static [&'static str],
}

string_enum!(
    /// Status of an API key.
    KeyStatus { Active => "active", Disabled => "disabled", QuotaExhausted => "quota_exhausted", Expired => "expired" }
);
string_enum!(UserStatus { Active => "active", Disabled => "disabled" });
string_enum!(UserRole { User => "user", Admin => "admin" });
string_enum!(GroupStatus { Active => "active", Disabled => "disabled" });
string_enum!(GroupKind { Standard => "standard", Subscription => "subscription" });
string_enum!(Platform { OpenAi => "openai" });
string_enum!(AccountKind { ApiKey => "api_key", OAuth => "oauth" });
string_enum!(AccountStatus { Active => "active", Disabled => "disabled", Error => "error" });
string_enum!(SubscriptionStatus { Active => "active", Expired => "expired", Suspended => "suspended" });
string_enum!(BillingMode { Balance => "balance", Subscription => "subscription" });
string_enum!(
    /// What an admin credential may do. Each scope includes the ones before it:
    /// `read` (queries and usage, no secrets) < `keys` (users' keys and balances) <
    /// `admin` (everything, including admin tokens).
    AdminScope { Read => "read", Keys => "keys", Admin => "admin" }
);

impl AdminScope {
    /// Whether a credential with this scope may call an RPC that needs `needed`.
    pub fn allows(self, needed: AdminScope) -> bool {
        self.rank() >= needed.rank()
    }

    fn rank(self) -> u8 {
        match self {
            Self::Read => 0,
            Self::Keys => 1,
            Self::Admin => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_error_lists_choices() {
        for s in KeyStatus::ALL {
            assert_eq!(s.as_str().parse::<KeyStatus>(), Ok(*s));
        }
        let e = "paused".parse::<KeyStatus>().unwrap_err();
        assert!(
            e.to_string()
                .contains("active, disabled, quota_exhausted, expired")
        );
    }

    #[test]
    fn admin_scopes_include_the_lower_ones() {
        use AdminScope::*;
        assert!(Admin.allows(Keys) && Admin.allows(Read) && Admin.allows(Admin));
        assert!(Keys.allows(Read) && Keys.allows(Keys) && !Keys.allows(Admin));
        assert!(Read.allows(Read) && !Read.allows(Keys) && !Read.allows(Admin));
    }
}

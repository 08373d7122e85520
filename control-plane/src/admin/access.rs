//! The one table of what every Admin RPC needs: its scope, and whether it writes (and so
//! is recorded in the audit log). The guard (`guard.rs`) looks every call up here before
//! any handler runs; a method missing from the table is refused, and a test checks that
//! every RPC of the service descriptor has an entry.

use tollgate_shared::domain::AdminScope;

/// Fully qualified name of the Admin service, as in the request path.
pub const SERVICE: &str = "tollgate.admin.v1.Admin";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// The smallest scope allowed to call the RPC.
    pub scope: AdminScope,
    /// The RPC changes state: each success is recorded in the audit log.
    pub audited: bool,
}

const fn read() -> Option<Access> {
    Some(Access {
        scope: AdminScope::Read,
        audited: false,
    })
}

const fn write(scope: AdminScope) -> Option<Access> {
    Some(Access {
        scope,
        audited: true,
    })
}

/// What `method` (the RPC name, e.g. `CreateKey`) needs; `None` for an unknown method.
pub fn access(method: &str) -> Option<Access> {
    use AdminScope::{Admin, Keys};
    match method {
        // Reads: queries and usage, list/get of everything. No reply carries a secret.
        "GetUser" | "ListUsers" | "ListBalanceLedger" => read(),
        "GetGroup" | "ListGroups" => read(),
        "GetKey" | "ListKeys" => read(),
        "GetAccount" | "ListAccounts" => read(),
        "GetSubscription" | "ListSubscriptions" => read(),
        "GetPrice" | "ListPrices" => read(),
        "QueryUsage" | "UsageSeries" => read(),
        "ListAuditLog" => read(),
        "ListDeadLetters" | "AuditBooks" => read(),

        // `keys`: users' keys and balances.
        "CreateKey" | "UpdateKey" | "DisableKey" | "EnableKey" | "DeleteKey" => write(Keys),
        "ResetKeyQuota" | "ClearKeyExpiration" => write(Keys),
        "AdjustBalance" => write(Keys),
        // Charges a user for a dead-lettered record: a balance change.
        "RechargeDeadLetter" => write(Keys),

        // `admin`: everything else.
        "CreateUser" | "UpdateUser" | "DeleteUser" => write(Admin),
        "CreateGroup" | "UpdateGroup" | "DeleteGroup" => write(Admin),
        "CreateAccount" | "UpdateAccount" | "DeleteAccount" | "SetAccountGroups" => write(Admin),
        "ClearAccountError" | "ClearAccountRateLimit" => write(Admin),
        // Starts an onboarding held in memory for minutes; the account is written (and
        // audited) by ExchangeOAuthCode.
        "GenerateOAuthUrl" => Some(Access {
            scope: Admin,
            audited: false,
        }),
        "ExchangeOAuthCode" => write(Admin),
        "AssignSubscription" | "ExtendSubscription" | "RevokeSubscription" => write(Admin),
        "SetPrice" | "DeletePrice" => write(Admin),
        "CreateAdminToken" | "RevokeAdminToken" => write(Admin),
        "ListAdminTokens" => Some(Access {
            scope: Admin,
            audited: false,
        }),
        _ => None,
    }
}

/// The RPC name of an Admin request path (`/tollgate.admin.v1.Admin/CreateKey`).
pub fn method_of(path: &str) -> Option<&str> {
    path.strip_prefix('/')?
        .strip_prefix(SERVICE)?
        .strip_prefix('/')
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;

    fn admin_methods() -> Vec<String> {
        let pool = DescriptorPool::decode(tollgate_shared::proto::FILE_DESCRIPTOR_SET).unwrap();
        let service = pool.get_service_by_name(SERVICE).unwrap();
        service.methods().map(|m| m.name().to_owned()).collect()
    }

    #[test]
    fn every_admin_rpc_has_an_entry() {
        let methods = admin_methods();
        assert!(methods.len() > 40, "{methods:?}");
        let missing: Vec<_> = methods.iter().filter(|m| access(m).is_none()).collect();
        assert!(missing.is_empty(), "RPCs without a scope: {missing:?}");
    }

    #[test]
    fn the_table_names_no_rpc_the_service_lacks() {
        // A misspelt entry would leave the real RPC unlisted (and so refused).
        let methods = admin_methods();
        let src = include_str!("access.rs");
        let table = &src[..src.find("#[cfg(test)]").unwrap()];
        for quoted in table.split('"').skip(1).step_by(2) {
            if quoted
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_uppercase())
                && !quoted.contains('.')
            {
                assert!(
                    methods.iter().any(|m| m == quoted),
                    "{quoted} is not an Admin RPC"
                );
            }
        }
    }

    #[test]
    fn reads_are_read_and_writes_are_audited() {
        for m in admin_methods() {
            let a = access(&m).unwrap();
            let reads = m.starts_with("Get") || m.starts_with("List") || m.starts_with("Query");
            if reads {
                assert!(!a.audited, "{m}");
            }
            if a.scope == AdminScope::Read {
                assert!(!a.audited, "a read-scoped RPC must not write: {m}");
            }
        }
        assert_eq!(access("CreateKey").unwrap().scope, AdminScope::Keys);
        assert_eq!(access("AdjustBalance").unwrap().scope, AdminScope::Keys);
        assert_eq!(access("CreateUser").unwrap().scope, AdminScope::Admin);
        assert_eq!(access("CreateAdminToken").unwrap().scope, AdminScope::Admin);
        assert_eq!(access("QueryUsage").unwrap().scope, AdminScope::Read);
    }

    #[test]
    fn method_names_come_from_the_admin_path_only() {
        assert_eq!(
            method_of("/tollgate.admin.v1.Admin/CreateKey"),
            Some("CreateKey")
        );
        assert_eq!(method_of("/tollgate.gateway.v1.Gateway/Admit"), None);
        assert_eq!(method_of("/tollgate.admin.v1.AdminX/CreateKey"), None);
    }
}

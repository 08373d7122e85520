//! The `Admin` gRPC service: operators and internal services manage users, groups, keys,
//! accounts, subscriptions, prices, admin tokens and read usage and the audit log. Every
//! call passes [`AdminGuard`] first: it authenticates the caller (bootstrap token, named
//! admin token or admin client certificate: `caller`) and checks the scope the RPC needs
//! in the one table of `access`. Input is validated before anything is written, and
//! every successful write is recorded in the audit log (`audit`).
//!
//! `impl Admin` only routes: each handler module (`users`, `groups`, `keys`, `accounts`,
//! `subscriptions`, `prices`, `usage`) validates the whole request (`validate`,
//! `account_urls`, `refs`, `page`), calls storage, publishes the invalidation, and converts
//! the result back (`convert`).

mod access;
mod account_urls;
mod accounts;
mod admin_tokens;
mod audit;
mod audit_log;
mod books;
mod caller;
mod cert_scopes;
mod convert;
mod groups;
mod guard;
mod key_secret;
mod keys;
mod oauth;
mod page;
mod prices;
mod refs;
mod subscriptions;
#[cfg(test)]
mod tests;
mod usage;
mod users;
mod validate;

use tollgate_shared::proto::admin::v1 as pb;
use tollgate_shared::proto::admin::v1::admin_server::Admin;
use tonic::{Request, Response, Status};

pub use access::{Access, access};
pub use admin_tokens::TOKEN_PREFIX;
pub use audit::REDACTED;
pub use caller::{ActorKind, Authenticator, Caller};
pub use cert_scopes::CertScopes;
pub use guard::AdminGuard;

use crate::config::Config;
use crate::events::Invalidations;
use crate::storage::Store;

/// Upstream base-URL policy for accounts (see `accounts.md`).
#[derive(Debug, Clone, Default)]
pub struct UpstreamPolicy {
    pub allow_insecure: bool,
    pub allow_private: bool,
    pub host_allowlist: Vec<String>,
}

/// Everything the Admin service needs.
#[derive(Debug, Clone)]
pub struct AdminContext {
    pub store: Store,
    pub invalidations: Invalidations,
    pub upstream_policy: UpstreamPolicy,
    pub key_prefix: String,
    /// Pending subscription-login onboardings and the token endpoint.
    pub oauth: crate::oauth::Onboarding,
    /// Pricing for dead-letter re-charges (the fallback price, estimates).
    pub billing: crate::billing::BillingSettings,
}

impl AdminContext {
    pub fn new(store: Store, invalidations: Invalidations, config: &Config) -> Self {
        Self {
            store,
            invalidations,
            upstream_policy: UpstreamPolicy {
                allow_insecure: config.allow_insecure_upstreams,
                allow_private: config.allow_private_upstreams,
                host_allowlist: config.upstream_host_allowlist.clone(),
            },
            key_prefix: config.key_prefix.clone(),
            oauth: crate::oauth::Onboarding::new(crate::oauth::OAuthSettings::from_config(config)),
            billing: crate::billing::BillingSettings::from_config(config),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdminService {
    ctx: AdminContext,
}

impl AdminService {
    pub fn new(ctx: AdminContext) -> Self {
        Self { ctx }
    }
}

/// A handler's result as a gRPC reply; the error becomes its status in one place
/// (`From<Error> for Status`).
fn reply<T>(result: crate::error::Result<T>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
}

/// The caller [`AdminGuard`] authenticated. Missing only if the service was mounted
/// without its guard: refuse rather than write unattributed.
fn caller_of<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| {
            Status::from(crate::error::Error::Internal(
                "Admin request without an authenticated caller".into(),
            ))
        })
}

impl AdminService {
    /// Runs a write handler and, when it succeeds, records it in the audit log: the
    /// caller, the RPC `action`, the `target` row (from the reply or the request) and the
    /// request's allow-listed fields. Recorded right after the write commits (the handlers
    /// own their storage transactions); see `audit::record` for a failed record.
    async fn write<'a, Req, Res, Fut>(
        &'a self,
        action: &'static str,
        request: Request<Req>,
        target: impl FnOnce(&Req, &Res) -> String,
        handler: impl FnOnce(&'a AdminContext, Req) -> Fut,
    ) -> Result<Response<Res>, Status>
    where
        Req: prost::Message + Clone,
        Fut: std::future::Future<Output = crate::error::Result<Res>>,
    {
        let caller = caller_of(&request)?;
        let req = request.into_inner();
        let mut entry = audit::entry(&caller, action, &req);
        let kept = req.clone();
        let result = handler(&self.ctx, req).await;
        if let Ok(res) = &result {
            entry.target = target(&kept, res);
            audit::record(&self.ctx.store, entry).await;
        }
        reply(result)
    }
}

/// Audit targets: the id in the reply, or the id the request named.
fn reply_id<Req, Res: HasId>(_: &Req, res: &Res) -> String {
    res.id().to_string()
}

fn request_id<Req: HasId, Res>(req: &Req, _: &Res) -> String {
    req.id().to_string()
}

trait HasId {
    fn id(&self) -> i64;
}

macro_rules! has_id {
    ($($t:ty),+) => { $(impl HasId for $t { fn id(&self) -> i64 { self.id } })+ };
}
has_id!(
    pb::User,
    pb::Group,
    pb::ApiKey,
    pb::Account,
    pb::Subscription,
    pb::DeleteUserRequest,
    pb::DeleteGroupRequest,
    pb::KeyIdRequest,
    pb::DeleteAccountRequest
);

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        self.write("CreateUser", request, reply_id, users::create)
            .await
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        reply(users::get(&self.ctx, request.into_inner()).await)
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        reply(users::list(&self.ctx, request.into_inner()).await)
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        self.write("UpdateUser", request, reply_id, users::update)
            .await
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        self.write("DeleteUser", request, request_id, users::delete)
            .await
    }

    async fn adjust_balance(
        &self,
        request: Request<pb::AdjustBalanceRequest>,
    ) -> Result<Response<pb::AdjustBalanceResponse>, Status> {
        self.write(
            "AdjustBalance",
            request,
            |r: &pb::AdjustBalanceRequest, _: &_| r.user_id.to_string(),
            users::adjust_balance,
        )
        .await
    }

    async fn list_balance_ledger(
        &self,
        request: Request<pb::ListBalanceLedgerRequest>,
    ) -> Result<Response<pb::ListBalanceLedgerResponse>, Status> {
        reply(users::ledger(&self.ctx, request.into_inner()).await)
    }

    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::Group>, Status> {
        self.write("CreateGroup", request, reply_id, groups::create)
            .await
    }

    async fn get_group(
        &self,
        request: Request<pb::GetGroupRequest>,
    ) -> Result<Response<pb::Group>, Status> {
        reply(groups::get(&self.ctx, request.into_inner()).await)
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        reply(groups::list(&self.ctx, request.into_inner()).await)
    }

    async fn update_group(
        &self,
        request: Request<pb::UpdateGroupRequest>,
    ) -> Result<Response<pb::Group>, Status> {
        self.write("UpdateGroup", request, reply_id, groups::update)
            .await
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        self.write("DeleteGroup", request, request_id, groups::delete)
            .await
    }

    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        self.write(
            "CreateKey",
            request,
            |_: &_, r: &pb::CreateKeyResponse| {
                r.key.as_ref().map(|k| k.id.to_string()).unwrap_or_default()
            },
            keys::create,
        )
        .await
    }

    async fn get_key(
        &self,
        request: Request<pb::GetKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        reply(keys::get(&self.ctx, request.into_inner()).await)
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        reply(keys::list(&self.ctx, request.into_inner()).await)
    }

    async fn update_key(
        &self,
        request: Request<pb::UpdateKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        self.write("UpdateKey", request, reply_id, keys::update)
            .await
    }

    async fn disable_key(
        &self,
        request: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        self.write("DisableKey", request, reply_id, keys::disable)
            .await
    }

    async fn enable_key(
        &self,
        request: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        self.write("EnableKey", request, reply_id, keys::enable)
            .await
    }

    async fn delete_key(
        &self,
        request: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::DeleteKeyResponse>, Status> {
        self.write("DeleteKey", request, request_id, keys::delete)
            .await
    }

    async fn reset_key_quota(
        &self,
        request: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        self.write("ResetKeyQuota", request, reply_id, keys::reset_quota)
            .await
    }

    async fn clear_key_expiration(
        &self,
        request: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        self.write(
            "ClearKeyExpiration",
            request,
            reply_id,
            keys::clear_expiration,
        )
        .await
    }

    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        self.write("CreateAccount", request, reply_id, accounts::create)
            .await
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        reply(accounts::get(&self.ctx, request.into_inner()).await)
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        reply(accounts::list(&self.ctx, request.into_inner()).await)
    }

    async fn update_account(
        &self,
        request: Request<pb::UpdateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        self.write("UpdateAccount", request, reply_id, accounts::update)
            .await
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        self.write("DeleteAccount", request, request_id, accounts::delete)
            .await
    }

    async fn set_account_groups(
        &self,
        request: Request<pb::SetAccountGroupsRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        self.write("SetAccountGroups", request, reply_id, accounts::set_groups)
            .await
    }

    async fn clear_account_error(
        &self,
        request: Request<pb::AccountIdRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        self.write(
            "ClearAccountError",
            request,
            reply_id,
            accounts::clear_error,
        )
        .await
    }

    async fn clear_account_rate_limit(
        &self,
        request: Request<pb::AccountIdRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        self.write(
            "ClearAccountRateLimit",
            request,
            reply_id,
            accounts::clear_rate_limit,
        )
        .await
    }

    async fn generate_o_auth_url(
        &self,
        request: Request<pb::GenerateOAuthUrlRequest>,
    ) -> Result<Response<pb::GenerateOAuthUrlResponse>, Status> {
        reply(oauth::generate_url(&self.ctx, request.into_inner()).await)
    }

    async fn exchange_o_auth_code(
        &self,
        request: Request<pb::ExchangeOAuthCodeRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        self.write("ExchangeOAuthCode", request, reply_id, oauth::exchange_code)
            .await
    }

    async fn assign_subscription(
        &self,
        request: Request<pb::AssignSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        self.write(
            "AssignSubscription",
            request,
            reply_id,
            subscriptions::assign,
        )
        .await
    }

    async fn extend_subscription(
        &self,
        request: Request<pb::ExtendSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        self.write(
            "ExtendSubscription",
            request,
            reply_id,
            subscriptions::extend,
        )
        .await
    }

    async fn revoke_subscription(
        &self,
        request: Request<pb::RevokeSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        self.write(
            "RevokeSubscription",
            request,
            reply_id,
            subscriptions::revoke,
        )
        .await
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        reply(subscriptions::get(&self.ctx, request.into_inner()).await)
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        reply(subscriptions::list(&self.ctx, request.into_inner()).await)
    }

    async fn set_price(
        &self,
        request: Request<pb::SetPriceRequest>,
    ) -> Result<Response<pb::Price>, Status> {
        self.write(
            "SetPrice",
            request,
            |_: &_, r: &pb::Price| r.model.clone(),
            prices::set,
        )
        .await
    }

    async fn get_price(
        &self,
        request: Request<pb::GetPriceRequest>,
    ) -> Result<Response<pb::Price>, Status> {
        reply(prices::get(&self.ctx, request.into_inner()).await)
    }

    async fn list_prices(
        &self,
        request: Request<pb::ListPricesRequest>,
    ) -> Result<Response<pb::ListPricesResponse>, Status> {
        reply(prices::list(&self.ctx, request.into_inner()).await)
    }

    async fn delete_price(
        &self,
        request: Request<pb::DeletePriceRequest>,
    ) -> Result<Response<pb::DeletePriceResponse>, Status> {
        self.write(
            "DeletePrice",
            request,
            |r: &pb::DeletePriceRequest, _: &_| r.model.clone(),
            prices::delete,
        )
        .await
    }

    async fn query_usage(
        &self,
        request: Request<pb::QueryUsageRequest>,
    ) -> Result<Response<pb::QueryUsageResponse>, Status> {
        reply(usage::query(&self.ctx, request.into_inner()).await)
    }

    async fn usage_series(
        &self,
        request: Request<pb::UsageSeriesRequest>,
    ) -> Result<Response<pb::UsageSeriesResponse>, Status> {
        reply(usage::series(&self.ctx, request.into_inner()).await)
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        reply(books::list_dead_letters(&self.ctx, request.into_inner()).await)
    }

    async fn recharge_dead_letter(
        &self,
        request: Request<pb::RechargeDeadLetterRequest>,
    ) -> Result<Response<pb::RechargeDeadLetterResponse>, Status> {
        self.write(
            "RechargeDeadLetter",
            request,
            |r: &pb::RechargeDeadLetterRequest, _: &_| r.id.to_string(),
            books::recharge_dead_letter,
        )
        .await
    }

    async fn audit_books(
        &self,
        request: Request<pb::AuditBooksRequest>,
    ) -> Result<Response<pb::AuditBooksResponse>, Status> {
        reply(books::audit_books(&self.ctx, request.into_inner()).await)
    }

    async fn create_admin_token(
        &self,
        request: Request<pb::CreateAdminTokenRequest>,
    ) -> Result<Response<pb::CreateAdminTokenResponse>, Status> {
        let caller = caller_of(&request)?;
        reply(admin_tokens::create(&self.ctx, &caller, request.into_inner()).await)
    }

    async fn list_admin_tokens(
        &self,
        request: Request<pb::ListAdminTokensRequest>,
    ) -> Result<Response<pb::ListAdminTokensResponse>, Status> {
        reply(admin_tokens::list(&self.ctx, request.into_inner()).await)
    }

    async fn revoke_admin_token(
        &self,
        request: Request<pb::RevokeAdminTokenRequest>,
    ) -> Result<Response<pb::AdminToken>, Status> {
        let caller = caller_of(&request)?;
        reply(admin_tokens::revoke(&self.ctx, &caller, request.into_inner()).await)
    }

    async fn list_audit_log(
        &self,
        request: Request<pb::ListAuditLogRequest>,
    ) -> Result<Response<pb::ListAuditLogResponse>, Status> {
        reply(audit_log::list(&self.ctx, request.into_inner()).await)
    }
}

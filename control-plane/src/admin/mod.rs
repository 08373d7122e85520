//! The `Admin` gRPC service: operators and internal services manage users, groups, keys,
//! accounts, subscriptions, prices and read usage. Every call is authenticated by
//! [`AdminAuth`]; input is validated before anything is written.
//!
//! `impl Admin` only routes: each handler module (`users`, `groups`, `keys`, `accounts`,
//! `subscriptions`, `prices`, `usage`) validates the whole request (`validate`,
//! `account_urls`, `refs`, `page`), calls storage, publishes the invalidation, and converts
//! the result back (`convert`).

mod account_urls;
mod accounts;
mod auth;
mod convert;
mod groups;
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

pub use auth::AdminAuth;

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

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        reply(users::create(&self.ctx, request.into_inner()).await)
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
        reply(users::update(&self.ctx, request.into_inner()).await)
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        reply(users::delete(&self.ctx, request.into_inner()).await)
    }

    async fn adjust_balance(
        &self,
        request: Request<pb::AdjustBalanceRequest>,
    ) -> Result<Response<pb::AdjustBalanceResponse>, Status> {
        reply(users::adjust_balance(&self.ctx, request.into_inner()).await)
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
        reply(groups::create(&self.ctx, request.into_inner()).await)
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
        reply(groups::update(&self.ctx, request.into_inner()).await)
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        reply(groups::delete(&self.ctx, request.into_inner()).await)
    }

    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        reply(keys::create(&self.ctx, request.into_inner()).await)
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
        reply(keys::update(&self.ctx, request.into_inner()).await)
    }

    async fn disable_key(
        &self,
        request: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        reply(keys::disable(&self.ctx, request.into_inner()).await)
    }

    async fn enable_key(
        &self,
        request: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        reply(keys::enable(&self.ctx, request.into_inner()).await)
    }

    async fn delete_key(
        &self,
        request: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::DeleteKeyResponse>, Status> {
        reply(keys::delete(&self.ctx, request.into_inner()).await)
    }

    async fn reset_key_quota(
        &self,
        request: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        reply(keys::reset_quota(&self.ctx, request.into_inner()).await)
    }

    async fn clear_key_expiration(
        &self,
        request: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        reply(keys::clear_expiration(&self.ctx, request.into_inner()).await)
    }

    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        reply(accounts::create(&self.ctx, request.into_inner()).await)
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
        reply(accounts::update(&self.ctx, request.into_inner()).await)
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        reply(accounts::delete(&self.ctx, request.into_inner()).await)
    }

    async fn set_account_groups(
        &self,
        request: Request<pb::SetAccountGroupsRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        reply(accounts::set_groups(&self.ctx, request.into_inner()).await)
    }

    async fn clear_account_error(
        &self,
        request: Request<pb::AccountIdRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        reply(accounts::clear_error(&self.ctx, request.into_inner()).await)
    }

    async fn clear_account_rate_limit(
        &self,
        request: Request<pb::AccountIdRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        reply(accounts::clear_rate_limit(&self.ctx, request.into_inner()).await)
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
        reply(oauth::exchange_code(&self.ctx, request.into_inner()).await)
    }

    async fn assign_subscription(
        &self,
        request: Request<pb::AssignSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        reply(subscriptions::assign(&self.ctx, request.into_inner()).await)
    }

    async fn extend_subscription(
        &self,
        request: Request<pb::ExtendSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        reply(subscriptions::extend(&self.ctx, request.into_inner()).await)
    }

    async fn revoke_subscription(
        &self,
        request: Request<pb::RevokeSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        reply(subscriptions::revoke(&self.ctx, request.into_inner()).await)
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
        reply(prices::set(&self.ctx, request.into_inner()).await)
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
        reply(prices::delete(&self.ctx, request.into_inner()).await)
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
}

//! The `Admin` gRPC service: operators and internal services manage users, groups, keys,
//! accounts, subscriptions, prices and read usage. Every call is authenticated by
//! [`AdminAuth`]; input is validated before anything is written.

mod auth;

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

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let _ = request;
        Err(Status::unimplemented("CreateUser"))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let _ = request;
        Err(Status::unimplemented("GetUser"))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("ListUsers"))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let _ = request;
        Err(Status::unimplemented("UpdateUser"))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("DeleteUser"))
    }

    async fn adjust_balance(
        &self,
        request: Request<pb::AdjustBalanceRequest>,
    ) -> Result<Response<pb::AdjustBalanceResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("AdjustBalance"))
    }

    async fn list_balance_ledger(
        &self,
        request: Request<pb::ListBalanceLedgerRequest>,
    ) -> Result<Response<pb::ListBalanceLedgerResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("ListBalanceLedger"))
    }

    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Result<Response<pb::Group>, Status> {
        let _ = request;
        Err(Status::unimplemented("CreateGroup"))
    }

    async fn get_group(
        &self,
        request: Request<pb::GetGroupRequest>,
    ) -> Result<Response<pb::Group>, Status> {
        let _ = request;
        Err(Status::unimplemented("GetGroup"))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("ListGroups"))
    }

    async fn update_group(
        &self,
        request: Request<pb::UpdateGroupRequest>,
    ) -> Result<Response<pb::Group>, Status> {
        let _ = request;
        Err(Status::unimplemented("UpdateGroup"))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("DeleteGroup"))
    }

    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("CreateKey"))
    }

    async fn get_key(
        &self,
        request: Request<pb::GetKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let _ = request;
        Err(Status::unimplemented("GetKey"))
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("ListKeys"))
    }

    async fn update_key(
        &self,
        request: Request<pb::UpdateKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let _ = request;
        Err(Status::unimplemented("UpdateKey"))
    }

    async fn disable_key(
        &self,
        request: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let _ = request;
        Err(Status::unimplemented("DisableKey"))
    }

    async fn enable_key(
        &self,
        request: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let _ = request;
        Err(Status::unimplemented("EnableKey"))
    }

    async fn delete_key(
        &self,
        request: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::DeleteKeyResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("DeleteKey"))
    }

    async fn reset_key_quota(
        &self,
        request: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let _ = request;
        Err(Status::unimplemented("ResetKeyQuota"))
    }

    async fn clear_key_expiration(
        &self,
        request: Request<pb::KeyIdRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let _ = request;
        Err(Status::unimplemented("ClearKeyExpiration"))
    }

    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let _ = request;
        Err(Status::unimplemented("CreateAccount"))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let _ = request;
        Err(Status::unimplemented("GetAccount"))
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("ListAccounts"))
    }

    async fn update_account(
        &self,
        request: Request<pb::UpdateAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let _ = request;
        Err(Status::unimplemented("UpdateAccount"))
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("DeleteAccount"))
    }

    async fn set_account_groups(
        &self,
        request: Request<pb::SetAccountGroupsRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let _ = request;
        Err(Status::unimplemented("SetAccountGroups"))
    }

    async fn clear_account_error(
        &self,
        request: Request<pb::AccountIdRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let _ = request;
        Err(Status::unimplemented("ClearAccountError"))
    }

    async fn clear_account_rate_limit(
        &self,
        request: Request<pb::AccountIdRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let _ = request;
        Err(Status::unimplemented("ClearAccountRateLimit"))
    }

    async fn assign_subscription(
        &self,
        request: Request<pb::AssignSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let _ = request;
        Err(Status::unimplemented("AssignSubscription"))
    }

    async fn extend_subscription(
        &self,
        request: Request<pb::ExtendSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let _ = request;
        Err(Status::unimplemented("ExtendSubscription"))
    }

    async fn revoke_subscription(
        &self,
        request: Request<pb::RevokeSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let _ = request;
        Err(Status::unimplemented("RevokeSubscription"))
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let _ = request;
        Err(Status::unimplemented("GetSubscription"))
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("ListSubscriptions"))
    }

    async fn set_price(
        &self,
        request: Request<pb::SetPriceRequest>,
    ) -> Result<Response<pb::Price>, Status> {
        let _ = request;
        Err(Status::unimplemented("SetPrice"))
    }

    async fn get_price(
        &self,
        request: Request<pb::GetPriceRequest>,
    ) -> Result<Response<pb::Price>, Status> {
        let _ = request;
        Err(Status::unimplemented("GetPrice"))
    }

    async fn list_prices(
        &self,
        request: Request<pb::ListPricesRequest>,
    ) -> Result<Response<pb::ListPricesResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("ListPrices"))
    }

    async fn delete_price(
        &self,
        request: Request<pb::DeletePriceRequest>,
    ) -> Result<Response<pb::DeletePriceResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("DeletePrice"))
    }

    async fn query_usage(
        &self,
        request: Request<pb::QueryUsageRequest>,
    ) -> Result<Response<pb::QueryUsageResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("QueryUsage"))
    }

    async fn usage_series(
        &self,
        request: Request<pb::UsageSeriesRequest>,
    ) -> Result<Response<pb::UsageSeriesResponse>, Status> {
        let _ = request;
        Err(Status::unimplemented("UsageSeries"))
    }
}

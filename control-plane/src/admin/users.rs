//! Users and their balance ledger.

use tollgate_shared::domain::{UserRole, UserStatus};
use tollgate_shared::proto::admin::v1 as pb;

use super::{AdminContext, convert, page, validate as v};
use crate::error::{Error, Result};
use crate::events::Invalidation;
use crate::model::{BalanceOp, NewUser, UserPatch};

const DEFAULT_CONCURRENCY: i32 = 5;

pub async fn create(ctx: &AdminContext, req: pb::CreateUserRequest) -> Result<pb::User> {
    let new = NewUser {
        email: v::email("email", &req.email)?,
        name: v::optional_name("name", &req.name)?,
        role: v::vocab_or("role", &req.role, UserRole::User)?,
        concurrency: v::non_negative_i32(
            "concurrency",
            req.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
        )?,
        notes: v::text("notes", &req.notes)?,
        initial_balance_nanos: v::non_negative_i64(
            "initial_balance_nanos",
            req.initial_balance_nanos,
        )?,
    };
    let user = ctx.store.create_user(new).await?;
    tracing::info!(user_id = user.id, "admin: user created");
    Ok(convert::user(user))
}

pub async fn get(ctx: &AdminContext, req: pb::GetUserRequest) -> Result<pb::User> {
    Ok(convert::user(ctx.store.get_user(req.id).await?))
}

pub async fn list(ctx: &AdminContext, req: pb::ListUsersRequest) -> Result<pb::ListUsersResponse> {
    let status = v::vocab_filter::<UserStatus>("status", &req.status)?;
    let page = page::page(req.page.as_ref())?;
    let paged = ctx.store.list_users(status, page).await?;
    Ok(pb::ListUsersResponse {
        users: paged.items.into_iter().map(convert::user).collect(),
        next_page_token: page::next_token(paged.next_after_id),
    })
}

pub async fn update(ctx: &AdminContext, req: pb::UpdateUserRequest) -> Result<pb::User> {
    let patch = UserPatch {
        email: req
            .email
            .as_deref()
            .map(|e| v::email("email", e))
            .transpose()?,
        name: req
            .name
            .as_deref()
            .map(|n| v::optional_name("name", n))
            .transpose()?,
        role: req
            .role
            .as_deref()
            .map(|r| v::vocab("role", r))
            .transpose()?,
        status: req
            .status
            .as_deref()
            .map(|s| v::vocab("status", s))
            .transpose()?,
        concurrency: req
            .concurrency
            .map(|c| v::non_negative_i32("concurrency", c))
            .transpose()?,
        notes: req
            .notes
            .as_deref()
            .map(|n| v::text("notes", n))
            .transpose()?,
    };
    let user = ctx.store.update_user(req.id, patch).await?;
    ctx.invalidations.publish(Invalidation::user(user.id));
    Ok(convert::user(user))
}

pub async fn delete(
    ctx: &AdminContext,
    req: pb::DeleteUserRequest,
) -> Result<pb::DeleteUserResponse> {
    let disabled = ctx.store.delete_user(req.id, req.cascade).await?;
    ctx.invalidations.publish(Invalidation::user(req.id));
    publish_keys(ctx, &disabled);
    tracing::info!(
        user_id = req.id,
        keys_disabled = disabled.len(),
        "admin: user deleted"
    );
    Ok(pb::DeleteUserResponse {
        keys_disabled: i64::try_from(disabled.len()).unwrap_or(i64::MAX),
    })
}

pub async fn adjust_balance(
    ctx: &AdminContext,
    req: pb::AdjustBalanceRequest,
) -> Result<pb::AdjustBalanceResponse> {
    let op = match pb::BalanceOp::try_from(req.op) {
        Ok(pb::BalanceOp::Set) => BalanceOp::Set,
        Ok(pb::BalanceOp::Add) => BalanceOp::Add,
        Ok(pb::BalanceOp::Subtract) => BalanceOp::Subtract,
        Ok(pb::BalanceOp::Unspecified) | Err(_) => {
            return Err(Error::invalid(
                "op",
                "must be BALANCE_OP_SET, BALANCE_OP_ADD or BALANCE_OP_SUBTRACT",
            ));
        }
    };
    let amount = v::non_negative_i64("amount_nanos", req.amount_nanos)?;
    let reason = req.reason.trim();
    if reason.is_empty() {
        return Err(Error::invalid("reason", "is required"));
    }
    let reason = v::text("reason", reason)?;
    let (user, entry) = ctx
        .store
        .adjust_balance(req.user_id, op, amount, &reason, req.allow_negative)
        .await?;
    ctx.invalidations.publish(Invalidation::user(user.id));
    tracing::info!(
        user_id = user.id,
        op = op.as_str(),
        "admin: balance adjusted"
    );
    Ok(pb::AdjustBalanceResponse {
        user: Some(convert::user(user)),
        entry: Some(convert::ledger_entry(entry)),
    })
}

pub async fn ledger(
    ctx: &AdminContext,
    req: pb::ListBalanceLedgerRequest,
) -> Result<pb::ListBalanceLedgerResponse> {
    let page = page::page(req.page.as_ref())?;
    let paged = ctx.store.list_ledger(req.user_id, page).await?;
    Ok(pb::ListBalanceLedgerResponse {
        entries: paged.items.into_iter().map(convert::ledger_entry).collect(),
        next_page_token: page::next_token(paged.next_after_id),
    })
}

/// Keys a cascading delete disabled: dropped from every cache.
pub(super) fn publish_keys(ctx: &AdminContext, ids: &[i64]) {
    if !ids.is_empty() {
        ctx.invalidations.publish(Invalidation {
            scope: crate::events::Scope::Key,
            ids: ids.to_vec(),
        });
    }
}

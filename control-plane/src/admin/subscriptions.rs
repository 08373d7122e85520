//! Subscriptions: a user × a subscription group, with an expiry. Changes publish a user
//! invalidation, since a subscription decides how the user's keys are billed.

use tollgate_shared::domain::GroupKind;
use tollgate_shared::now_ms;
use tollgate_shared::proto::admin::v1 as pb;
use tollgate_shared::proto::admin::v1::assign_subscription_request::Expiry;

use super::{AdminContext, convert, page, refs, validate as v};
use crate::error::{Error, Result};
use crate::events::Invalidation;
use crate::model::NewSubscription;

pub async fn assign(
    ctx: &AdminContext,
    req: pb::AssignSubscriptionRequest,
) -> Result<pb::Subscription> {
    let now = now_ms();
    let user_id = v::required_id("user_id", req.user_id)?;
    let group_id = v::required_id("group_id", req.group_id)?;
    let starts_at_ms = match req.starts_at_ms {
        Some(s) => v::non_negative_i64("starts_at_ms", s)?,
        None => now,
    };
    let expires_at_ms = match req.expiry {
        None => {
            return Err(Error::invalid(
                "expiry",
                "is required: give expires_at_ms or duration_days",
            ));
        }
        Some(Expiry::ExpiresAtMs(at)) => {
            let at = v::future_time("expires_at_ms", at, now)?;
            if at <= starts_at_ms {
                return Err(Error::invalid(
                    "expires_at_ms",
                    "must be after starts_at_ms",
                ));
            }
            at
        }
        Some(Expiry::DurationDays(days)) => {
            let at = v::days_after("duration_days", starts_at_ms, days)?;
            v::future_time("duration_days", at, now)
                .map_err(|_| Error::invalid("duration_days", "ends in the past"))?
        }
    };
    let notes = v::text("notes", &req.notes)?;
    refs::user(&ctx.store, "user_id", user_id).await?;
    let group = refs::group(&ctx.store, "group_id", group_id).await?;
    if group.kind != GroupKind::Subscription {
        return Err(Error::invalid(
            "group_id",
            format!(
                "group {group_id} is a {} group, not a subscription group",
                group.kind
            ),
        ));
    }
    let sub = ctx
        .store
        .create_subscription(NewSubscription {
            user_id,
            group_id,
            starts_at_ms,
            expires_at_ms,
            notes,
        })
        .await?;
    ctx.invalidations.publish(Invalidation::user(sub.user_id));
    tracing::info!(
        subscription_id = sub.id,
        user_id,
        group_id,
        "admin: subscription assigned"
    );
    Ok(convert::subscription(sub))
}

pub async fn extend(
    ctx: &AdminContext,
    req: pb::ExtendSubscriptionRequest,
) -> Result<pb::Subscription> {
    if req.days == 0 {
        return Err(Error::invalid("days", "must be at least 1"));
    }
    let sub = ctx
        .store
        .extend_subscription(req.id, req.days, now_ms())
        .await?;
    ctx.invalidations.publish(Invalidation::user(sub.user_id));
    Ok(convert::subscription(sub))
}

pub async fn revoke(
    ctx: &AdminContext,
    req: pb::RevokeSubscriptionRequest,
) -> Result<pb::Subscription> {
    let sub = ctx.store.revoke_subscription(req.id).await?;
    ctx.invalidations.publish(Invalidation::user(sub.user_id));
    tracing::info!(subscription_id = sub.id, "admin: subscription revoked");
    Ok(convert::subscription(sub))
}

pub async fn get(ctx: &AdminContext, req: pb::GetSubscriptionRequest) -> Result<pb::Subscription> {
    Ok(convert::subscription(
        ctx.store.get_subscription(req.id).await?,
    ))
}

pub async fn list(
    ctx: &AdminContext,
    req: pb::ListSubscriptionsRequest,
) -> Result<pb::ListSubscriptionsResponse> {
    let user_id = v::optional_id("user_id", req.user_id)?;
    let group_id = v::optional_id("group_id", req.group_id)?;
    let page = page::page(req.page.as_ref())?;
    let paged = ctx
        .store
        .list_subscriptions(user_id, group_id, page)
        .await?;
    Ok(pb::ListSubscriptionsResponse {
        subscriptions: paged.items.into_iter().map(convert::subscription).collect(),
        next_page_token: page::next_token(paged.next_after_id),
    })
}

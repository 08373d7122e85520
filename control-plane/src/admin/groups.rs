//! Groups: platform, rate multiplier, standard or subscription kind, usage limits.

use tollgate_shared::Multiplier;
use tollgate_shared::domain::{GroupKind, Platform};
use tollgate_shared::proto::admin::v1 as pb;

use super::{AdminContext, convert, page, validate as v};
use crate::error::Result;
use crate::events::Invalidation;
use crate::model::{GroupPatch, NewGroup};

pub async fn create(ctx: &AdminContext, req: pb::CreateGroupRequest) -> Result<pb::Group> {
    let new = NewGroup {
        name: v::required_name("name", &req.name)?,
        platform: v::vocab_or("platform", &req.platform, Platform::OpenAi)?,
        rate_multiplier: v::multiplier_or(
            "rate_multiplier",
            &req.rate_multiplier,
            Multiplier::ONE,
        )?,
        kind: v::vocab_or("kind", &req.kind, GroupKind::Standard)?,
        daily_limit_nanos: v::non_negative_i64("daily_limit_nanos", req.daily_limit_nanos)?,
        weekly_limit_nanos: v::non_negative_i64("weekly_limit_nanos", req.weekly_limit_nanos)?,
        monthly_limit_nanos: v::non_negative_i64("monthly_limit_nanos", req.monthly_limit_nanos)?,
        exclusive: req.exclusive,
        description: v::text("description", &req.description)?,
    };
    let group = ctx.store.create_group(new).await?;
    tracing::info!(group_id = group.id, "admin: group created");
    Ok(convert::group(group))
}

pub async fn get(ctx: &AdminContext, req: pb::GetGroupRequest) -> Result<pb::Group> {
    Ok(convert::group(ctx.store.get_group(req.id).await?))
}

pub async fn list(
    ctx: &AdminContext,
    req: pb::ListGroupsRequest,
) -> Result<pb::ListGroupsResponse> {
    let paged = ctx
        .store
        .list_groups(page::page(req.page.as_ref())?)
        .await?;
    Ok(pb::ListGroupsResponse {
        groups: paged.items.into_iter().map(convert::group).collect(),
        next_page_token: page::next_token(paged.next_after_id),
    })
}

pub async fn update(ctx: &AdminContext, req: pb::UpdateGroupRequest) -> Result<pb::Group> {
    let patch = GroupPatch {
        name: req
            .name
            .as_deref()
            .map(|n| v::required_name("name", n))
            .transpose()?,
        rate_multiplier: req
            .rate_multiplier
            .as_deref()
            .map(|m| v::multiplier("rate_multiplier", m))
            .transpose()?,
        kind: req
            .kind
            .as_deref()
            .map(|k| v::vocab("kind", k))
            .transpose()?,
        daily_limit_nanos: req
            .daily_limit_nanos
            .map(|n| v::non_negative_i64("daily_limit_nanos", n))
            .transpose()?,
        weekly_limit_nanos: req
            .weekly_limit_nanos
            .map(|n| v::non_negative_i64("weekly_limit_nanos", n))
            .transpose()?,
        monthly_limit_nanos: req
            .monthly_limit_nanos
            .map(|n| v::non_negative_i64("monthly_limit_nanos", n))
            .transpose()?,
        status: req
            .status
            .as_deref()
            .map(|s| v::vocab("status", s))
            .transpose()?,
        exclusive: req.exclusive,
        description: req
            .description
            .as_deref()
            .map(|d| v::text("description", d))
            .transpose()?,
    };
    let group = ctx.store.update_group(req.id, patch).await?;
    ctx.invalidations.publish(Invalidation::group(group.id));
    Ok(convert::group(group))
}

pub async fn delete(
    ctx: &AdminContext,
    req: pb::DeleteGroupRequest,
) -> Result<pb::DeleteGroupResponse> {
    let disabled = ctx.store.delete_group(req.id, req.cascade).await?;
    ctx.invalidations.publish(Invalidation::group(req.id));
    super::users::publish_keys(ctx, &disabled);
    tracing::info!(
        group_id = req.id,
        keys_disabled = disabled.len(),
        "admin: group deleted"
    );
    Ok(pb::DeleteGroupResponse {
        keys_disabled: i64::try_from(disabled.len()).unwrap_or(i64::MAX),
    })
}

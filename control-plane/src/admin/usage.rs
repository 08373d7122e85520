//! Usage queries: records with totals over the whole filter, and per-day series.

use tollgate_shared::proto::admin::v1 as pb;

use super::{AdminContext, convert, page, validate as v};
use crate::error::{Error, Result};
use crate::model::UsageFilter;

pub async fn query(
    ctx: &AdminContext,
    req: pb::QueryUsageRequest,
) -> Result<pb::QueryUsageResponse> {
    let filter = filter(req.filter.as_ref())?;
    let page = page::page(req.page.as_ref())?;
    let (paged, totals) = if req.newest_first {
        ctx.store.query_usage_newest_first(&filter, page).await?
    } else {
        ctx.store.query_usage(&filter, page).await?
    };
    Ok(pb::QueryUsageResponse {
        records: paged.items.into_iter().map(convert::usage_record).collect(),
        totals: Some(convert::usage_totals(totals)),
        next_page_token: page::next_token(paged.next_after_id),
    })
}

pub async fn series(
    ctx: &AdminContext,
    req: pb::UsageSeriesRequest,
) -> Result<pb::UsageSeriesResponse> {
    let filter = filter(req.filter.as_ref())?;
    let (days, totals) = ctx.store.usage_series(&filter).await?;
    Ok(pb::UsageSeriesResponse {
        days: days.into_iter().map(convert::usage_day).collect(),
        totals: Some(convert::usage_totals(totals)),
    })
}

fn filter(f: Option<&pb::UsageFilter>) -> Result<UsageFilter> {
    let Some(f) = f else {
        return Ok(UsageFilter::default());
    };
    let model = f.model.trim();
    let out = UsageFilter {
        key_id: v::optional_id("filter.key_id", f.key_id)?,
        user_id: v::optional_id("filter.user_id", f.user_id)?,
        account_id: v::optional_id("filter.account_id", f.account_id)?,
        group_id: v::optional_id("filter.group_id", f.group_id)?,
        model: (!model.is_empty()).then(|| model.to_owned()),
        from_ms: f.from_ms,
        to_ms: f.to_ms,
    };
    if let (Some(from), Some(to)) = (out.from_ms, out.to_ms)
        && to <= from
    {
        return Err(Error::invalid(
            "filter.to_ms",
            "must be after filter.from_ms",
        ));
    }
    Ok(out)
}

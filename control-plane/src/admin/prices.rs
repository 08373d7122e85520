//! Model prices, in nano-USD per million tokens. Billing reads them in the control plane,
//! so no data-plane cache needs invalidating; strict-pricing admission caches the table
//! in the control plane's snapshot, told with `publish_local`.

use tollgate_shared::proto::admin::v1 as pb;

use super::{AdminContext, convert, validate as v};
use crate::error::{Error, Result};
use crate::events::Change;
use crate::model::Price;

pub async fn set(ctx: &AdminContext, req: pb::SetPriceRequest) -> Result<pb::Price> {
    let p = req
        .price
        .ok_or_else(|| Error::invalid("price", "is required"))?;
    let price = Price {
        model: model_name("price.model", &p.model)?,
        input_per_mtok_nanos: v::non_negative_i64(
            "price.input_per_mtok_nanos",
            p.input_per_mtok_nanos,
        )?,
        output_per_mtok_nanos: v::non_negative_i64(
            "price.output_per_mtok_nanos",
            p.output_per_mtok_nanos,
        )?,
        cached_input_per_mtok_nanos: v::non_negative_i64(
            "price.cached_input_per_mtok_nanos",
            p.cached_input_per_mtok_nanos,
        )?,
        // Storage stamps the time of the write.
        updated_at_ms: tollgate_shared::now_ms(),
    };
    let saved = ctx.store.upsert_price(price).await?;
    ctx.invalidations.publish_local(Change::Prices);
    tracing::info!(model = %saved.model, "admin: price set");
    Ok(convert::price(saved))
}

pub async fn get(ctx: &AdminContext, req: pb::GetPriceRequest) -> Result<pb::Price> {
    let model = model_name("model", &req.model)?;
    ctx.store
        .get_price(&model)
        .await?
        .map(convert::price)
        .ok_or_else(|| Error::not_found(format!("price for model {model:?}")))
}

pub async fn list(
    ctx: &AdminContext,
    _req: pb::ListPricesRequest,
) -> Result<pb::ListPricesResponse> {
    let prices = ctx.store.list_prices().await?;
    Ok(pb::ListPricesResponse {
        prices: prices.into_iter().map(convert::price).collect(),
    })
}

pub async fn delete(
    ctx: &AdminContext,
    req: pb::DeletePriceRequest,
) -> Result<pb::DeletePriceResponse> {
    let model = model_name("model", &req.model)?;
    ctx.store.delete_price(&model).await?;
    ctx.invalidations.publish_local(Change::Prices);
    tracing::info!(model = %model, "admin: price deleted");
    Ok(pb::DeletePriceResponse {})
}

fn model_name(field: &str, value: &str) -> Result<String> {
    let m = v::required_name(field, value)?;
    if m.chars().any(char::is_whitespace) {
        return Err(Error::invalid(field, "must not contain whitespace"));
    }
    Ok(m)
}

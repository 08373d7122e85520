//! `tollgate-admin price …`: model prices in USD per million tokens.

use clap::Subcommand;
use serde_json::json;
use tollgate_shared::proto::admin::v1 as pb;

use super::CliError;
use super::connect::AdminApi;
use super::render::{Out, Record};
use super::values;

#[derive(Debug, Subcommand)]
pub enum PriceCmd {
    /// Set (create or replace) a model's prices, in USD per million tokens.
    Set {
        model: String,
        /// Input tokens, USD per million (e.g. 1.25).
        #[arg(long, value_parser = values::usd)]
        input: i64,
        /// Output tokens, USD per million (e.g. 10).
        #[arg(long, value_parser = values::usd)]
        output: i64,
        /// Cached input tokens, USD per million (e.g. 0.125).
        #[arg(long, value_parser = values::usd)]
        cached_input: i64,
    },
    /// Show one model's prices.
    Get { model: String },
    /// List all prices.
    List,
    /// Delete a model's prices.
    Delete { model: String },
}

const COLUMNS: &[&str] = &[
    "model",
    "input_per_mtok",
    "output_per_mtok",
    "cached_input_per_mtok",
    "updated_at",
];

pub async fn run(api: &mut AdminApi, cmd: PriceCmd, out: &mut Out<'_>) -> Result<(), CliError> {
    let price = match cmd {
        PriceCmd::Set {
            model,
            input,
            output,
            cached_input,
        } => {
            let price = pb::Price {
                model,
                input_per_mtok_nanos: input,
                output_per_mtok_nanos: output,
                cached_input_per_mtok_nanos: cached_input,
                updated_at_ms: 0,
            };
            let req = pb::SetPriceRequest { price: Some(price) };
            api.set_price(req).await?
        }
        PriceCmd::Get { model } => api.get_price(pb::GetPriceRequest { model }).await?,
        PriceCmd::List => {
            let resp = api
                .list_prices(pb::ListPricesRequest {})
                .await?
                .into_inner();
            let rows: Vec<Record> = resp.prices.iter().map(record).collect();
            return out.page("prices", &rows, COLUMNS, "");
        }
        PriceCmd::Delete { model } => {
            api.delete_price(pb::DeletePriceRequest {
                model: model.clone(),
            })
            .await?;
            return out.deleted("price", json!(model));
        }
    };
    out.record(&record(&price.into_inner()))
}

pub fn record(p: &pb::Price) -> Record {
    Record::new()
        .str("model", &p.model)
        .usd("input_per_mtok", p.input_per_mtok_nanos)
        .usd("output_per_mtok", p.output_per_mtok_nanos)
        .usd("cached_input_per_mtok", p.cached_input_per_mtok_nanos)
        .time("updated_at", p.updated_at_ms)
}

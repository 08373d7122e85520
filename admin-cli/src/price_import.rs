//! `tollgate-admin price import FILE [--dry-run] [--provider P]`: LiteLLM's
//! `model_prices_and_context_window.json`, converted exactly (`litellm.rs`), set
//! with `SetPrice` for every new or changed model; `--dry-run` only shows the changes.

use std::path::Path;

use tollgate_shared::proto::admin::v1 as pb;

use super::CliError;
use super::connect::AdminApi;
use super::render::{Out, Record};
use crate::litellm;

const COLUMNS: &[&str] = &[
    "model",
    "change",
    "input_per_mtok",
    "output_per_mtok",
    "cached_input_per_mtok",
    "was",
];

pub async fn run(
    api: &mut AdminApi,
    file: &Path,
    provider: &str,
    dry_run: bool,
    out: &mut Out<'_>,
) -> Result<(), CliError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?;
    let imported = litellm::parse(&text, provider).map_err(CliError::Usage)?;
    let current: Vec<litellm::Price> = api
        .list_prices(pb::ListPricesRequest {})
        .await?
        .into_inner()
        .prices
        .into_iter()
        .map(|p| litellm::Price {
            model: p.model,
            input_per_mtok_nanos: p.input_per_mtok_nanos,
            output_per_mtok_nanos: p.output_per_mtok_nanos,
            cached_input_per_mtok_nanos: p.cached_input_per_mtok_nanos,
            updated_at_ms: p.updated_at_ms,
        })
        .collect();
    let changes = litellm::changes(&current, &imported);
    let usd = |n: i64| tollgate_shared::money::format_usd(n);
    let rows: Vec<Record> = changes
        .iter()
        .map(|(new, old)| {
            Record::new()
                .str("model", &new.model)
                .str("change", if old.is_some() { "update" } else { "new" })
                .usd("input_per_mtok", new.input_per_mtok_nanos)
                .usd("output_per_mtok", new.output_per_mtok_nanos)
                .usd("cached_input_per_mtok", new.cached_input_per_mtok_nanos)
                .str(
                    "was",
                    &old.as_ref()
                        .map(|p| {
                            format!(
                                "{} / {} / {}",
                                usd(p.input_per_mtok_nanos),
                                usd(p.output_per_mtok_nanos),
                                usd(p.cached_input_per_mtok_nanos)
                            )
                        })
                        .unwrap_or_default(),
                )
        })
        .collect();
    if !dry_run {
        for (new, _) in &changes {
            let price = pb::Price {
                model: new.model.clone(),
                input_per_mtok_nanos: new.input_per_mtok_nanos,
                output_per_mtok_nanos: new.output_per_mtok_nanos,
                cached_input_per_mtok_nanos: new.cached_input_per_mtok_nanos,
                updated_at_ms: 0,
            };
            api.set_price(pb::SetPriceRequest { price: Some(price) })
                .await?;
        }
    }
    if !out.is_json() {
        out.line(&format!(
            "{} {provider} model(s) in the file, {} change(s){}",
            imported.len(),
            changes.len(),
            if dry_run {
                " (dry run: nothing set)"
            } else {
                " set"
            }
        ))?;
    }
    out.page("changes", &rows, COLUMNS, "")
}

//! Model prices, nano-USD per million tokens, and price aliases. Defaults are seeded by
//! the `0002_default_prices.sql` and `0003_billing_integrity.sql` migrations; the lookup
//! chain (date and effort suffixes, aliases, configured fallback) belongs to the pricing
//! code, not here.

use super::to_end::ToTheEnd;
use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_shared::now_ms;

use super::{Store, not_found};
use crate::error::{Error, Result};
use crate::model::{Price, PriceAlias};

const PRICE_COLS: &str = "model, input_per_mtok_nanos, output_per_mtok_nanos, cached_input_per_mtok_nanos, \
     updated_at_ms";

fn row_to_price(row: &AnyRow) -> Result<Price> {
    Ok(Price {
        model: row.try_get("model")?,
        input_per_mtok_nanos: row.try_get("input_per_mtok_nanos")?,
        output_per_mtok_nanos: row.try_get("output_per_mtok_nanos")?,
        cached_input_per_mtok_nanos: row.try_get("cached_input_per_mtok_nanos")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

impl Store {
    /// Creates or replaces the price of `price.model`; `updated_at_ms` is set here.
    pub async fn upsert_price(&self, price: Price) -> Result<Price> {
        if price.model.is_empty() {
            return Err(Error::invalid("model", "must not be empty"));
        }
        for (field, v) in [
            ("input_per_mtok_nanos", price.input_per_mtok_nanos),
            ("output_per_mtok_nanos", price.output_per_mtok_nanos),
            (
                "cached_input_per_mtok_nanos",
                price.cached_input_per_mtok_nanos,
            ),
        ] {
            if v < 0 {
                return Err(Error::invalid(field, "must not be negative"));
            }
        }
        let row = sqlx::query(&format!(
            "INSERT INTO prices ({PRICE_COLS}) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (model) DO UPDATE SET \
             input_per_mtok_nanos = excluded.input_per_mtok_nanos, \
             output_per_mtok_nanos = excluded.output_per_mtok_nanos, \
             cached_input_per_mtok_nanos = excluded.cached_input_per_mtok_nanos, \
             updated_at_ms = excluded.updated_at_ms \
             RETURNING {PRICE_COLS}"
        ))
        .bind(price.model)
        .bind(price.input_per_mtok_nanos)
        .bind(price.output_per_mtok_nanos)
        .bind(price.cached_input_per_mtok_nanos)
        .bind(now_ms())
        .one_row(&self.pool)
        .await?;
        row_to_price(&row)
    }

    /// Exact model name only.
    pub async fn get_price(&self, model: &str) -> Result<Option<Price>> {
        let row = sqlx::query(&format!("SELECT {PRICE_COLS} FROM prices WHERE model = $1"))
            .bind(model.to_owned())
            .optional_row(&self.pool)
            .await?;
        row.as_ref().map(row_to_price).transpose()
    }

    /// By model name in byte order. Sorted here because Postgres' default collation
    /// ignores punctuation (`gpt-5.1` vs `gpt-5-mini`) and SQLite's does not.
    pub async fn list_prices(&self) -> Result<Vec<Price>> {
        let rows = sqlx::query(&format!("SELECT {PRICE_COLS} FROM prices"))
            .fetch_all(&self.pool)
            .await?;
        let mut prices = rows.iter().map(row_to_price).collect::<Result<Vec<_>>>()?;
        prices.sort_by(|a, b| a.model.cmp(&b.model));
        Ok(prices)
    }

    pub async fn delete_price(&self, model: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM prices WHERE model = $1")
            .bind(model.to_owned())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("price for model", model));
        }
        Ok(())
    }

    /// Every alias, by alias name in byte order.
    pub async fn list_price_aliases(&self) -> Result<Vec<PriceAlias>> {
        let rows = sqlx::query("SELECT alias, model, updated_at_ms FROM price_aliases")
            .fetch_all(&self.pool)
            .await?;
        let mut aliases = rows
            .iter()
            .map(|row| {
                Ok(PriceAlias {
                    alias: row.try_get("alias")?,
                    model: row.try_get("model")?,
                    updated_at_ms: row.try_get("updated_at_ms")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        aliases.sort_by(|a, b| a.alias.cmp(&b.alias));
        Ok(aliases)
    }
}

//! Usage records (one per request, idempotent by request id) and the operators' queries:
//! filtered pages, totals and per-UTC-day series.

use super::to_end::ToTheEnd;
use sqlx::Row;
use sqlx::any::AnyRow;
use tollgate_shared::DAY_MS;

use super::args::{Args, page_clause, page_limit, where_clause};
use super::{Store, flag, multiplier, parse_stored};
use crate::error::{Error, Result};
use crate::model::{Page, Paged, UsageDay, UsageFilter, UsageRecord, UsageTotals};

const USAGE_COLS: &str = "request_id, key_id, user_id, group_id, subscription_id, account_id, \
                          model, upstream_model, input_tokens, output_tokens, cached_tokens, \
                          reasoning_tokens, input_cost_nanos, output_cost_nanos, \
                          cached_cost_nanos, total_cost_nanos, actual_cost_nanos, \
                          rate_multiplier_ppm, account_cost_multiplier_ppm, billing_mode, \
                          stream, duration_ms, first_token_ms, user_agent, client_ip, \
                          reasoning_effort, estimated, created_at_ms, recovered, \
                          client_request_id, upstream_request_id";

/// Inserts one usage row; a replay (same request id) inserts nothing. Shared by
/// `insert_usage` and the charging transaction so the two can never drift apart.
static INSERT_USAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO usage_logs ({USAGE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
         $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, \
         $26, $27, $28, $29, $30, $31) ON CONFLICT (request_id) DO NOTHING"
    )
});

/// Overwrites a recovered estimate with the real record (same binds as the insert:
/// `$1` the request id, then every other column in `USAGE_COLS` order). Only a row the
/// charging transaction has just claimed (`recovered = 2`, see `charge.rs`) matches.
static SUPERSEDE_USAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let sets: Vec<String> = USAGE_COLS
        .split(',')
        .map(str::trim)
        .skip(1)
        .enumerate()
        .map(|(i, col)| format!("{col} = ${}", i + 2))
        .collect();
    format!(
        "UPDATE usage_logs SET {} WHERE request_id = $1 AND recovered = 2",
        sets.join(", ")
    )
});

type UsageQuery = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments<'static>>;

pub(super) fn insert_usage_query(r: &UsageRecord) -> UsageQuery {
    bind_usage(INSERT_USAGE.as_str(), r)
}

pub(super) fn supersede_usage_query(r: &UsageRecord) -> UsageQuery {
    bind_usage(SUPERSEDE_USAGE.as_str(), r)
}

fn bind_usage(sql: &'static str, r: &UsageRecord) -> UsageQuery {
    sqlx::query(sql)
        .bind(r.request_id.clone())
        .bind(r.key_id)
        .bind(r.user_id)
        .bind(r.group_id)
        .bind(r.subscription_id)
        .bind(r.account_id)
        .bind(r.model.clone())
        .bind(r.upstream_model.clone())
        .bind(r.input_tokens)
        .bind(r.output_tokens)
        .bind(r.cached_tokens)
        .bind(r.reasoning_tokens)
        .bind(r.input_cost_nanos)
        .bind(r.output_cost_nanos)
        .bind(r.cached_cost_nanos)
        .bind(r.total_cost_nanos)
        .bind(r.actual_cost_nanos)
        .bind(r.rate_multiplier.ppm())
        .bind(r.account_cost_multiplier.ppm())
        .bind(r.billing_mode.as_str())
        .bind(flag(r.stream))
        .bind(r.duration_ms)
        .bind(r.first_token_ms)
        .bind(r.user_agent.clone())
        .bind(r.client_ip.clone())
        .bind(r.reasoning_effort.clone())
        .bind(flag(r.estimated))
        .bind(r.created_at_ms)
        .bind(flag(r.recovered))
        .bind(r.client_request_id.clone())
        .bind(r.upstream_request_id.clone())
}

/// Aggregates over the filtered rows. CAST because Postgres widens SUM(bigint) to
/// NUMERIC; COALESCE because SUM over no rows is NULL.
const TOTALS_COLS: &str = "COUNT(*) AS requests, \
     CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
     CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
     CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT) AS cached_tokens, \
     CAST(COALESCE(SUM(total_cost_nanos), 0) AS BIGINT) AS total_cost_nanos, \
     CAST(COALESCE(SUM(actual_cost_nanos), 0) AS BIGINT) AS actual_cost_nanos";

fn row_to_usage(row: &AnyRow) -> Result<UsageRecord> {
    Ok(UsageRecord {
        request_id: row.try_get("request_id")?,
        key_id: row.try_get("key_id")?,
        user_id: row.try_get("user_id")?,
        group_id: row.try_get("group_id")?,
        subscription_id: row.try_get("subscription_id")?,
        account_id: row.try_get("account_id")?,
        model: row.try_get("model")?,
        upstream_model: row.try_get("upstream_model")?,
        input_tokens: row.try_get("input_tokens")?,
        output_tokens: row.try_get("output_tokens")?,
        cached_tokens: row.try_get("cached_tokens")?,
        reasoning_tokens: row.try_get("reasoning_tokens")?,
        input_cost_nanos: row.try_get("input_cost_nanos")?,
        output_cost_nanos: row.try_get("output_cost_nanos")?,
        cached_cost_nanos: row.try_get("cached_cost_nanos")?,
        total_cost_nanos: row.try_get("total_cost_nanos")?,
        actual_cost_nanos: row.try_get("actual_cost_nanos")?,
        rate_multiplier: multiplier(
            "usage_logs.rate_multiplier_ppm",
            row.try_get("rate_multiplier_ppm")?,
        )?,
        account_cost_multiplier: multiplier(
            "usage_logs.account_cost_multiplier_ppm",
            row.try_get("account_cost_multiplier_ppm")?,
        )?,
        billing_mode: parse_stored(
            "usage_logs.billing_mode",
            &row.try_get::<String, _>("billing_mode")?,
        )?,
        stream: row.try_get::<i64, _>("stream")? != 0,
        duration_ms: row.try_get("duration_ms")?,
        first_token_ms: row.try_get("first_token_ms")?,
        user_agent: row.try_get("user_agent")?,
        client_ip: row.try_get("client_ip")?,
        reasoning_effort: row.try_get("reasoning_effort")?,
        estimated: row.try_get::<i64, _>("estimated")? != 0,
        recovered: row.try_get::<i64, _>("recovered")? != 0,
        created_at_ms: row.try_get("created_at_ms")?,
        client_request_id: row.try_get("client_request_id")?,
        upstream_request_id: row.try_get("upstream_request_id")?,
    })
}

fn row_to_totals(row: &AnyRow) -> Result<UsageTotals> {
    Ok(UsageTotals {
        requests: row.try_get("requests")?,
        input_tokens: row.try_get("input_tokens")?,
        output_tokens: row.try_get("output_tokens")?,
        cached_tokens: row.try_get("cached_tokens")?,
        total_cost_nanos: row.try_get("total_cost_nanos")?,
        actual_cost_nanos: row.try_get("actual_cost_nanos")?,
    })
}

/// Conditions for a filter. The time range is `from_ms <= created_at_ms < to_ms`.
fn filter_conds(args: &mut Args, f: &UsageFilter) -> Vec<String> {
    let mut conds = Vec::new();
    if let Some(v) = f.key_id {
        conds.push(format!("key_id = {}", args.int(v)));
    }
    if let Some(v) = f.user_id {
        conds.push(format!("user_id = {}", args.int(v)));
    }
    if let Some(v) = f.account_id {
        conds.push(format!("account_id = {}", args.int(v)));
    }
    if let Some(v) = f.group_id {
        conds.push(format!("group_id = {}", args.int(v)));
    }
    if let Some(v) = &f.model {
        conds.push(format!("model = {}", args.text(v.clone())));
    }
    if let Some(v) = f.from_ms {
        conds.push(format!("created_at_ms >= {}", args.int(v)));
    }
    if let Some(v) = f.to_ms {
        conds.push(format!("created_at_ms < {}", args.int(v)));
    }
    conds
}

/// `YYYY-MM-DD` of a day number (days since the Unix epoch, UTC).
fn day_label(day: i64) -> Result<String> {
    let date = day
        .checked_mul(86_400)
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| Error::Internal(format!("usage day out of range: {day}")))?
        .date();
    Ok(format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    ))
}

fn add_totals(a: UsageTotals, b: UsageTotals) -> UsageTotals {
    UsageTotals {
        requests: a.requests.saturating_add(b.requests),
        input_tokens: a.input_tokens.saturating_add(b.input_tokens),
        output_tokens: a.output_tokens.saturating_add(b.output_tokens),
        cached_tokens: a.cached_tokens.saturating_add(b.cached_tokens),
        total_cost_nanos: a.total_cost_nanos.saturating_add(b.total_cost_nanos),
        actual_cost_nanos: a.actual_cost_nanos.saturating_add(b.actual_cost_nanos),
    }
}

impl Store {
    /// `true` when inserted, `false` when the request id was already recorded (a replay
    /// changes nothing and is not an error).
    pub async fn insert_usage(&self, r: &UsageRecord) -> Result<bool> {
        let done = insert_usage_query(r).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    /// One page of records (oldest first, keyset on the row id) and the totals over
    /// the whole filter, not just the page.
    pub async fn query_usage(
        &self,
        filter: &UsageFilter,
        page: Page,
    ) -> Result<(Paged<UsageRecord>, UsageTotals)> {
        self.query_usage_ordered(filter, page, false).await
    }

    /// [`Store::query_usage`] newest first: `page.after_id` is then the cursor below
    /// which the page starts (0 = from the newest).
    pub async fn query_usage_newest_first(
        &self,
        filter: &UsageFilter,
        page: Page,
    ) -> Result<(Paged<UsageRecord>, UsageTotals)> {
        self.query_usage_ordered(filter, page, true).await
    }

    async fn query_usage_ordered(
        &self,
        filter: &UsageFilter,
        page: Page,
        newest_first: bool,
    ) -> Result<(Paged<UsageRecord>, UsageTotals)> {
        let mut args = Args::default();
        let mut conds = filter_conds(&mut args, filter);
        let tail = if newest_first {
            if page.after_id > 0 {
                conds.push(format!("id < {}", args.int(page.after_id)));
            }
            format!(" ORDER BY id DESC LIMIT {}", args.int(page_limit(page)))
        } else {
            page_clause(&mut args, &mut conds, "id", page)
        };
        let sql = format!(
            "SELECT id, {USAGE_COLS} FROM usage_logs{}{tail}",
            where_clause(&conds)
        );
        let rows = args.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        let mut last_id = None;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            last_id = Some(row.try_get::<i64, _>("id")?);
            items.push(row_to_usage(row)?);
        }
        let full = i64::try_from(items.len()).unwrap_or(i64::MAX) >= page_limit(page);
        let paged = Paged {
            items,
            next_after_id: if full { last_id } else { None },
        };
        Ok((paged, self.usage_totals(filter).await?))
    }

    /// Totals per UTC day, ascending, and over the whole filter.
    pub async fn usage_series(&self, filter: &UsageFilter) -> Result<(Vec<UsageDay>, UsageTotals)> {
        let mut args = Args::default();
        let conds = filter_conds(&mut args, filter);
        // Integer division: the day number since the epoch, the same on both dialects.
        let sql = format!(
            "SELECT created_at_ms / {DAY_MS} AS day, {TOTALS_COLS} FROM usage_logs{} \
             GROUP BY created_at_ms / {DAY_MS} ORDER BY day",
            where_clause(&conds)
        );
        let rows = args.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        let mut days = Vec::with_capacity(rows.len());
        let mut all = UsageTotals::default();
        for row in &rows {
            let totals = row_to_totals(row)?;
            all = add_totals(all, totals);
            days.push(UsageDay {
                day: day_label(row.try_get("day")?)?,
                totals,
            });
        }
        Ok((days, all))
    }

    pub async fn usage_totals(&self, filter: &UsageFilter) -> Result<UsageTotals> {
        let mut args = Args::default();
        let conds = filter_conds(&mut args, filter);
        let sql = format!(
            "SELECT {TOTALS_COLS} FROM usage_logs{}",
            where_clause(&conds)
        );
        let row = args.bind(sqlx::query(&sql)).one_row(&self.pool).await?;
        row_to_totals(&row)
    }
}

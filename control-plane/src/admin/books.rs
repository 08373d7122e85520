//! Dead letters and the audit of the books: `ListDeadLetters`, `RechargeDeadLetter`,
//! `AuditBooks` (the logic is `billing::dead_letter` and `billing::audit`).

use tollgate_shared::proto::admin::v1 as pb;

use super::{AdminContext, convert, page};
use crate::billing::{audit, dead_letter};
use crate::error::{Error, Result};
use crate::model::DeadLetter;

/// The audit's default threshold for a pending dead letter.
const DEFAULT_DEAD_LETTER_AGE_MS: i64 = 24 * 3600 * 1000;

fn dead_letter_pb(d: DeadLetter) -> pb::DeadLetter {
    pb::DeadLetter {
        id: d.id,
        request_id: d.request_id,
        reason: d.reason,
        record_json: d.record,
        created_at_ms: d.created_at_ms,
        recharged_at_ms: d.recharged_at_ms,
        recharged_model: d.recharged_model,
    }
}

pub async fn list_dead_letters(
    ctx: &AdminContext,
    req: pb::ListDeadLettersRequest,
) -> Result<pb::ListDeadLettersResponse> {
    let limit = match req.limit {
        0 => page::DEFAULT_LIMIT,
        n if n > page::MAX_LIMIT => {
            return Err(Error::invalid(
                "limit",
                format!("must be at most {} (got {n})", page::MAX_LIMIT),
            ));
        }
        n => n,
    };
    if req.before_id < 0 {
        return Err(Error::invalid("before_id", "must not be negative"));
    }
    let rows = ctx
        .store
        .list_dead_letters(req.include_recharged, req.before_id, i64::from(limit))
        .await?;
    let counts = ctx.store.count_dead_letters().await?;
    Ok(pb::ListDeadLettersResponse {
        dead_letters: rows.into_iter().map(dead_letter_pb).collect(),
        total: counts.total,
        pending: counts.pending,
        oldest_pending_ms: counts.oldest_pending_ms,
    })
}

pub async fn recharge_dead_letter(
    ctx: &AdminContext,
    req: pb::RechargeDeadLetterRequest,
) -> Result<pb::RechargeDeadLetterResponse> {
    if req.id <= 0 {
        return Err(Error::invalid("id", "must be a dead letter id"));
    }
    let model = match req.model.as_deref().map(str::trim) {
        Some("") => return Err(Error::invalid("model", "must not be empty when given")),
        m => m,
    };
    let done = dead_letter::recharge(
        &ctx.store,
        &ctx.invalidations,
        &ctx.billing,
        req.id,
        model,
        tollgate_shared::now_ms(),
    )
    .await?;
    tracing::info!(
        dead_letter = req.id,
        charged_now = done.charged_now,
        "admin: dead letter re-charged"
    );
    Ok(pb::RechargeDeadLetterResponse {
        dead_letter: Some(dead_letter_pb(done.dead_letter)),
        usage: Some(convert::usage_record(done.usage)),
        charged_now: done.charged_now,
    })
}

pub async fn audit_books(
    ctx: &AdminContext,
    req: pb::AuditBooksRequest,
) -> Result<pb::AuditBooksResponse> {
    let max_age = match req.max_dead_letter_age_ms {
        0 => DEFAULT_DEAD_LETTER_AGE_MS,
        n if n < 0 => {
            return Err(Error::invalid(
                "max_dead_letter_age_ms",
                "must not be negative",
            ));
        }
        n => n,
    };
    let report = audit::audit(&ctx.store, tollgate_shared::now_ms(), max_age).await?;
    Ok(pb::AuditBooksResponse {
        clean: report.breaches.is_empty(),
        breaches: report
            .breaches
            .into_iter()
            .map(|b| pb::Breach {
                invariant: b.invariant.to_owned(),
                subject: b.subject,
                detail: b.detail,
                expected_nanos: b.expected_nanos,
                actual_nanos: b.actual_nanos,
            })
            .collect(),
        keys_checked: report.keys_checked,
        users_checked: report.users_checked,
        usage_rows: report.usage_rows,
    })
}

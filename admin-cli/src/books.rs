//! `tollgate-admin usage dead-letters | recharge` and `tollgate-admin audit`: records
//! that could not be charged, and the audit of the books.

use tollgate_shared::proto::admin::v1 as pb;

use super::CliError;
use super::connect::AdminApi;
use super::render::{Out, Record};

const DEAD_LETTER_COLUMNS: &[&str] = &["id", "request_id", "reason", "created_at", "recharged_at"];
const BREACH_COLUMNS: &[&str] = &["invariant", "subject", "detail", "expected", "actual"];

fn dead_letter(d: &pb::DeadLetter) -> Record {
    Record::new()
        .int("id", d.id)
        .str("request_id", &d.request_id)
        .str("reason", &d.reason)
        .time("created_at", d.created_at_ms)
        .opt_time("recharged_at", d.recharged_at_ms)
        .str("recharged_model", &d.recharged_model)
        .str("record", &d.record_json)
}

pub async fn list_dead_letters(
    api: &mut AdminApi,
    all: bool,
    before: Option<i64>,
    limit: Option<u32>,
    out: &mut Out<'_>,
) -> Result<(), CliError> {
    let resp = api
        .list_dead_letters(pb::ListDeadLettersRequest {
            include_recharged: all,
            before_id: before.unwrap_or(0),
            limit: limit.unwrap_or(0),
        })
        .await?
        .into_inner();
    let rows: Vec<Record> = resp.dead_letters.iter().map(dead_letter).collect();
    let next = match (resp.dead_letters.last(), rows.len()) {
        (Some(last), n) if n == usize::try_from(limit.unwrap_or(50)).unwrap_or(50) => {
            last.id.to_string()
        }
        _ => String::new(),
    };
    if !out.is_json() {
        out.line(&format!(
            "{} dead letter(s) pending of {} stored",
            resp.pending, resp.total
        ))?;
    }
    out.page("dead_letters", &rows, DEAD_LETTER_COLUMNS, "")?;
    if !next.is_empty() && !out.is_json() {
        out.line(&format!("more: repeat with --before {next}"))?;
    }
    Ok(())
}

pub async fn recharge(
    api: &mut AdminApi,
    id: i64,
    model: Option<String>,
    out: &mut Out<'_>,
) -> Result<(), CliError> {
    let resp = api
        .recharge_dead_letter(pb::RechargeDeadLetterRequest { id, model })
        .await?
        .into_inner();
    let r = Record::new()
        .bool("charged_now", resp.charged_now)
        .rec("dead_letter", resp.dead_letter.as_ref().map(dead_letter))
        .rec("usage", resp.usage.as_ref().map(super::usage::record));
    out.record(&r)
}

pub async fn audit(
    api: &mut AdminApi,
    max_dead_letter_age_hours: Option<u32>,
    out: &mut Out<'_>,
) -> Result<(), CliError> {
    let resp = api
        .audit_books(pb::AuditBooksRequest {
            max_dead_letter_age_ms: i64::from(max_dead_letter_age_hours.unwrap_or(0)) * 3_600_000,
        })
        .await?
        .into_inner();
    let breaches: Vec<Record> = resp
        .breaches
        .iter()
        .map(|b| {
            Record::new()
                .str("invariant", &b.invariant)
                .str("subject", &b.subject)
                .str("detail", &b.detail)
                .usd("expected", b.expected_nanos)
                .usd("actual", b.actual_nanos)
        })
        .collect();
    if out.is_json() {
        let r = Record::new()
            .bool("clean", resp.clean)
            .int("keys_checked", resp.keys_checked)
            .int("users_checked", resp.users_checked)
            .int("usage_rows", resp.usage_rows)
            .recs("breaches", breaches);
        return out.json(&r.to_json());
    }
    out.line(&format!(
        "{} keys, {} users, {} usage rows checked: {}",
        resp.keys_checked,
        resp.users_checked,
        resp.usage_rows,
        if resp.clean {
            "the books are clean".to_owned()
        } else {
            format!("{} breach(es)", resp.breaches.len())
        }
    ))?;
    if !resp.clean {
        out.page("breaches", &breaches, BREACH_COLUMNS, "")?;
    }
    Ok(())
}

//! `ListAuditLog`: the audit log, newest first, filtered by actor, action and time.

use tollgate_shared::proto::admin::v1 as pb;

use super::AdminContext;
use crate::error::{Error, Result};
use crate::storage::{AuditEntry, AuditFilter, MAX_AUDIT_PAGE};

pub async fn list(
    ctx: &AdminContext,
    req: pb::ListAuditLogRequest,
) -> Result<pb::ListAuditLogResponse> {
    if req.limit > MAX_AUDIT_PAGE {
        return Err(Error::invalid(
            "limit",
            format!("must be at most {MAX_AUDIT_PAGE} (got {})", req.limit),
        ));
    }
    if req.before_id < 0 {
        return Err(Error::invalid("before_id", "must not be negative"));
    }
    let non_empty = |s: String| {
        let s = s.trim().to_owned();
        (!s.is_empty()).then_some(s)
    };
    let filter = AuditFilter {
        actor: non_empty(req.actor),
        action: non_empty(req.action),
        since_ms: req.since_ms,
        before_id: (req.before_id > 0).then_some(req.before_id),
        limit: req.limit,
    };
    let entries = ctx.store.list_audit(&filter).await?;
    Ok(pb::ListAuditLogResponse {
        entries: entries.into_iter().map(entry).collect(),
    })
}

fn entry(e: AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        id: e.id,
        at_ms: e.at_ms,
        actor_kind: e.actor_kind,
        actor: e.actor,
        action: e.action,
        target: e.target,
        details_json: e.details,
    }
}

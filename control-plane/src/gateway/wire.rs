//! Conversions between the Gateway wire messages and admission's domain types, and the
//! gRPC answers for Admit and ReportOutcome. The service edge calls only these.

use std::collections::HashMap;

use tollgate_shared::proto::gateway::v1 as pb;
use tonic::Status;

use crate::admission::outcome_policy::{Outcome, OutcomeKind};
use crate::admission::{AdmitError, AdmitRequest, Granted, HeldLease, Rejection};
use crate::model::Credential;

impl From<pb::AdmitRequest> for AdmitRequest {
    fn from(r: pb::AdmitRequest) -> Self {
        Self {
            session_id: r.session_id,
            request_id: r.request_id,
            key_id: r.key_id,
            model: r.model,
            session_hash: r.session_hash.trim().to_owned(),
            excluded_account_ids: r.excluded_account_ids,
            user_lease_id: r.user_lease_id,
            stream: r.stream,
            default_codex_model: r.default_codex_model,
            response_id: r.response_id.trim().to_owned(),
            response_operation: r.response_operation,
            pinned_account: None,
            request_bytes: r.request_bytes,
        }
    }
}

impl From<&pb::HeldLease> for HeldLease {
    fn from(h: &pb::HeldLease) -> Self {
        Self {
            lease_id: h.lease_id.clone(),
            user_id: h.user_id,
            account_id: h.account_id,
        }
    }
}

impl From<Rejection> for pb::Rejection {
    fn from(r: Rejection) -> Self {
        Self {
            code: r.code.name().to_owned(),
            message: r.message,
        }
    }
}

impl From<Granted> for pb::Lease {
    fn from(g: Granted) -> Self {
        let a = g.account;
        let bearer = match a.credential {
            Credential::ApiKey { api_key } => api_key,
            Credential::OAuth { access_token, .. } => access_token,
        };
        Self {
            lease_id: g.lease_id,
            account: Some(pb::AccountLease {
                account_id: a.id,
                kind: a.kind.as_str().to_owned(),
                upstream_url: g.upstream_url,
                bearer,
                chatgpt_account_id: a.chatgpt_account_id,
                model_mapping: a.model_mapping.into_iter().collect::<HashMap<_, _>>(),
                proxy_url: a.proxy_url,
                user_agent: a.user_agent,
                cost_multiplier: a.cost_multiplier.to_string(),
            }),
            user_id: g.user_id,
            group_id: g.group_id,
            subscription_id: g.subscription_id,
            billing_mode: g.billing_mode.as_str().to_owned(),
            rate_multiplier: g.rate_multiplier.to_string(),
            // Set by the Admit handler, which measured the wait.
            queued_us: 0,
        }
    }
}

/// Admit's answer: a lease or a rejection in the body; gRPC errors only for a detached
/// session (UNAVAILABLE: re-attach and retry) or a malformed request.
pub fn admit_response(result: Result<Granted, AdmitError>) -> Result<pb::AdmitResponse, Status> {
    let result = match result {
        Ok(g) => pb::admit_response::Result::Lease(g.into()),
        Err(AdmitError::Rejected(r)) => pb::admit_response::Result::Rejection(r.into()),
        Err(AdmitError::UnknownSession) => {
            return Err(Status::unavailable("unknown or detached session"));
        }
        Err(AdmitError::InvalidArgument(m)) => return Err(Status::invalid_argument(m)),
    };
    Ok(pb::AdmitResponse {
        result: Some(result),
    })
}

/// A reported outcome, validated.
pub fn outcome(r: pb::ReportOutcomeRequest) -> Result<Outcome, Status> {
    use pb::report_outcome_request::Kind;
    let kind = match Kind::try_from(r.kind).unwrap_or(Kind::Unspecified) {
        Kind::HttpStatus => OutcomeKind::HttpStatus,
        Kind::ConnectError => OutcomeKind::ConnectError,
        Kind::StreamTimeout => OutcomeKind::StreamTimeout,
        Kind::Success => OutcomeKind::Success,
        // Older senders: a status alone means an HTTP answer.
        Kind::Unspecified if r.status > 0 => OutcomeKind::HttpStatus,
        Kind::Unspecified => {
            return Err(Status::invalid_argument(
                "ReportOutcome needs a kind or an HTTP status",
            ));
        }
    };
    let status = u16::try_from(r.status)
        .map_err(|_| Status::invalid_argument("status is not an HTTP status"))?;
    Ok(Outcome {
        account_id: r.account_id,
        kind,
        status,
        message: r.message,
        headers: r
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        body: r.body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_shared::ErrorCode;

    #[test]
    fn rejection_carries_the_code_name() {
        let r: pb::Rejection =
            Rejection::new(ErrorCode::TooManyPending, "Too many pending requests").into();
        assert_eq!(r.code, "too_many_pending");
    }

    #[test]
    fn detached_session_is_unavailable() {
        let e = admit_response(Err(AdmitError::UnknownSession)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert_eq!(e.message(), "unknown or detached session");
    }

    #[test]
    fn outcome_kinds() {
        let mut r = pb::ReportOutcomeRequest {
            account_id: 1,
            status: 429,
            ..Default::default()
        };
        assert_eq!(outcome(r.clone()).unwrap().kind, OutcomeKind::HttpStatus);
        r.status = 0;
        assert!(outcome(r.clone()).is_err());
        r.kind = pb::report_outcome_request::Kind::StreamTimeout as i32;
        assert_eq!(outcome(r).unwrap().kind, OutcomeKind::StreamTimeout);
    }
}

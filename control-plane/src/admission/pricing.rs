//! Admit refuses a model with no price before any upstream call (billing.md "Prices":
//! 400 `model_not_priced`, unless the operator configured a fallback price). The name
//! checked is the one the selected account will be asked for — its model mapping, then
//! on subscription accounts the Codex normalisation with the data plane's default — or
//! the operator's alias (`billing::served`), exactly what `ReportUsage` will price. The
//! served name is returned: an estimate of the request's usage is priced by it.

use tollgate_shared::ErrorCode;
use tollgate_shared::domain::AccountKind;
use tollgate_shared::served_model::{DEFAULT_CODEX_MODEL, served_model};

use super::{Admission, AdmitError, AdmitRequest, Rejection};
use crate::billing::served;
use crate::model::Account;

impl Admission {
    pub(super) async fn check_priced(
        &self,
        req: &AdmitRequest,
        account: &Account,
    ) -> Result<String, AdmitError> {
        let table = self
            .inner
            .snapshot
            .prices()
            .await
            .map_err(|e| Rejection::billing_unavailable(&e))?;
        let default = match req.default_codex_model.trim() {
            "" => DEFAULT_CODEX_MODEL,
            d => d,
        };
        let codex = (account.kind == AccountKind::OAuth).then_some(default);
        let served = served_model(&req.model, &account.model_mapping, codex);
        let fallback = self.inner.settings.billing.fallback;
        if served::price_of(
            &req.model,
            &served,
            &account.model_mapping,
            &table,
            fallback,
        )
        .is_some()
        {
            return Ok(served);
        }
        let message = if served == req.model {
            format!("Model '{}' has no configured price", req.model)
        } else {
            format!(
                "Model '{}' (served as '{served}') has no configured price",
                req.model
            )
        };
        Err(Rejection::new(ErrorCode::ModelNotPriced, message).into())
    }
}

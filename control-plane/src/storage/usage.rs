//! Usage records and queries.

use super::Store;
use crate::error::{Error, Result};
use crate::model::{Page, Paged, UsageDay, UsageFilter, UsageRecord, UsageTotals};

impl Store {
    #[allow(unused_variables)]
    pub async fn insert_usage(&self, record: &UsageRecord) -> Result<bool> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn query_usage(
        &self,
        filter: &UsageFilter,
        page: Page,
    ) -> Result<(Paged<UsageRecord>, UsageTotals)> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn usage_series(&self, filter: &UsageFilter) -> Result<(Vec<UsageDay>, UsageTotals)> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn usage_totals(&self, filter: &UsageFilter) -> Result<UsageTotals> {
        Err(Error::Internal("not implemented yet".into()))
    }
}

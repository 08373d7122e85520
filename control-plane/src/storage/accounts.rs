//! Upstream accounts and their group memberships.

use super::Store;
use crate::error::{Error, Result};
use crate::model::{Account, AccountGroup, AccountPatch, NewAccount, Page, Paged};
use tollgate_shared::domain::AccountStatus;

impl Store {
    #[allow(unused_variables)]
    pub async fn create_account(&self, new: NewAccount) -> Result<Account> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn get_account(&self, id: i64) -> Result<Account> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn list_accounts(
        &self,
        group_id: Option<i64>,
        status: Option<AccountStatus>,
        page: Page,
    ) -> Result<Paged<Account>> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn list_group_accounts(&self, group_id: Option<i64>) -> Result<Vec<Account>> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn update_account(&self, id: i64, patch: AccountPatch) -> Result<Account> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn delete_account(&self, id: i64) -> Result<()> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn set_account_groups(&self, id: i64, groups: Vec<AccountGroup>) -> Result<Account> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn clear_account_error(&self, id: i64) -> Result<Account> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn clear_account_rate_limit(&self, id: i64) -> Result<Account> {
        Err(Error::Internal("not implemented yet".into()))
    }
}

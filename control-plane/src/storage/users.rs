//! Users and their balance ledger.

use super::Store;
use crate::error::{Error, Result};
use crate::model::{BalanceOp, LedgerEntry, NewUser, Page, Paged, User, UserPatch};
use tollgate_shared::domain::UserStatus;

impl Store {
    #[allow(unused_variables)]
    pub async fn create_user(&self, new: NewUser) -> Result<User> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn get_user(&self, id: i64) -> Result<User> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn list_users(&self, status: Option<UserStatus>, page: Page) -> Result<Paged<User>> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn update_user(&self, id: i64, patch: UserPatch) -> Result<User> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn delete_user(&self, id: i64) -> Result<()> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn adjust_balance(
        &self,
        user_id: i64,
        op: BalanceOp,
        amount_nanos: i64,
        reason: &str,
    ) -> Result<(User, LedgerEntry)> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn list_ledger(&self, user_id: i64, page: Page) -> Result<Paged<LedgerEntry>> {
        Err(Error::Internal("not implemented yet".into()))
    }
}

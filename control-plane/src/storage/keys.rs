//! API keys.

use super::Store;
use crate::error::{Error, Result};
use crate::model::{ApiKey, KeyPatch, NewApiKey, Page, Paged};
use tollgate_shared::domain::KeyStatus;

impl Store {
    #[allow(unused_variables)]
    pub async fn create_key(&self, new: NewApiKey) -> Result<ApiKey> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn get_key(&self, id: i64) -> Result<ApiKey> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn get_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn list_keys(
        &self,
        user_id: Option<i64>,
        group_id: Option<i64>,
        page: Page,
    ) -> Result<Paged<ApiKey>> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn update_key(&self, id: i64, patch: KeyPatch) -> Result<ApiKey> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn set_key_status(&self, id: i64, status: KeyStatus) -> Result<ApiKey> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn delete_key(&self, id: i64) -> Result<()> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn reset_key_quota(&self, id: i64) -> Result<ApiKey> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn clear_key_expiration(&self, id: i64) -> Result<ApiKey> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn touch_key(&self, id: i64, at_ms: i64) -> Result<()> {
        Err(Error::Internal("not implemented yet".into()))
    }
}

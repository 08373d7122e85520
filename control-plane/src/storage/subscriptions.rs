//! Subscriptions.

use super::Store;
use crate::error::{Error, Result};
use crate::model::{NewSubscription, Page, Paged, Subscription};

impl Store {
    #[allow(unused_variables)]
    pub async fn create_subscription(&self, new: NewSubscription) -> Result<Subscription> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn get_subscription(&self, id: i64) -> Result<Subscription> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn list_subscriptions(
        &self,
        user_id: Option<i64>,
        group_id: Option<i64>,
        page: Page,
    ) -> Result<Paged<Subscription>> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn extend_subscription(
        &self,
        id: i64,
        days: u32,
        now_ms: i64,
    ) -> Result<Subscription> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn revoke_subscription(&self, id: i64) -> Result<Subscription> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn active_subscription(
        &self,
        user_id: i64,
        group_id: i64,
        now_ms: i64,
    ) -> Result<Option<Subscription>> {
        Err(Error::Internal("not implemented yet".into()))
    }
}

//! Groups.

use super::Store;
use crate::error::{Error, Result};
use crate::model::{Group, GroupPatch, NewGroup, Page, Paged};

impl Store {
    #[allow(unused_variables)]
    pub async fn create_group(&self, new: NewGroup) -> Result<Group> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn get_group(&self, id: i64) -> Result<Group> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn list_groups(&self, page: Page) -> Result<Paged<Group>> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn update_group(&self, id: i64, patch: GroupPatch) -> Result<Group> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn delete_group(&self, id: i64) -> Result<()> {
        Err(Error::Internal("not implemented yet".into()))
    }
}

//! Model prices.

use super::Store;
use crate::error::{Error, Result};
use crate::model::Price;

impl Store {
    #[allow(unused_variables)]
    pub async fn upsert_price(&self, price: Price) -> Result<Price> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn get_price(&self, model: &str) -> Result<Option<Price>> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn list_prices(&self) -> Result<Vec<Price>> {
        Err(Error::Internal("not implemented yet".into()))
    }

    #[allow(unused_variables)]
    pub async fn delete_price(&self, model: &str) -> Result<()> {
        Err(Error::Internal("not implemented yet".into()))
    }
}

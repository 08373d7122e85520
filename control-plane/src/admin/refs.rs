//! Checks that ids a request *refers to* (a key's user and group, an account's groups, a
//! subscription's user and group) name live rows. A missing referenced row is the
//! caller's bad input (`INVALID_ARGUMENT` naming the field), unlike a missing *target*
//! of the call, which stays `NOT_FOUND`.

use crate::error::{Error, Result};
use crate::model::{Group, User};
use crate::storage::Store;

pub async fn user(store: &Store, field: &str, id: i64) -> Result<User> {
    store
        .get_user(id)
        .await
        .map_err(|e| referenced(e, field, || format!("user {id} does not exist")))
}

pub async fn group(store: &Store, field: &str, id: i64) -> Result<Group> {
    store
        .get_group(id)
        .await
        .map_err(|e| referenced(e, field, || format!("group {id} does not exist")))
}

fn referenced(e: Error, field: &str, message: impl FnOnce() -> String) -> Error {
    match e {
        Error::NotFound(_) => Error::invalid(field, message()),
        other => other,
    }
}

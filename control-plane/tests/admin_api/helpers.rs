//! Constants and small client helpers shared by the Admin API tests.

use std::fmt::Debug;

use sha2::{Digest, Sha256};
use tollgate_shared::proto::admin::v1 as pb;
use tollgate_shared::proto::admin::v1::create_account_request;
use tonic::{Code, Response, Status};

use crate::admin_support::{Client, Harness, Snapshot, assert_code};

pub(crate) use tollgate_shared::DAY_MS;
pub(crate) const MISSING: i64 = 999_999;

pub(crate) fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

pub(crate) async fn new_user(c: &mut Client, email: &str) -> pb::User {
    c.create_user(pb::CreateUserRequest {
        email: email.to_owned(),
        name: "Test User".into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

pub(crate) async fn new_group(c: &mut Client, name: &str, kind: &str) -> pb::Group {
    c.create_group(pb::CreateGroupRequest {
        name: name.to_owned(),
        kind: kind.to_owned(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

pub(crate) async fn new_key(c: &mut Client, req: pb::CreateKeyRequest) -> (pb::ApiKey, String) {
    let r = c.create_key(req).await.unwrap().into_inner();
    (r.key.unwrap(), r.secret)
}

pub(crate) fn api_key_account(name: &str, api_key: &str) -> pb::CreateAccountRequest {
    pb::CreateAccountRequest {
        name: name.to_owned(),
        credential: Some(create_account_request::Credential::ApiKey(
            pb::ApiKeyCredential {
                api_key: api_key.to_owned(),
            },
        )),
        ..Default::default()
    }
}

/// The call was refused with INVALID_ARGUMENT naming `field`, and no table changed.
pub(crate) async fn refused<T: Debug>(
    h: &Harness,
    before: &Snapshot,
    field: &str,
    result: Result<Response<T>, Status>,
) {
    assert_code(result, Code::InvalidArgument, field);
    assert!(
        h.snapshot().await == *before,
        "a refused request ({field}) changed the database"
    );
}

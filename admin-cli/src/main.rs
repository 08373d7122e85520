//! `tollgate-admin`: the operator CLI. All logic lives in the `tollgate_admin` library
//! (this file is also built as the system tests' copy of the binary, see `tests/Cargo.toml`).

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tollgate_admin::main_from_env().await
}

//! Binary: everything is in the library's `main_from_env` (this file is also built as
//! the system tests' copy of the binary, see `tests/Cargo.toml`).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tollgate_data_plane::main_from_env().await
}

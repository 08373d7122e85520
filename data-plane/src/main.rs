//! Binary: everything is in the library's `main_from_env` (this file is also built as
//! the system tests' copy of the binary, see `tests/Cargo.toml`).

// Most of a request's CPU besides I/O is small allocations (bodies, JSON values, headers);
// mimalloc's thread-local free lists make them cheaper than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tollgate_data_plane::main_from_env().await
}

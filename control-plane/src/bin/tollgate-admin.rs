//! `tollgate-admin`: the operator CLI. All logic lives in `tollgate_control_plane::cli`.

use std::process::ExitCode;

use clap::Parser;
use tollgate_control_plane::cli::{self, Cli};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match cli::run(args, &mut stdout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

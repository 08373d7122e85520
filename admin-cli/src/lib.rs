//! `tollgate-admin`: the operator CLI over the Admin gRPC API.
//!
//! One module per resource (`users`, `groups`, `keys`, `accounts`, `subscriptions`,
//! `prices`, `usage`), each holding its clap subcommands, the calls they make and the
//! record it prints. `render` turns records into tables or JSON, `values` converts money
//! (exact USD decimals ↔ nano-USD) and times (RFC 3339 ↔ unix ms), `connect` resolves the
//! endpoint and admin token.
//!
//! Everything writes to a `&mut dyn Write`, so [`run`] and [`main_with`] are testable
//! in-process; the binary is a thin wrapper.

mod accounts;
mod args;
mod connect;
mod error;
mod groups;
mod keys;
mod prices;
mod render;
mod subscriptions;
mod usage;
mod users;
mod values;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

pub use args::{Cli, Command, ConnectArgs};
pub use error::CliError;

use render::Out;

/// Runs one parsed command, writing its output to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CliError> {
    let mut client = connect::client(&cli.conn)?;
    let mut out = Out::new(out, cli.json);
    match cli.command {
        Command::User(cmd) => users::run(&mut client, cmd, &mut out).await,
        Command::Group(cmd) => groups::run(&mut client, cmd, &mut out).await,
        Command::Key(cmd) => keys::run(&mut client, cmd, &mut out).await,
        Command::Account(cmd) => accounts::run(&mut client, *cmd, &mut out).await,
        Command::Subscription(cmd) => subscriptions::run(&mut client, cmd, &mut out).await,
        Command::Price(cmd) => prices::run(&mut client, cmd, &mut out).await,
        Command::Usage(cmd) => usage::run(&mut client, cmd, &mut out).await,
    }
}

/// The binary's whole life: parses the process arguments (and `TOLLGATE_ADMIN_*` from the
/// environment), runs the command to stdout and reports an error on stderr. A closed stdout
/// (`tollgate-admin … | head`) is not an error.
pub async fn main_from_env() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match run(cli, &mut stdout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Parses `args` (the first one is the program name) and runs the command: output goes to
/// `out`, help and errors to `out`/`err` as a terminal would show them. Returns the exit
/// code: 0 on success, 2 for usage errors, invalid arguments and not-found, 1 otherwise.
pub async fn main_with<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let text = e.render().to_string();
            // Nothing sensible is left to do if even this write fails.
            let _ = if e.use_stderr() {
                err.write_all(text.as_bytes())
            } else {
                out.write_all(text.as_bytes())
            };
            return e.exit_code();
        }
    };
    match run(cli, out).await {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            i32::from(e.exit_code())
        }
    }
}

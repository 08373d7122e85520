//! How the planes' binaries end on an error: one line on stderr, `<binary>: <error>:
//! <cause>…`, and exit status 1. No `Debug` dump and no backtrace (anyhow's `Debug`
//! prints one when `RUST_BACKTRACE` is set): an operator whose port is taken needs the
//! address and the setting, not a stack.

use std::process::ExitCode;

/// The error and its causes on one line; a cause whose text the line already holds
/// (errors that embed their source with `{0}`) is not repeated.
pub fn one_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.replace('\n', " ")
}

/// Prints `<binary>: <one line>` to stderr and returns exit status 1.
pub fn failed(binary: &str, error: &dyn std::error::Error) -> ExitCode {
    eprintln!("{binary}: {}", one_line(error));
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot listen on 127.0.0.1:80 (--listen): {0}")]
        Embeds(#[source] std::io::Error),
        #[error("start-up failed")]
        Wraps(#[source] std::io::Error),
    }

    #[test]
    fn causes_on_one_line_without_repeats() {
        let io = || std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        assert_eq!(
            one_line(&Outer::Embeds(io())),
            "cannot listen on 127.0.0.1:80 (--listen): Address already in use"
        );
        assert_eq!(
            one_line(&Outer::Wraps(io())),
            "start-up failed: Address already in use"
        );
    }
}

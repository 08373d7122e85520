//! The CLI's one error type and its exit codes.

use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments or local configuration (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The server answered with a gRPC status (boxed: `Status` is large).
    #[error("{}", status_line(.0))]
    Status(Box<tonic::Status>),
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        Self::Status(Box::new(s))
    }
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> Self {
        Self::Io(e.into())
    }
}

impl CliError {
    /// 2 for usage errors, invalid arguments and not-found; 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Status(s) if matches!(s.code(), Code::InvalidArgument | Code::NotFound) => 2,
            Self::Status(_) | Self::Io(_) => 1,
        }
    }

    /// The gRPC code when the server refused the call.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Status(s) => Some(s.code()),
            _ => None,
        }
    }

    /// Output went to a closed pipe (`tollgate-admin … | head`): not worth reporting.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

fn status_line(s: &tonic::Status) -> String {
    let code = code_name(s.code());
    if s.message().is_empty() {
        code.to_owned()
    } else {
        format!("{code}: {}", s.message())
    }
}

/// The canonical upper-case name of a gRPC code, as grpcurl and the gRPC docs print it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_status_and_picks_exit_codes() {
        let e = CliError::from(tonic::Status::not_found("user 7 not found"));
        assert_eq!(e.to_string(), "NOT_FOUND: user 7 not found");
        assert_eq!(e.exit_code(), 2);
        let e = CliError::from(tonic::Status::invalid_argument("bad"));
        assert_eq!(e.exit_code(), 2);
        let e = CliError::from(tonic::Status::unauthenticated(""));
        assert_eq!(e.to_string(), "UNAUTHENTICATED");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
    }
}

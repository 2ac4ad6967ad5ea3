//! The client's error type and the classification of gRPC statuses into "give up",
//! "try another node" and "go to the leader", which drives every retry loop.
//!
//! Classification lives in one pure function so that it can be unit-tested without a
//! server and so that every call (reads, writes, membership) retries the same way.

use baton_proto::{LEADER_ADDR_KEY, REASON_KEY};
use tonic::{Code, Status};

/// Why a call to the directory failed. `Display` is always one line, fit to be printed
/// after `error: ` by the CLI.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The directory refused the request (unknown role, duplicate, bad order...), or
    /// answered with a status that retrying cannot fix.
    #[error("{}", one_line(message, *code))]
    Status {
        /// The gRPC status code, to let callers branch (`NotFound`, `AlreadyExists`...).
        code: Code,
        /// The machine-readable reason from the `baton-reason` metadata, if the server sent one.
        reason: Option<String>,
        /// The server's message: one sentence naming the problem.
        message: String,
    },
    /// No node gave an answer within the retry budget. Names every address tried and
    /// the last error seen.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
    /// A directory address given by the user (or hinted by a server) is malformed.
    #[error("invalid directory address {address:?}: {problem}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl ClientError {
    /// A refusal built from a server status, with its reason metadata.
    pub fn from_status(status: &Status) -> Self {
        ClientError::Status {
            code: status.code(),
            reason: reason_of(status),
            message: status.message().to_string(),
        }
    }

    /// The gRPC code of a server refusal, `None` for other errors.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The `baton-reason` of a server refusal, if any.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ClientError::Status { reason, .. } => reason.as_deref(),
            _ => None,
        }
    }

    /// True when no directory node could be reached within the budget.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ClientError::Unavailable(_))
    }
}

/// A message on one line; the code's description if the server sent no message.
fn one_line(message: &str, code: Code) -> String {
    let text = if message.trim().is_empty() {
        format!("{} ({code:?})", code.description())
    } else {
        message.trim().to_string()
    };
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `baton-reason` metadata of a status.
fn reason_of(status: &Status) -> Option<String> {
    status
        .metadata()
        .get(REASON_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// What a retry loop does after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The node is not the leader and named it: retry at this address (canonical form) now.
    Redirect(String),
    /// The node could not be reached, timed out, or cannot serve now without saying who
    /// can: try the next address (with backoff once all have been tried).
    NextNode,
    /// A definite answer (refusal or a status retrying cannot fix): return it to the caller.
    GiveUp,
}

/// Classifies a failed attempt.
///
/// - `UNAVAILABLE` with a parseable `baton-leader-addr`: [`Disposition::Redirect`].
/// - `UNAVAILABLE` without one, `DEADLINE_EXCEEDED`, `ABORTED`, and any status the
///   client's transport produced itself (connection refused or broken, h2 errors; tonic
///   marks those with a `source`): [`Disposition::NextNode`].
/// - everything else, notably `NOT_FOUND`, `ALREADY_EXISTS`, `FAILED_PRECONDITION`,
///   `INVALID_ARGUMENT`: [`Disposition::GiveUp`].
pub fn classify(status: &Status) -> Disposition {
    match status.code() {
        Code::Unavailable => match leader_hint(status) {
            Some(addr) => Disposition::Redirect(addr),
            None => Disposition::NextNode,
        },
        Code::DeadlineExceeded | Code::Aborted => Disposition::NextNode,
        Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::InvalidArgument
        | Code::Unimplemented
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::OutOfRange => Disposition::GiveUp,
        // A status decoded from a server's trailers has no source; one the client built
        // from a transport failure (reset stream, connection closed mid-call) has.
        _ if is_transport_failure(status) => Disposition::NextNode,
        _ => Disposition::GiveUp,
    }
}

/// True for a status made on the client side from an I/O or HTTP/2 failure.
pub(crate) fn is_transport_failure(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// The leader address hinted by a status, in canonical form.
pub fn leader_hint(status: &Status) -> Option<String> {
    leader_hint_in(status.metadata())
}

/// The leader address hinted by a reply's or a status's metadata, in canonical form (a
/// follower that forwarded a request names the leader on its reply).
pub fn leader_hint_in(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    let raw = metadata.get(LEADER_ADDR_KEY)?.to_str().ok()?;
    crate::parse_address(raw).ok()
}

/// A short, one-line description of a failed attempt, for `Unavailable` messages.
pub(crate) fn describe_status(status: &Status) -> String {
    let mut text = one_line(status.message(), status.code());
    // Transport errors often hide the useful part ("Connection refused") in the source chain.
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        let s = err.to_string();
        if !s.is_empty() && !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&one_line(&s, Code::Unknown));
        }
        source = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn with_meta(mut status: Status, key: &'static str, value: &str) -> Status {
        status
            .metadata_mut()
            .insert(key, MetadataValue::try_from(value).unwrap());
        status
    }

    #[test]
    fn refusals_give_up() {
        for code in [
            Code::NotFound,
            Code::AlreadyExists,
            Code::FailedPrecondition,
            Code::InvalidArgument,
            Code::Unimplemented,
            Code::Internal,
            Code::Unknown,
        ] {
            assert_eq!(
                classify(&Status::new(code, "no")),
                Disposition::GiveUp,
                "{code:?}"
            );
        }
    }

    #[test]
    fn unavailable_with_hint_redirects_in_canonical_form() {
        let s = with_meta(
            Status::unavailable("not the leader"),
            LEADER_ADDR_KEY,
            "http://127.0.0.1:7002",
        );
        assert_eq!(
            classify(&s),
            Disposition::Redirect("127.0.0.1:7002".to_string())
        );
    }

    #[test]
    fn unavailable_without_usable_hint_tries_next_node() {
        assert_eq!(
            classify(&Status::unavailable("no leader")),
            Disposition::NextNode
        );
        let bad = with_meta(Status::unavailable("x"), LEADER_ADDR_KEY, "nonsense");
        assert_eq!(classify(&bad), Disposition::NextNode);
        // A leader hint on a refusal is ignored: refusals are final.
        let refusal = with_meta(Status::not_found("x"), LEADER_ADDR_KEY, "127.0.0.1:7002");
        assert_eq!(classify(&refusal), Disposition::GiveUp);
    }

    #[test]
    fn timeouts_and_client_side_transport_failures_try_next_node() {
        assert_eq!(
            classify(&Status::deadline_exceeded("slow")),
            Disposition::NextNode
        );
        assert_eq!(classify(&Status::aborted("x")), Disposition::NextNode);
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
        let transport = Status::from_error(Box::new(io));
        assert_eq!(transport.code(), Code::Unknown);
        assert_eq!(classify(&transport), Disposition::NextNode);
    }

    #[test]
    fn refusal_keeps_code_reason_and_message_on_one_line() {
        let s = with_meta(
            Status::not_found("role \"x\" does not exist"),
            REASON_KEY,
            "NOT_FOUND",
        );
        let e = ClientError::from_status(&s);
        assert_eq!(e.code(), Some(Code::NotFound));
        assert_eq!(e.reason(), Some("NOT_FOUND"));
        assert_eq!(e.to_string(), "role \"x\" does not exist");

        let multi = ClientError::from_status(&Status::internal("first\nsecond\n"));
        assert_eq!(multi.to_string(), "first second");
        let empty = ClientError::from_status(&Status::unimplemented(""));
        assert!(!empty.to_string().is_empty());
        assert!(!empty.to_string().contains('\n'));
    }
}

//! Reads for the API: a client bounded by `max_execution_time`, and the one error type every
//! query module returns, which tells "ClickHouse is away" from "the query ran too long" from
//! "a stored row is wrong" so that the API can answer each with its own code.

use std::time::Duration;

/// Settings every API read runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// ClickHouse's `max_execution_time` for each query; the server cancels it past this.
    pub max_execution_time: Duration,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_execution_time: Duration::from_secs(10),
        }
    }
}

/// `client` with the read limits applied to every query it sends.
#[must_use]
pub fn read_client(client: &clickhouse::Client, limits: ReadLimits) -> clickhouse::Client {
    client.clone().with_setting(
        "max_execution_time",
        limits.max_execution_time.as_secs().max(1).to_string(),
    )
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// ClickHouse did not answer (connection refused or cut, overloaded): retry later.
    #[error("ClickHouse is unavailable: {0}")]
    Unavailable(String),
    /// The query ran past `max_execution_time` and was cancelled.
    #[error("the query exceeded max_execution_time: {0}")]
    Timeout(String),
    /// ClickHouse answered with an error that retrying will not fix.
    #[error("ClickHouse failed: {0}")]
    Failed(String),
    /// A stored row the domain rejects (never expected; reported, not guessed at).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

/// ClickHouse error codes that mean "try again later" rather than "this query is wrong":
/// TOO_MANY_SIMULTANEOUS_QUERIES (202), QUERY_WAS_CANCELLED (394), ABORTED (236),
/// SOCKET_TIMEOUT (209), NETWORK_ERROR (210), MEMORY_LIMIT_EXCEEDED (241).
const RETRIABLE_CODES: [u32; 6] = [202, 394, 236, 209, 210, 241];
/// TIMEOUT_EXCEEDED.
const TIMEOUT_CODE: u32 = 159;

/// The `N` of a ClickHouse message `Code: N. DB::Exception: …`.
fn exception_code(message: &str) -> Option<u32> {
    let rest = &message[message.find("Code: ")? + 6..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

impl From<clickhouse::error::Error> for ReadError {
    fn from(error: clickhouse::error::Error) -> Self {
        use clickhouse::error::Error;
        match error {
            Error::Network(_) | Error::TimedOut => Self::Unavailable(error.to_string()),
            Error::BadResponse(message) => match exception_code(&message) {
                Some(TIMEOUT_CODE) => Self::Timeout(message),
                Some(code) if RETRIABLE_CODES.contains(&code) => Self::Unavailable(message),
                // A proxy or a starting server answering without a ClickHouse exception.
                None => Self::Unavailable(message),
                Some(_) => Self::Failed(message),
            },
            other => Self::Failed(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_classify_errors() {
        let timeout = clickhouse::error::Error::BadResponse(
            "Code: 159. DB::Exception: Timeout exceeded: elapsed 10.2 seconds. (TIMEOUT_EXCEEDED)"
                .to_owned(),
        );
        assert!(matches!(ReadError::from(timeout), ReadError::Timeout(_)));
        let busy = clickhouse::error::Error::BadResponse(
            "Code: 202. DB::Exception: Too many simultaneous queries".to_owned(),
        );
        assert!(matches!(ReadError::from(busy), ReadError::Unavailable(_)));
        let syntax = clickhouse::error::Error::BadResponse(
            "Code: 62. DB::Exception: Syntax error".to_owned(),
        );
        assert!(matches!(ReadError::from(syntax), ReadError::Failed(_)));
        assert_eq!(exception_code("Code: 60. DB::Exception"), Some(60));
        assert_eq!(exception_code("502 Bad Gateway"), None);
    }
}

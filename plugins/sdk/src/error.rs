//! [`PluginError`]: how a plugin tells the daemon whether a failed job is worth retrying.

use std::fmt;
use std::time::Duration;

use crate::bindings;

/// A failed command, classified by the plugin so the daemon knows what to do next.
///
/// The daemon retries a [`Retriable`](PluginError::Retriable) error with exponential
/// backoff (waiting at least `retry_after` when it is given) until the job's retry
/// budget is spent; a [`Permanent`](PluginError::Permanent) error fails the job at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// Worth trying again later: network trouble, a 5xx or 429 response.
    Retriable {
        /// What went wrong, for the job record and the log.
        message: String,
        /// The smallest delay before the next attempt, from a `retry-after` header say.
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help: a bad payload, failed authentication, a 404.
    Permanent {
        /// What went wrong and, where possible, what to do about it.
        message: String,
    },
}

impl PluginError {
    /// A retriable error; the daemon picks the delay from its backoff policy.
    pub fn retriable(message: impl Into<String>) -> Self {
        Self::Retriable {
            message: message.into(),
            retry_after: None,
        }
    }

    /// A retriable error that must not be retried before `after` has passed.
    pub fn retriable_after(message: impl Into<String>, after: Duration) -> Self {
        Self::Retriable {
            message: message.into(),
            retry_after: Some(after),
        }
    }

    /// An error that fails the job without retrying.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent {
            message: message.into(),
        }
    }

    /// The permanent error for a command this plugin does not serve.
    pub fn unknown_command(command: &str) -> Self {
        Self::permanent(format!("unknown command {command:?}"))
    }

    /// The error's message, whatever its class.
    pub fn message(&self) -> &str {
        match self {
            Self::Retriable { message, .. } | Self::Permanent { message } => message,
        }
    }

    /// Whether the daemon may try the job again.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Retriable { .. })
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retriable {
                message,
                retry_after: Some(after),
            } => {
                write!(f, "{message} (retriable after {} ms)", after.as_millis())
            }
            Self::Retriable {
                message,
                retry_after: None,
            } => write!(f, "{message} (retriable)"),
            Self::Permanent { message } => f.write_str(message),
        }
    }
}

impl std::error::Error for PluginError {}

impl From<PluginError> for bindings::Error {
    fn from(error: PluginError) -> Self {
        match error {
            PluginError::Retriable {
                message,
                retry_after,
            } => bindings::Error::Retriable(bindings::honeydew::plugin::types::RetriableError {
                message,
                retry_after_ms: retry_after
                    .map(|after| u64::try_from(after.as_millis()).unwrap_or(u64::MAX)),
            }),
            PluginError::Permanent { message } => bindings::Error::Permanent(message),
        }
    }
}

/// An error the daemon classified on the plugin's behalf (a host call's), kept as it is.
impl From<bindings::Error> for PluginError {
    fn from(error: bindings::Error) -> Self {
        match error {
            bindings::Error::Retriable(retriable) => Self::Retriable {
                message: retriable.message,
                retry_after: retriable.retry_after_ms.map(Duration::from_millis),
            },
            bindings::Error::Permanent(message) => Self::Permanent { message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::honeydew::plugin::types::RetriableError;

    /// The WIT error's class, message and delay, comparable in assertions.
    fn lower(error: PluginError) -> (&'static str, String, Option<u64>) {
        match bindings::Error::from(error) {
            bindings::Error::Retriable(RetriableError {
                message,
                retry_after_ms,
            }) => ("retriable", message, retry_after_ms),
            bindings::Error::Permanent(message) => ("permanent", message, None),
        }
    }

    #[test]
    fn the_wit_error_carries_class_message_and_delay() {
        let delayed = PluginError::retriable_after("slow down", Duration::from_millis(1500));
        assert_eq!(
            lower(delayed),
            ("retriable", "slow down".into(), Some(1500))
        );
        let flaky = PluginError::retriable("flaky");
        assert_eq!(lower(flaky), ("retriable", "flaky".into(), None));
        let bad = PluginError::permanent("bad payload");
        assert_eq!(lower(bad), ("permanent", "bad payload".into(), None));
    }

    #[test]
    fn a_host_error_keeps_its_class_message_and_delay() {
        for error in [
            PluginError::retriable_after("HTTP 503", Duration::from_millis(2500)),
            PluginError::retriable("reset"),
            PluginError::permanent("refused"),
        ] {
            assert_eq!(
                PluginError::from(bindings::Error::from(error.clone())),
                error
            );
        }
    }

    #[test]
    fn display_names_the_class() {
        let delayed = PluginError::retriable_after("HTTP 429", Duration::from_secs(2));
        assert_eq!(delayed.to_string(), "HTTP 429 (retriable after 2000 ms)");
        let unknown = PluginError::unknown_command("nope");
        assert_eq!(unknown.to_string(), "unknown command \"nope\"");
    }
}

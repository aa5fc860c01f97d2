//! What can go wrong when a provider programs a load balancer.

use std::fmt;
use std::time::Duration;

use crate::bounds::truncate;

/// The most bytes of an error's [`Display`](fmt::Display) text: with the controller's
/// prefix it still fits a Kubernetes event note (1 KiB).
pub const MAX_DISPLAY_BYTES: usize = 900;
/// The most bytes of a [`ProviderError::summary`].
pub const MAX_SUMMARY_BYTES: usize = 300;

/// A provider's failure, classified by what the controller should do about it.
///
/// Messages follow one convention: `<what failed>: <details>`. The part before the first
/// `": "` names the failure in words that do not change between attempts (no request ids,
/// no server text, no timings); everything a backend said goes after it, already bounded
/// (see [`crate::bounds`]). [`summary`](ProviderError::summary) is that stable part, for a
/// Service condition or a deduplicated event; [`Display`](fmt::Display) is the whole message
/// (at most [`MAX_DISPLAY_BYTES`]), for logs and Warning events. Neither ever carries the
/// credentials of an endpoint URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The Service asks for something this provider cannot serve. Permanent: the user must
    /// fix the Service (a Warning event names `field` and the accepted values); no retry.
    Invalid {
        /// The offending field, e.g. `spec.ports[1].protocol`.
        field: String,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// Worth retrying with backoff, waiting at least `retry_after` when set.
    Transient {
        /// What failed.
        message: String,
        /// The least wait the backend asked for (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Someone else changed or holds the load balancer; retry after re-reading.
    Conflict(String),
    /// Retrying will not help until the configuration or the backend changes.
    Permanent(String),
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = match self {
            ProviderError::Invalid { field, message } => format!("Invalid {field}: {message}"),
            ProviderError::Transient { message, .. } | ProviderError::Permanent(message) => {
                message.clone()
            }
            ProviderError::Conflict(message) => format!("Conflict: {message}"),
        };
        f.write_str(&cut_bytes(&full, MAX_DISPLAY_BYTES))
    }
}

/// `text` cut to at most `max` bytes on a character boundary (the cut marked with `…`).
fn cut_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut at = max - '…'.len_utf8();
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    format!("{}…", &text[..at])
}

/// The stable head of a `<what failed>: <details>` message.
fn head(message: &str) -> &str {
    message.split_once(": ").map_or(message, |(h, _)| h)
}

impl ProviderError {
    /// A short description of the failure that stays the same across attempts as long as
    /// the failure is of the same kind, e.g. `Load balancer API answered 400 Bad Request`
    /// while the server's message (with its request id) changes each time. For Service
    /// conditions and for deciding whether a Warning is new; [`Display`](fmt::Display)
    /// carries the details. Bounded to [`MAX_SUMMARY_BYTES`] ([`MAX_DISPLAY_BYTES`] for
    /// `Invalid`).
    ///
    /// [`Invalid`](ProviderError::Invalid) keeps its whole (bounded) message: it comes from
    /// the Service and tells the user what is accepted.
    pub fn summary(&self) -> String {
        let text = match self {
            ProviderError::Invalid { field, message } => {
                return cut_bytes(&format!("Invalid {field}: {message}"), MAX_DISPLAY_BYTES);
            }
            ProviderError::Transient { message, .. } | ProviderError::Permanent(message) => {
                head(message).to_string()
            }
            ProviderError::Conflict(message) => format!("Conflict: {}", head(message)),
        };
        cut_bytes(&text, MAX_SUMMARY_BYTES)
    }

    /// What the backend said, when the message carries it: the part after the stable
    /// [`summary`](ProviderError::summary), bounded.
    pub fn detail(&self) -> Option<String> {
        let message = match self {
            ProviderError::Invalid { .. } => return None,
            ProviderError::Transient { message, .. }
            | ProviderError::Permanent(message)
            | ProviderError::Conflict(message) => message,
        };
        message
            .split_once(": ")
            .map(|(_, d)| truncate(d, crate::bounds::MAX_MESSAGE_CHARS * 2))
    }

    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ProviderError::Invalid { .. } => "invalid",
            ProviderError::Transient { .. } => "transient",
            ProviderError::Conflict(_) => "conflict",
            ProviderError::Permanent(_) => "permanent",
        }
    }

    /// Whether the controller should retry (with backoff) without the Service changing.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Transient { .. } | ProviderError::Conflict(_)
        )
    }

    /// The least wait before a retry, when the backend asked for one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// An [`Invalid`](ProviderError::Invalid) error.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ProviderError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A [`Transient`](ProviderError::Transient) error with no requested wait.
    pub fn transient(message: impl Into<String>) -> Self {
        ProviderError::Transient {
            message: message.into(),
            retry_after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let cases = [
            (
                ProviderError::invalid("spec.ports[0].protocol", "x"),
                "invalid",
                false,
            ),
            (ProviderError::transient("x"), "transient", true),
            (ProviderError::Conflict("x".into()), "conflict", true),
            (ProviderError::Permanent("x".into()), "permanent", false),
        ];
        for (err, label, retry) in cases {
            assert_eq!(err.metric_label(), label);
            assert_eq!(err.is_retryable(), retry, "{err:?}");
        }
        let e = ProviderError::invalid("spec.ports[0].protocol", "SCTP is not supported");
        assert_eq!(e.summary(), e.to_string());
        assert_eq!(
            e.to_string(),
            "Invalid spec.ports[0].protocol: SCTP is not supported"
        );
    }

    #[test]
    fn summaries_are_stable_and_everything_is_bounded() {
        let rejected = |id: &str| {
            ProviderError::Permanent(format!(
                "Load balancer API answered 400 Bad Request: Listener rejected (request id {id})"
            ))
        };
        let (a, b) = (rejected("1f3a"), rejected("9c0d"));
        assert_ne!(a.to_string(), b.to_string());
        assert_eq!(a.summary(), b.summary());
        assert_eq!(a.summary(), "Load balancer API answered 400 Bad Request");
        assert_eq!(
            a.detail().as_deref(),
            Some("Listener rejected (request id 1f3a)")
        );
        let c = ProviderError::Conflict("Load balancer b-x kept changing".into());
        assert_eq!(c.summary(), "Conflict: Load balancer b-x kept changing");
        assert_eq!(c.detail(), None);

        let huge = ProviderError::transient(format!("Failed: {}", "é".repeat(1_000_000)));
        let text = huge.to_string();
        assert!(text.len() <= MAX_DISPLAY_BYTES, "{} bytes", text.len());
        assert!(text.ends_with('…'));
        assert_eq!(huge.summary(), "Failed");
        let no_head = ProviderError::Permanent("x".repeat(10_000));
        assert!(no_head.summary().len() <= MAX_SUMMARY_BYTES);
    }
}

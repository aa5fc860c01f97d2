//! What can go wrong when a provider programs a load balancer.

use std::time::Duration;

/// A provider's failure, classified by what the controller should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The Service asks for something this provider cannot serve. Permanent: the user must
    /// fix the Service (a Warning event names `field` and the accepted values); no retry.
    #[error("Invalid {field}: {message}")]
    Invalid {
        /// The offending field, e.g. `spec.ports[1].protocol`.
        field: String,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// Worth retrying with backoff, waiting at least `retry_after` when set.
    #[error("{message}")]
    Transient {
        /// What failed.
        message: String,
        /// The least wait the backend asked for (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Someone else changed or holds the load balancer; retry after re-reading.
    #[error("Conflict: {0}")]
    Conflict(String),
    /// Retrying will not help until the configuration or the backend changes.
    #[error("{0}")]
    Permanent(String),
}

impl ProviderError {
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
        assert_eq!(
            e.to_string(),
            "Invalid spec.ports[0].protocol: SCTP is not supported"
        );
    }
}

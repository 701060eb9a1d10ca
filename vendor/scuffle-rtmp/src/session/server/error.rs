//! Error type for server sessions.

/// Errors that can occur during a server session.
#[derive(Debug, thiserror::Error)]
pub enum ServerSessionError {
    /// Timeout.
    #[error("timeout: {0}")]
    Timeout(#[from] tokio::time::error::Elapsed),
    /// Shoal patch: a read of the main stage found no data for this long (upstream
    /// reported it as `Timeout`).
    #[error("no data for {0:?}")]
    ReadTimeout(std::time::Duration),
    /// Received publish command before connect command.
    #[error("received publish command before connect command")]
    PublishBeforeConnect,
    /// Play not supported.
    #[error("play not supported")]
    PlayNotSupported,
    /// Invalid chunk size.
    #[error("invalid chunk size: {0}")]
    InvalidChunkSize(usize),
}

//! Retries and the one mapping of failures into `StorageError`: by object_store's variant
//! first, then by the I/O error underneath. Retry logic reads `is_retryable`, never a
//! message.
use super::{StorageError, Store};

impl Store {
    pub(super) async fn retrying<T, F, Fut>(&self, key: &str, mut op: F) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        self.retry_loop(key, || {
            let fut = op();
            async move { fut.await.map_err(|e| classify(&self.display, key, e)) }
        })
        .await
    }

    pub(super) async fn retry_loop<T, F, Fut>(
        &self,
        key: &str,
        mut op: F,
    ) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StorageError>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(err) => {
                    if !err.is_retryable() || attempt >= self.retry.attempts {
                        return Err(err);
                    }
                    let pause = self.retry.first_backoff * 2u32.pow(attempt - 1);
                    tracing::warn!(%err, key, attempt, ?pause, "storage operation failed; retrying");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
            }
        }
    }
}

pub(super) fn classify_io(url: &str, key: &str, e: &std::io::Error) -> StorageError {
    let (url, key) = (url.to_string(), key.to_string());
    match e.kind() {
        std::io::ErrorKind::NotFound => StorageError::NotFound { url, key },
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            StorageError::Full { url, key }
        }
        std::io::ErrorKind::ConnectionRefused
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::NotConnected
        | std::io::ErrorKind::TimedOut
        | std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::Interrupted => StorageError::Unreachable {
            url,
            key,
            detail: e.to_string(),
        },
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            StorageError::Denied {
                url,
                key,
                detail: e.to_string(),
            }
        }
        _ => StorageError::Other {
            url,
            key,
            detail: e.to_string(),
        },
    }
}

/// Map object_store's error into ours: by variant first, then by the I/O error underneath.
pub(super) fn classify(url: &str, key: &str, e: object_store::Error) -> StorageError {
    use object_store::Error as E;
    let (u, k) = (url.to_string(), key.to_string());
    match e {
        E::NotFound { .. } => StorageError::NotFound { url: u, key: k },
        E::AlreadyExists { .. } | E::Precondition { .. } => {
            StorageError::AlreadyExists { url: u, key: k }
        }
        E::PermissionDenied { source, .. } | E::Unauthenticated { source, .. } => {
            StorageError::Denied {
                url: u,
                key: k,
                detail: source.to_string(),
            }
        }
        other => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&other);
            while let Some(err) = source {
                if let Some(io) = err.downcast_ref::<std::io::Error>() {
                    return classify_io(url, key, io);
                }
                source = err.source();
            }
            let detail = error_chain(&other);
            if is_local_error(&other) {
                StorageError::Other {
                    url: u,
                    key: k,
                    detail,
                }
            } else {
                StorageError::Unreachable {
                    url: u,
                    key: k,
                    detail,
                }
            }
        }
    }
}

fn is_local_error(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::Generic { store, .. } if *store == "LocalFileSystem")
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

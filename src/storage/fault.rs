//! A fault-injecting wrapper around a real `ObjectStore`, for the cases that a real server
//! cannot be made to produce on demand (a dropped connection on the third request).

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// What the wrapper does to the calls that pass through it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Pass every call through.
    None,
    /// Fail the next `n` calls with a connection-reset error, then recover.
    TransientErrors(u32),
    /// Let `n` more writes through, then fail every write with "no space left on device"
    /// (reads and deletes still work, as on a full disk).
    DiskFullAfter(u32),
    /// Refuse every delete with "access denied", as S3 does for credentials without
    /// `s3:DeleteObject` (reads and writes still work).
    DenyDeletes,
    /// Carry out the next `n` writes, then answer each with a connection reset, as when the
    /// object is stored and the reply is lost on the way back.
    LoseReplies(u32),
    /// Refuse every write and delete with "access denied": read-only credentials.
    ReadOnly,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
    Delete,
}

/// Wraps a real store; faults are switched on and off while it is in use.
#[derive(Clone)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    fault: Arc<Mutex<Fault>>,
    calls: Arc<AtomicU64>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            fault: Arc::new(Mutex::new(Fault::None)),
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn inject(&self, fault: Fault) {
        *self.fault.lock().expect("fault lock") = fault;
        self.calls.store(0, Ordering::SeqCst);
    }

    /// Calls seen since the last `inject`.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn before(&self, op: Op) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut fault = self.fault.lock().expect("fault lock");
        let kind = match &mut *fault {
            Fault::None => return Ok(()),
            Fault::TransientErrors(0) => return Ok(()),
            Fault::TransientErrors(n) => {
                *n -= 1;
                std::io::ErrorKind::ConnectionReset
            }
            Fault::DiskFullAfter(_) if op != Op::Write => return Ok(()),
            Fault::DiskFullAfter(n) if *n > 0 => {
                *n -= 1;
                return Ok(());
            }
            Fault::DiskFullAfter(_) => std::io::ErrorKind::StorageFull,
            Fault::DenyDeletes if op != Op::Delete => return Ok(()),
            Fault::DenyDeletes => {
                return Err(object_store::Error::PermissionDenied {
                    path: String::new(),
                    source: "AccessDenied: injected fault".into(),
                });
            }
            Fault::ReadOnly if op == Op::Read => return Ok(()),
            Fault::ReadOnly => {
                return Err(object_store::Error::PermissionDenied {
                    path: String::new(),
                    source: "AccessDenied: read-only credentials (injected fault)".into(),
                });
            }
            // Handled after the call (`after`).
            Fault::LoseReplies(_) => return Ok(()),
        };
        Err(object_store::Error::Generic {
            store: "faulty",
            source: Box::new(std::io::Error::new(kind, "injected fault")),
        })
    }
}

impl FaultyStore {
    /// After a call has been carried out: lose its reply if that fault is on.
    fn after<T>(&self, op: Op, result: Result<T>) -> Result<T> {
        if op != Op::Write || result.is_err() {
            return result;
        }
        let mut fault = self.fault.lock().expect("fault lock");
        match &mut *fault {
            Fault::LoseReplies(n) if *n > 0 => {
                *n -= 1;
                Err(object_store::Error::Generic {
                    store: "faulty",
                    source: Box::new(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "injected fault: the reply was lost after the write was stored",
                    )),
                })
            }
            _ => result,
        }
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.before(Op::Write)?;
        let r = self.inner.put_opts(location, payload, opts).await;
        self.after(Op::Write, r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.before(Op::Write)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.before(Op::Read)?;
        self.inner.get_opts(location, options).await
    }

    async fn get_range(&self, location: &Path, range: Range<u64>) -> Result<Bytes> {
        self.before(Op::Read)?;
        self.inner.get_range(location, range).await
    }

    async fn head(&self, location: &Path) -> Result<ObjectMeta> {
        self.before(Op::Read)?;
        self.inner.head(location).await
    }

    async fn delete(&self, location: &Path) -> Result<()> {
        self.before(Op::Delete)?;
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        match self.before(Op::Read) {
            Ok(()) => self.inner.list(prefix),
            Err(e) => Box::pin(futures::stream::once(async move { Err(e) })),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.before(Op::Read)?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        self.before(Op::Write)?;
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> Result<()> {
        self.before(Op::Write)?;
        self.inner.copy_if_not_exists(from, to).await
    }
}

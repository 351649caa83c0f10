//! The HTTP and WebSocket API: one implementation, started inside the BEAM (`barrel:start_http/1`)
//! or by the standalone `barreld` binary.
//!
//! Routes are listed in README.md ("HTTP routes"). A barrel is served twice over: Barrel's own
//! surface (`/barrels/:name/docs/:id`, documents with `id`) and a CouchDB-compatible database
//! surface at the barrel's URL (`/barrels/:name/:docid`, `_changes`, `_revs_diff`, `_bulk_docs`,
//! `_bulk_get`, `_local/`, `_all_docs`, documents with `_id`) so CouchDB replication clients such
//! as PouchDB work against `http://host:port/barrels/:name`.
//!
//! The server runs on its own tokio runtime; engine calls run on its blocking pool. It never
//! holds the store between requests (a provider hands it out per request), so stopping the
//! application is not held up by idle connections.

mod attachments;
mod feed;
mod http;
pub(crate) mod multipart;
mod stream;
mod ws;

use crate::error::{Error, Result};
use crate::store::Store;
use axum::Router;
use axum_server::accept::NoDelayAcceptor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body accepted by default (64 MiB); bigger ones get 413.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024 * 1024;

pub use crate::attachment::DEFAULT_MAX_ATTACHMENT_SIZE;

/// Who may call the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    /// `(user, password)` pairs accepted with HTTP basic authentication.
    pub basic: Vec<(String, String)>,
    /// Tokens accepted as `Authorization: Bearer <token>`.
    pub bearer: Vec<String>,
}

impl Auth {
    /// `true` when some credential is configured.
    pub fn is_enabled(&self) -> bool {
        !self.basic.is_empty() || !self.bearer.is_empty()
    }
}

/// Which browser origins may call the server (CORS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cors {
    /// Any origin (`*`).
    Any,
    /// These origins only.
    Origins(Vec<String>),
}

/// How to run a server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to bind; port 0 picks a free port (see [`ServerHandle::addr`]).
    pub addr: SocketAddr,
    /// Credentials; required when `addr` is not a loopback address.
    pub auth: Auth,
    /// PEM certificate chain and private key: serve https/wss instead of http/ws.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// CORS policy (none: no CORS headers).
    pub cors: Option<Cors>,
    /// Largest request body, in bytes (attachment uploads excepted).
    pub max_body: usize,
    /// Largest attachment accepted by `PUT …/:docid/:attname` and in multipart document
    /// writes, in bytes; those bodies are streamed to storage, never held whole.
    pub max_attachment_size: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 7080)),
            auth: Auth::default(),
            tls: None,
            cors: None,
            max_body: DEFAULT_MAX_BODY,
            max_attachment_size: DEFAULT_MAX_ATTACHMENT_SIZE,
        }
    }
}

/// Hands the server the store for one request (`Err(Closed)` once it is gone).
pub type StoreSource = Arc<dyn Fn() -> Result<Arc<Store>> + Send + Sync>;

/// State shared by every request.
pub(crate) struct App {
    pub stores: StoreSource,
    pub auth: Auth,
    /// [`ServerConfig::max_body`].
    pub max_body: usize,
    /// [`ServerConfig::max_attachment_size`].
    pub max_attachment_size: u64,
}

impl App {
    pub fn store(&self) -> Result<Arc<Store>> {
        (self.stores)()
    }
}

/// A running server.
pub struct ServerHandle {
    addr: SocketAddr,
    tls: bool,
    handle: axum_server::Handle,
    task: Option<tokio::task::JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ServerHandle {
    /// The address the server listens on (with the actual port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `true` when serving https/wss.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Stops accepting, gives open requests up to a second to finish (long-lived feeds are
    /// then cut), and closes everything.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.handle.graceful_shutdown(Some(Duration::from_secs(1)));
        if let Some(rt) = self.runtime.take() {
            // Let open requests finish (the graceful period), then drop what is left.
            if let Some(task) = self.task.take() {
                rt.block_on(async {
                    let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
                });
            }
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts a server for the store `stores` hands out. Fails with [`Error::BadParam`] when the
/// address is not a loopback one and no authentication is configured, or the TLS files cannot
/// be read, and with [`Error::Storage`] when the address cannot be bound.
pub fn start(stores: StoreSource, cfg: ServerConfig) -> Result<ServerHandle> {
    if !cfg.addr.ip().is_loopback() && !cfg.auth.is_enabled() {
        return Err(Error::BadParam(format!(
            "binding {} (not a loopback address) requires authentication (basic users or \
             bearer tokens)",
            cfg.addr.ip()
        )));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("barrel-http")
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the HTTP runtime: {e}")))?;
    let app = Arc::new(App {
        stores,
        auth: cfg.auth.clone(),
        max_body: cfg.max_body,
        max_attachment_size: cfg.max_attachment_size,
    });
    let router: Router = http::router(app, &cfg);
    let handle = axum_server::Handle::new();
    let listener = std::net::TcpListener::bind(cfg.addr)
        .map_err(|e| Error::Storage(format!("cannot listen on {}: {e}", cfg.addr)))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let service = router.into_make_service();
    let tls = cfg.tls.is_some();
    let task = match &cfg.tls {
        Some((cert, key)) => {
            // One process-wide crypto provider (ring); installing it twice is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = runtime.block_on(async {
                axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key).await
            });
            let config = config.map_err(|e| {
                Error::BadParam(format!(
                    "cannot load the TLS certificate {} and key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
            // Responses go out as soon as written (TCP_NODELAY, both arms): with Nagle's
            // algorithm, a response written in pieces waited for the client's delayed
            // acknowledgement, tens of milliseconds.
            let server = axum_server::from_tcp_rustls(listener, config)
                .map(|tls| tls.acceptor(NoDelayAcceptor::new()))
                .handle(handle.clone());
            runtime.spawn(async move {
                let _ = server.serve(service).await;
            })
        }
        None => {
            let server = axum_server::from_tcp(listener)
                .acceptor(NoDelayAcceptor::new())
                .handle(handle.clone());
            runtime.spawn(async move {
                let _ = server.serve(service).await;
            })
        }
    };
    Ok(ServerHandle {
        addr,
        tls,
        handle,
        task: Some(task),
        runtime: Some(runtime),
    })
}

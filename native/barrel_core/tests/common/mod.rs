//! What the HTTP test suites share: a server on 127.0.0.1 (an ephemeral port) over a store in
//! a temporary directory, stopped when dropped.

use barrel_core::server::{self, ServerConfig, ServerHandle};
use barrel_core::{Store, StoreOptions};
use std::net::SocketAddr;
use std::sync::Arc;

pub struct Server {
    _dir: tempfile::TempDir,
    _store: Arc<Store>,
    handle: Option<ServerHandle>,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stop();
        }
    }
}

pub fn start_with(cfg: impl FnOnce(&mut ServerConfig)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let shared = store.clone();
    let mut c = ServerConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Default::default()
    };
    cfg(&mut c);
    let handle = server::start(Arc::new(move || Ok(shared.clone())), c).unwrap();
    let base = format!("http://{}", handle.addr());
    Server {
        _dir: dir,
        _store: store,
        handle: Some(handle),
        base,
    }
}

#[allow(dead_code)]
pub fn start() -> Server {
    start_with(|_| {})
}

//! `barreld`: Barrel's standalone server. It opens a data directory (the same store layout the
//! BEAM application uses) and serves it over HTTP and WebSocket until SIGINT or SIGTERM.
//!
//! ```text
//! cargo run --release -p barreld -- --data-dir /var/lib/barrel --port 7080
//! ```

use barrel_core::server::{
    self, Auth, Cors, ServerConfig, DEFAULT_MAX_ATTACHMENT_SIZE, DEFAULT_MAX_BODY,
};
use barrel_core::{Store, StoreOptions};
use clap::Parser;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

/// Barrel's standalone server: the document database over HTTP and WebSocket.
///
/// Binds 127.0.0.1 unless told otherwise; any other address requires credentials
/// (--basic-auth or --token). Routes are listed in the README ("HTTP routes").
#[derive(Parser, Debug)]
#[command(name = "barreld", version)]
struct Args {
    /// Directory of the store (created when missing).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Port to listen on (0 picks a free one; the address is printed on start).
    #[arg(long, default_value_t = 7080)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Accept HTTP basic authentication as USER:PASSWORD (repeatable).
    #[arg(long = "basic-auth", value_name = "USER:PASSWORD")]
    basic_auth: Vec<String>,
    /// Accept `Authorization: Bearer TOKEN` (repeatable).
    #[arg(long = "token", value_name = "TOKEN")]
    tokens: Vec<String>,
    /// PEM certificate chain: serve https/wss (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Allow browser requests from this origin (repeatable; `*` for any).
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,
    /// Largest request body in bytes (larger ones get 413).
    #[arg(long, default_value_t = DEFAULT_MAX_BODY)]
    max_body_bytes: usize,
    /// Largest attachment upload in bytes (larger ones get 413); uploads are streamed.
    #[arg(long, default_value_t = DEFAULT_MAX_ATTACHMENT_SIZE)]
    max_attachment_bytes: u64,
    /// RocksDB block cache in bytes.
    #[arg(long, default_value_t = 128 * 1024 * 1024)]
    block_cache_bytes: usize,
}

fn config(args: &Args) -> Result<ServerConfig, String> {
    let mut auth = Auth::default();
    for b in &args.basic_auth {
        let (u, p) = b
            .split_once(':')
            .ok_or_else(|| format!("--basic-auth wants USER:PASSWORD, got {b:?}"))?;
        auth.basic.push((u.to_string(), p.to_string()));
    }
    auth.bearer = args.tokens.clone();
    let cors = if args.cors_origins.is_empty() {
        None
    } else if args.cors_origins.iter().any(|o| o == "*") {
        Some(Cors::Any)
    } else {
        Some(Cors::Origins(args.cors_origins.clone()))
    };
    Ok(ServerConfig {
        addr: SocketAddr::new(args.bind, args.port),
        auth,
        tls: args.tls_cert.clone().zip(args.tls_key.clone()),
        cors,
        max_body: args.max_body_bytes,
        max_attachment_size: args.max_attachment_bytes,
    })
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("barreld: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let cfg = config(args)?;
    let options = StoreOptions {
        block_cache_bytes: args.block_cache_bytes,
        ..StoreOptions::default()
    };
    let store = Store::open(&args.data_dir, &options).map_err(|e| e.to_string())?;
    let shared = store.clone();
    let handle =
        server::start(Arc::new(move || Ok(shared.clone())), cfg).map_err(|e| e.to_string())?;
    let scheme = if handle.is_tls() { "https" } else { "http" };
    println!("barreld listening on {scheme}://{}", handle.addr());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<(), String>(())
    })?;
    handle.stop();
    store.close();
    if let Err(e) = store.flush_for_close() {
        eprintln!("barreld: flushing the store as it closes: {e}");
    }
    drop(store);
    Ok(())
}

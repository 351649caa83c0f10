//! The HTTP server inside the BEAM: `http_start/7` starts one over the node's store and returns
//! a resource; `http_stop/1` stops it (as does the resource being collected). Option checking
//! lives in `barrel_http.erl`.

use crate::error;
use crate::guarded;
use crate::store::current_store;
use barrel_core::server::{self, Auth, Cors, ServerConfig, ServerHandle};
use barrel_core::Error;
use parking_lot::Mutex;
use rustler::{Atom, Encoder, Env, Resource, ResourceArc, Term};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

mod atoms {
    rustler::atoms! { ok, any, none, undefined }
}

/// A running server; stopped when the BEAM collects the handle.
pub(crate) struct HttpRef {
    server: Mutex<Option<ServerHandle>>,
}

#[rustler::resource_impl]
impl Resource for HttpRef {}

/// `{ok, Server, Port} | {error, Reason}`. `Tls` is `undefined` or `{CertFile, KeyFile}`;
/// `Cors` is `none`, `any` or a list of origins; `MaxAttachment` limits attachment uploads.
#[rustler::nif(schedule = "DirtyIo")]
#[allow(clippy::too_many_arguments)]
fn http_start<'a>(
    env: Env<'a>,
    ip: String,
    port: u16,
    basic: Vec<(String, String)>,
    tokens: Vec<String>,
    tls: Term<'a>,
    cors: Term<'a>,
    max_body: usize,
    max_attachment: u64,
) -> Term<'a> {
    guarded(env, || {
        let run = || -> Result<ServerHandle, Error> {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| Error::BadParam(format!("bad ip {ip:?}")))?;
            let tls = if tls.decode::<Atom>().ok() == Some(atoms::undefined()) {
                None
            } else {
                let (c, k): (String, String) = tls
                    .decode()
                    .map_err(|_| Error::BadParam("tls must be {CertFile, KeyFile}".into()))?;
                Some((c.into(), k.into()))
            };
            let cors = match cors.decode::<Atom>() {
                Ok(a) if a == atoms::none() => None,
                Ok(a) if a == atoms::any() => Some(Cors::Any),
                _ => Some(Cors::Origins(cors.decode::<Vec<String>>().map_err(
                    |_| Error::BadParam("cors must be none, any or a list of origins".into()),
                )?)),
            };
            let cfg = ServerConfig {
                addr: SocketAddr::new(ip, port),
                auth: Auth {
                    basic,
                    bearer: tokens,
                },
                tls,
                cors,
                max_body,
                max_attachment_size: max_attachment,
            };
            server::start(Arc::new(current_store), cfg)
        };
        match run() {
            Ok(handle) => {
                let port = handle.addr().port();
                let res = ResourceArc::new(HttpRef {
                    server: Mutex::new(Some(handle)),
                });
                (atoms::ok(), res, port).encode(env)
            }
            Err(e) => error::encode(env, &e),
        }
    })
}

/// `ok`: stops the server (open requests get a second to finish).
#[rustler::nif(schedule = "DirtyIo")]
fn http_stop(env: Env, server: ResourceArc<HttpRef>) -> Term {
    guarded(env, || {
        let taken = server.server.lock().take();
        if let Some(h) = taken {
            h.stop();
        }
        atoms::ok().encode(env)
    })
}

//! The two sides of a replication: a local barrel (through the engine, no HTTP), a remote barrel
//! or CouchDB/PouchDB-server database over HTTP, or a remote barrel over Barrel's WebSocket
//! stream. Documents travel CouchDB-shaped (`_id`, `_rev`, `_revisions`, `_deleted`).

use crate::barrel::{Barrel, OpenRev, OpenRevs, SaveOptions};
use crate::changes::{ChangeSink, ChangesOptions, Pattern, SubscribeOptions, Subscription};
use crate::doc::{Body, DocInput};
use crate::error::{Error, Result};
use crate::revtree::Rev;
use serde_json::{json, Map, Value};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// One document's leaf revisions in a changes batch.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangedDoc {
    /// Document id.
    pub id: String,
    /// Sequence of its change on the source.
    pub seq: u64,
    /// Every leaf revision.
    pub revs: Vec<Rev>,
}

/// What a replication reads from and writes to.
pub trait Endpoint: Send {
    /// A stable description (used in the replication id and in messages).
    fn describe(&self) -> String;
    /// Up to `limit` changed documents after `since`, and the sequence to continue from.
    fn changes(
        &mut self,
        since: u64,
        limit: usize,
        filter: &[Pattern],
    ) -> Result<(Vec<ChangedDoc>, u64)>;
    /// Blocks until there may be changes after `since`, at most `timeout`.
    fn wait_changes(&mut self, since: u64, timeout: Duration) -> Result<()>;
    /// Of these revisions, which are missing here.
    fn revs_diff(&mut self, asked: &[(String, Vec<Rev>)]) -> Result<Vec<(String, Vec<Rev>)>>;
    /// These revisions with their history (`_revisions`), CouchDB-shaped.
    fn fetch(&mut self, wanted: &[(String, Vec<Rev>)]) -> Result<Vec<Value>>;
    /// Stores replicated revisions as given (`new_edits: false`).
    fn save(&mut self, docs: Vec<Value>) -> Result<()>;
    /// A local (checkpoint) document.
    fn get_local(&mut self, id: &str) -> Result<Option<Value>>;
    /// Writes a local (checkpoint) document.
    fn put_local(&mut self, id: &str, doc: Value) -> Result<()>;
    /// Checks the other side is there (creating it with `create`); called before each pass.
    fn prepare(&mut self, _create: bool) -> Result<()> {
        Ok(())
    }
}

/// An engine document as CouchDB shows it (`id` becomes `_id`).
pub fn to_couch(mut doc: Body) -> Value {
    if let Some(id) = doc.remove("id") {
        doc.insert("_id".into(), id);
    }
    Value::Object(doc)
}

/// A CouchDB-shaped document as the engine takes it (`_id` becomes `id`).
pub fn from_couch(mut doc: Map<String, Value>) -> Result<DocInput> {
    if let Some(id) = doc.remove("_id") {
        if doc.get("id").is_some_and(|other| *other != id) {
            return Err(Error::BadParam(
                "a document with both _id and a different id cannot be stored".into(),
            ));
        }
        doc.insert("id".into(), id);
    }
    // Attachments are not replicated yet: their stubs would be refused.
    doc.remove("_attachments");
    Ok(DocInput::from_map(doc)?)
}

/// Wakes a waiting replication when the local source commits.
#[derive(Default)]
struct Wake {
    changed: Mutex<bool>,
    cond: Condvar,
}

struct WakeSink(Arc<Wake>);

impl ChangeSink for WakeSink {
    fn deliver(&self, _changes: Vec<crate::changes::Change>) -> bool {
        self.poke();
        true
    }
    fn fell_behind(&self) -> bool {
        self.poke();
        true
    }
}

impl WakeSink {
    fn poke(&self) {
        if let Ok(mut c) = self.0.changed.lock() {
            *c = true;
            self.0.cond.notify_all();
        }
    }
}

/// A barrel of this node.
pub struct LocalEndpoint {
    barrel: Barrel,
    live: Option<(Arc<Subscription>, Arc<Wake>)>,
}

impl LocalEndpoint {
    /// The endpoint of `barrel`.
    pub fn new(barrel: Barrel) -> LocalEndpoint {
        LocalEndpoint { barrel, live: None }
    }
}

impl Drop for LocalEndpoint {
    fn drop(&mut self) {
        if let Some((sub, _)) = &self.live {
            sub.cancel();
        }
    }
}

impl Endpoint for LocalEndpoint {
    fn describe(&self) -> String {
        format!("local:{}", self.barrel.name())
    }

    fn changes(
        &mut self,
        since: u64,
        limit: usize,
        filter: &[Pattern],
    ) -> Result<(Vec<ChangedDoc>, u64)> {
        let opts = ChangesOptions {
            all_docs: true,
            filter: filter.to_vec(),
            ..Default::default()
        };
        let mut cursor = self.barrel.changes_cursor(since, opts)?;
        let chunk = cursor.next_chunk(limit)?;
        let last = if chunk.len() < limit {
            cursor.update_seq().max(since)
        } else {
            chunk.last().map_or(since, |c| c.seq)
        };
        let docs = chunk
            .into_iter()
            .map(|c| ChangedDoc {
                id: c.id,
                seq: c.seq,
                revs: c.changes,
            })
            .collect();
        Ok((docs, last))
    }

    fn wait_changes(&mut self, since: u64, timeout: Duration) -> Result<()> {
        if self.live.is_none() {
            let wake = Arc::new(Wake::default());
            let sub = self.barrel.subscribe(
                SubscribeOptions {
                    window: usize::MAX / 2,
                    ..Default::default()
                },
                Box::new(WakeSink(wake.clone())),
            )?;
            self.live = Some((sub, wake));
        }
        if self.barrel.info()?.stats.updated_seq > since {
            return Ok(());
        }
        if let Some((sub, wake)) = &self.live {
            let guard = wake
                .changed
                .lock()
                .map_err(|_| Error::Internal("poisoned".into()))?;
            let (mut changed, _) = wake
                .cond
                .wait_timeout_while(guard, timeout, |c| !*c)
                .map_err(|_| Error::Internal("poisoned".into()))?;
            *changed = false;
            sub.ack(usize::MAX / 4);
            sub.resume();
        }
        Ok(())
    }

    fn revs_diff(&mut self, asked: &[(String, Vec<Rev>)]) -> Result<Vec<(String, Vec<Rev>)>> {
        let mut out = Vec::new();
        for (id, revs) in asked {
            let d = self.barrel.revs_diff(id, revs)?;
            if !d.missing.is_empty() {
                out.push((id.clone(), d.missing));
            }
        }
        Ok(out)
    }

    fn fetch(&mut self, wanted: &[(String, Vec<Rev>)]) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for (id, revs) in wanted {
            let list = match self.barrel.fetch_open_revs_latest(
                id,
                &OpenRevs::Revs(revs.clone()),
                true,
                true,
            ) {
                Ok(l) => l,
                Err(Error::NotFound) => continue,
                Err(e) => return Err(e),
            };
            for r in list {
                if let OpenRev::Ok(doc) = r {
                    out.push(to_couch(doc));
                }
            }
        }
        Ok(out)
    }

    fn save(&mut self, docs: Vec<Value>) -> Result<()> {
        let inputs = docs
            .into_iter()
            .map(|d| match d {
                Value::Object(m) => from_couch(m),
                _ => Err(Error::BadParam(
                    "a replicated document is not an object".into(),
                )),
            })
            .collect();
        let results = self
            .barrel
            .save_docs(inputs, &SaveOptions { new_edits: false })?;
        if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
            return Err(e);
        }
        Ok(())
    }

    fn get_local(&mut self, id: &str) -> Result<Option<Value>> {
        match self.barrel.get_local(id) {
            Ok(b) => Ok(Some(Value::Object(b))),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn put_local(&mut self, id: &str, doc: Value) -> Result<()> {
        let Value::Object(m) = doc else {
            return Err(Error::BadParam("a local document is an object".into()));
        };
        self.barrel.put_local(id, m).map(|_| ())
    }
}

/// A remote database over CouchDB's HTTP replication protocol: a barrel
/// (`http://host:port/barrels/name`) or any CouchDB-compatible database URL, over http or
/// https (Mozilla's root certificates, or the CA given with [`HttpEndpoint::with_ca`]).
pub struct HttpEndpoint {
    base: String,
    agent: ureq3::Agent,
    auth: Option<String>,
}

fn remote(e: impl std::fmt::Display) -> Error {
    Error::Storage(format!("remote: {e}"))
}

/// Installs the process's TLS crypto provider (ring, as the server uses) once.
pub(crate) fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The certificates of a PEM file, for a private certificate authority.
fn pem_certs(pem: &[u8]) -> Result<Vec<ureq3::tls::Certificate<'static>>> {
    let certs: Vec<_> = ureq3::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(ureq3::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(Error::BadParam("no certificate in the CA file".into()));
    }
    Ok(certs)
}

fn http_agent(ca: Option<&[u8]>) -> Result<ureq3::Agent> {
    use ureq3::tls::{RootCerts, TlsConfig};
    tls_provider();
    let roots = match ca {
        Some(pem) => RootCerts::new_with_certs(&pem_certs(pem)?),
        None => RootCerts::WebPki,
    };
    let config = ureq3::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_global(Some(Duration::from_secs(120)))
        .http_status_as_error(false)
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .build();
    Ok(ureq3::Agent::new_with_config(config))
}

impl HttpEndpoint {
    /// The database at `url` (no trailing slash needed); `auth` is an `Authorization` header
    /// value.
    pub fn new(url: &str, auth: Option<String>) -> HttpEndpoint {
        let agent = http_agent(None).unwrap_or_else(|_| ureq3::Agent::new_with_defaults());
        HttpEndpoint {
            base: url.trim_end_matches('/').to_string(),
            agent,
            auth,
        }
    }

    /// Trusts the certificate authority in `pem` (a PEM file's bytes) for https, instead of
    /// the public roots.
    pub fn with_ca(mut self, pem: &[u8]) -> Result<HttpEndpoint> {
        self.agent = http_agent(Some(pem))?;
        Ok(self)
    }

    fn json(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let url = format!("{}{}", self.base, path);
        let auth = self.auth.as_deref();
        macro_rules! send {
            ($builder:expr) => {{
                let b = $builder;
                let b = match auth {
                    Some(a) => b.header("Authorization", a),
                    None => b,
                };
                b
            }};
        }
        let resp = match (method, body) {
            ("GET", _) => send!(self.agent.get(&url)).call(),
            ("DELETE", _) => send!(self.agent.delete(&url)).call(),
            ("PUT", Some(b)) => send!(self.agent.put(&url)).send_json(b),
            ("PUT", None) => send!(self.agent.put(&url)).send_empty(),
            ("POST", Some(b)) => send!(self.agent.post(&url)).send_json(b),
            ("POST", None) => send!(self.agent.post(&url)).send_empty(),
            (m, _) => return Err(Error::Internal(format!("unsupported method {m}"))),
        };
        let mut resp = resp.map_err(|e| remote(format!("{method} {url}: {e}")))?;
        let status = resp.status().as_u16();
        let v = resp.body_mut().read_json::<Value>().unwrap_or(Value::Null);
        Ok((status, v))
    }

    fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, v) = self.json(method, path, body)?;
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            Err(remote(format!(
                "{method} {}{path}: {status} {v}",
                self.base
            )))
        }
    }

    /// The winning revision of document `id` with its history, Barrel-shaped (`id`), or
    /// `None` when the remote does not have it (or it is deleted).
    pub fn fetch_doc(&mut self, id: &str) -> Result<Option<Value>> {
        let path = format!(
            "/{}?revs=true",
            form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
        );
        let (status, v) = self.json("GET", &path, None)?;
        match status {
            200..=299 => Ok(Some(match v {
                Value::Object(mut m) => {
                    if let Some(i) = m.remove("_id") {
                        m.insert("id".into(), i);
                    }
                    Value::Object(m)
                }
                other => other,
            })),
            404 => Ok(None),
            s => Err(remote(format!("GET {}{path}: {s} {v}", self.base))),
        }
    }

    /// Fails unless the database answers (a replication source must exist).
    pub fn check_exists(&self) -> Result<()> {
        let (status, v) = self.json("GET", "/", None)?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(remote(format!("GET {}: {status} {v}", self.base)))
        }
    }

    /// Creates the database when it does not exist.
    pub fn ensure_exists(&self) -> Result<()> {
        let (status, _) = self.json("GET", "/", None)?;
        match status {
            200..=299 => Ok(()),
            404 => {
                let (s, v) = self.json("PUT", "/", None)?;
                if (200..300).contains(&s) || s == 412 {
                    Ok(())
                } else {
                    Err(remote(format!("cannot create {}: {s} {v}", self.base)))
                }
            }
            s => Err(remote(format!("GET {}: {s}", self.base))),
        }
    }
}

fn seq_of(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => s
            .split('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

fn revs_json(revs: &[Rev]) -> Value {
    Value::Array(revs.iter().map(|r| Value::String(r.to_string())).collect())
}

/// A `revs_diff` request: `{"docid": [rev, ...]}`.
fn revs_request(asked: &[(String, Vec<Rev>)]) -> Map<String, Value> {
    asked
        .iter()
        .map(|(id, r)| (id.clone(), revs_json(r)))
        .collect()
}

fn parse_revs(v: &Value) -> Vec<Rev> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().and_then(|s| Rev::parse(s).ok()))
                .collect()
        })
        .unwrap_or_default()
}

fn changed_docs(results: &Value) -> Vec<ChangedDoc> {
    results
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| {
                    let id = r.get("id")?.as_str()?.to_string();
                    let revs = r
                        .get("changes")?
                        .as_array()?
                        .iter()
                        .filter_map(|c| c.get("rev")?.as_str().and_then(|s| Rev::parse(s).ok()))
                        .collect();
                    Some(ChangedDoc {
                        id,
                        seq: seq_of(r.get("seq").unwrap_or(&Value::Null)),
                        revs,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn filter_query(filter: &[Pattern]) -> String {
    filter
        .iter()
        .map(|p| {
            format!(
                "&path={}",
                form_urlencoded::byte_serialize(p.as_str().as_bytes()).collect::<String>()
            )
        })
        .collect()
}

fn missing_of(v: &Value) -> Vec<(String, Vec<Rev>)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(id, e)| {
                    (
                        id.clone(),
                        parse_revs(e.get("missing").unwrap_or(&Value::Null)),
                    )
                })
                .filter(|(_, r)| !r.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn bulk_get_docs(v: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for r in v
        .get("results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for d in r
            .get("docs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(doc) = d.get("ok") {
                out.push(doc.clone());
            }
        }
    }
    out
}

fn bulk_get_request(wanted: &[(String, Vec<Rev>)]) -> Value {
    let docs: Vec<Value> = wanted
        .iter()
        .flat_map(|(id, revs)| {
            revs.iter()
                .map(move |r| json!({"id": id, "rev": r.to_string()}))
        })
        .collect();
    json!({ "docs": docs })
}

fn save_errors(v: &Value) -> Result<()> {
    if let Some(e) = v
        .as_array()
        .and_then(|a| a.iter().find(|r| r.get("error").is_some()))
    {
        return Err(remote(format!("a revision was refused: {e}")));
    }
    Ok(())
}

impl Endpoint for HttpEndpoint {
    fn describe(&self) -> String {
        self.base.clone()
    }

    fn prepare(&mut self, create: bool) -> Result<()> {
        if create {
            self.ensure_exists()
        } else {
            self.check_exists()
        }
    }

    fn changes(
        &mut self,
        since: u64,
        limit: usize,
        filter: &[Pattern],
    ) -> Result<(Vec<ChangedDoc>, u64)> {
        let v = self.ok(
            "GET",
            &format!(
                "/_changes?style=all_docs&since={since}&limit={limit}{}",
                filter_query(filter)
            ),
            None,
        )?;
        let docs = changed_docs(v.get("results").unwrap_or(&Value::Null));
        let last = seq_of(v.get("last_seq").unwrap_or(&Value::Null)).max(since);
        Ok((docs, last))
    }

    fn wait_changes(&mut self, since: u64, timeout: Duration) -> Result<()> {
        let ms = timeout.as_millis().max(1);
        self.ok(
            "GET",
            &format!("/_changes?feed=longpoll&since={since}&limit=1&timeout={ms}"),
            None,
        )
        .map(|_| ())
    }

    fn revs_diff(&mut self, asked: &[(String, Vec<Rev>)]) -> Result<Vec<(String, Vec<Rev>)>> {
        let req = revs_request(asked);
        Ok(missing_of(&self.ok(
            "POST",
            "/_revs_diff",
            Some(&Value::Object(req)),
        )?))
    }

    fn fetch(&mut self, wanted: &[(String, Vec<Rev>)]) -> Result<Vec<Value>> {
        let v = self.ok(
            "POST",
            "/_bulk_get?revs=true&latest=true",
            Some(&bulk_get_request(wanted)),
        )?;
        Ok(bulk_get_docs(&v))
    }

    fn save(&mut self, docs: Vec<Value>) -> Result<()> {
        let v = self.ok(
            "POST",
            "/_bulk_docs",
            Some(&json!({"docs": docs, "new_edits": false})),
        )?;
        save_errors(&v)
    }

    fn get_local(&mut self, id: &str) -> Result<Option<Value>> {
        let (status, v) = self.json("GET", &format!("/_local/{id}"), None)?;
        match status {
            200..=299 => Ok(Some(v)),
            404 => Ok(None),
            s => Err(remote(format!("GET _local/{id}: {s} {v}"))),
        }
    }

    fn put_local(&mut self, id: &str, mut doc: Value) -> Result<()> {
        if let Some(prev) = self.get_local(id)? {
            if let Some(r) = prev.get("_rev") {
                doc["_rev"] = r.clone();
            }
        }
        self.ok("PUT", &format!("/_local/{id}"), Some(&doc))
            .map(|_| ())
    }
}

/// A remote barrel over Barrel's WebSocket stream (`ws://host:port/name`, as in the talk, or
/// the full `ws://host:port/barrels/name/_ws`).
/// A socket to a remote barrel's stream.
type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

pub struct WsEndpoint {
    url: String,
    auth: Option<String>,
    ca: Option<Vec<u8>>,
    socket: Option<Socket>,
    next_id: u64,
}

impl WsEndpoint {
    /// The barrel at `url` (`auth`: an `Authorization` header value); the connection opens on
    /// first use.
    pub fn new(url: &str, auth: Option<String>) -> WsEndpoint {
        WsEndpoint {
            url: ws_url(url),
            auth,
            ca: None,
            socket: None,
            next_id: 0,
        }
    }

    /// The same barrel over HTTP (`ws://h/barrels/n/_ws` → `http://h/barrels/n`), e.g. to
    /// create it.
    pub fn http(&self) -> Result<HttpEndpoint> {
        let base = self.url.trim_end_matches("/_ws");
        let base = base
            .strip_prefix("wss://")
            .map(|r| format!("https://{r}"))
            .or_else(|| base.strip_prefix("ws://").map(|r| format!("http://{r}")))
            .unwrap_or_else(|| base.to_string());
        let http = HttpEndpoint::new(&base, self.auth.clone());
        match &self.ca {
            Some(pem) => http.with_ca(pem),
            None => Ok(http),
        }
    }

    /// Trusts the certificate authority in `pem` for wss (and for the https calls made to
    /// create the barrel), instead of the public roots.
    pub fn with_ca(mut self, pem: &[u8]) -> Result<WsEndpoint> {
        pem_certs(pem)?;
        self.ca = Some(pem.to_vec());
        Ok(self)
    }

    fn connect(&self) -> Result<Socket> {
        use tungstenite::client::IntoClientRequest;
        let mut req = self.url.as_str().into_client_request().map_err(remote)?;
        if let Some(a) = &self.auth {
            let v = a.parse().map_err(|_| remote("bad authorization header"))?;
            req.headers_mut().insert("Authorization", v);
        }
        tls_provider();
        let connector = match &self.ca {
            Some(pem) if self.url.starts_with("wss://") => {
                let mut roots = rustls::RootCertStore::empty();
                for c in pem_certs(pem)? {
                    let der = rustls::pki_types::CertificateDer::from(c.der().to_vec());
                    roots.add(der).map_err(remote)?;
                }
                let config = rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(tungstenite::Connector::Rustls(Arc::new(config)))
            }
            _ => None,
        };
        let host = req.uri().host().unwrap_or_default().to_string();
        let port = req
            .uri()
            .port_u16()
            .unwrap_or(if self.url.starts_with("wss://") {
                443
            } else {
                80
            });
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let stream = std::net::TcpStream::connect((host, port)).map_err(remote)?;
        let (s, _) =
            tungstenite::client_tls_with_config(req, stream, None, connector).map_err(remote)?;
        Ok(s)
    }

    fn call(&mut self, mut req: Value) -> Result<Value> {
        if self.socket.is_none() {
            self.socket = Some(self.connect()?);
        }
        self.next_id += 1;
        let id = self.next_id;
        req["id"] = json!(id);
        let socket = self
            .socket
            .as_mut()
            .ok_or_else(|| remote("not connected"))?;
        let result = (|| {
            socket
                .send(tungstenite::Message::Text(req.to_string().into()))
                .map_err(remote)?;
            loop {
                let msg = socket.read().map_err(remote)?;
                let tungstenite::Message::Text(t) = msg else {
                    continue;
                };
                let v: Value = serde_json::from_str(t.as_str()).map_err(remote)?;
                if v.get("id") != Some(&json!(id)) {
                    continue;
                }
                if v.get("type").and_then(Value::as_str) == Some("error") {
                    return Err(remote(format!("{}: {}", v["error"], v["reason"])));
                }
                return Ok(v);
            }
        })();
        if result.is_err() {
            // Start over with a new connection next time.
            self.socket = None;
        }
        result
    }
}

/// `ws://host:port/name` → `ws://host:port/barrels/name/_ws`; full URLs are kept.
fn ws_url(url: &str) -> String {
    if url.ends_with("/_ws") {
        return url.to_string();
    }
    let (scheme, rest) = url.split_once("://").unwrap_or(("ws", url));
    match rest.split_once('/') {
        Some((host, path)) if !path.starts_with("barrels/") => {
            format!(
                "{scheme}://{host}/barrels/{}/_ws",
                path.trim_end_matches('/')
            )
        }
        _ => format!("{}/_ws", url.trim_end_matches('/')),
    }
}

impl Endpoint for WsEndpoint {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn prepare(&mut self, create: bool) -> Result<()> {
        self.http()?.prepare(create)
    }

    fn changes(
        &mut self,
        since: u64,
        limit: usize,
        filter: &[Pattern],
    ) -> Result<(Vec<ChangedDoc>, u64)> {
        let v = self.call(
            json!({"type": "changes", "since": since, "limit": limit, "style": "all_docs",
                                 "path": filter.iter().map(|p| p.as_str()).collect::<Vec<_>>()}),
        )?;
        let docs = changed_docs(v.get("results").unwrap_or(&Value::Null));
        let last = seq_of(v.get("last_seq").unwrap_or(&Value::Null)).max(since);
        Ok((docs, last))
    }

    fn wait_changes(&mut self, since: u64, timeout: Duration) -> Result<()> {
        let ms = timeout.as_millis().max(1) as u64;
        self.call(json!({"type": "wait", "since": since, "timeout": ms}))
            .map(|_| ())
    }

    fn revs_diff(&mut self, asked: &[(String, Vec<Rev>)]) -> Result<Vec<(String, Vec<Rev>)>> {
        let req = revs_request(asked);
        let v = self.call(json!({"type": "revs_diff", "revs": req}))?;
        Ok(missing_of(v.get("result").unwrap_or(&Value::Null)))
    }

    fn fetch(&mut self, wanted: &[(String, Vec<Rev>)]) -> Result<Vec<Value>> {
        let mut req = bulk_get_request(wanted);
        req["type"] = json!("bulk_get");
        req["revs"] = json!(true);
        req["latest"] = json!(true);
        let v = self.call(req)?;
        Ok(bulk_get_docs(v.get("result").unwrap_or(&Value::Null)))
    }

    fn save(&mut self, docs: Vec<Value>) -> Result<()> {
        let v = self.call(json!({"type": "bulk_docs", "docs": docs, "new_edits": false}))?;
        save_errors(v.get("result").unwrap_or(&Value::Null))
    }

    fn get_local(&mut self, id: &str) -> Result<Option<Value>> {
        match self.call(json!({"type": "get_local", "doc_id": id})) {
            Ok(v) => Ok(v.get("doc").cloned()),
            Err(Error::Storage(m)) if m.contains("not_found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn put_local(&mut self, id: &str, doc: Value) -> Result<()> {
        self.call(json!({"type": "put_local", "doc_id": id, "doc": doc}))
            .map(|_| ())
    }
}

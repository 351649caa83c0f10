//! The Barrel HTTP peer of `make bench`: the workloads of the embedded API, sent as HTTP
//! requests to Barrel's own server, so the table shows what the HTTP layer costs.
//!
//! On `open` it opens a `barrel_core::Store` in the directory, starts the HTTP server in this
//! process on a free loopback port (`barrel_core::server`, the server behind
//! `barrel:start_http/1` and `barreld`, default settings: no TLS, no authentication) and creates
//! the barrel with `PUT /barrels/bench`. It then runs the workloads the Erlang driver
//! (`bench/bench_external.erl`) asks for, over the line protocol of `peer_protocol`.
//!
//! "Processes" are threads, each with its own `ureq` agent (one keep-alive connection). A call
//! is one request, timed until its response is read:
//!
//! - `put`, batch 1: `PUT /barrels/bench/docs/<id>` with the document as the JSON body;
//! - `put`, batch N: `POST /barrels/bench/_bulk_docs` with `{"docs": [...]}` (CouchDB's `_id`
//!   instead of `id`), every result checked;
//! - `update`: `PUT /barrels/bench/docs/<id>?rev=<rev>`, the revisions read before the clock;
//! - `get`: `GET /barrels/bench/docs/<id>`, 200 checked, the body read but not decoded;
//! - `fold`: `GET /barrels/bench/_all_docs?include_docs=true` in pages of 1000;
//! - `att_put`: `PUT /barrels/bench/docs/<id>/blob` (no `rev`: a new document) with the
//!   attachment's bytes as the body, `Content-Type: application/octet-stream`;
//! - `att_get`: `GET /barrels/bench/docs/<id>/blob`, the bytes read and their length checked.
//!
//! Other ops answer `error unsupported ...`. Documents and attachments are the bytes the other
//! peers store (`peer_protocol::Templates::doc`, `peer_protocol::attachment`), id
//! `<ks>-<i, 10 digits>`.

use barrel_core::server::{self, ServerConfig, ServerHandle};
use barrel_core::{Store, StoreOptions};
use peer_protocol::{attachments, key, run_threads, Op, Outcome, Peer, Templates, Workload};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rows a page of `_all_docs` asks for (the fold and the revisions read before an update).
const PAGE: usize = 1000;

/// The attachment workloads' one attachment a document (the same name in every peer).
const ATT_NAME: &str = "blob";

fn main() {
    peer_protocol::serve::<HttpPeer>();
}

/// The store and the server in this process, and the client side that calls it.
struct HttpPeer {
    server: ServerHandle,
    store: Arc<Store>,
    client: Client,
}

impl Peer for HttpPeer {
    fn open(dir: &str, templates: Templates) -> Result<HttpPeer, String> {
        let store = Store::open(dir, &StoreOptions::default()).map_err(|e| e.to_string())?;
        let shared = store.clone();
        let config = ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Default::default()
        };
        let server = server::start(Arc::new(move || Ok(shared.clone())), config)
            .map_err(|e| e.to_string())?;
        let client = Client {
            base: format!("http://{}/barrels/bench", server.addr()),
            templates,
        };
        let peer = HttpPeer {
            server,
            store,
            client,
        };
        let base = &peer.client.base;
        read_body(base, agent().put(base).call())?;
        Ok(peer)
    }

    /// Until the store's background work is done (the same wait as the in-VM Barrel peer's,
    /// through `Store::background`; at most a minute).
    fn quiesce(&self) -> Result<(), String> {
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        while !self.store.background().is_idle() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(())
    }

    /// Writes are timed until their path-index entries are written too (a write returns once
    /// the document is committed; the index follows on the indexer thread): a query through the
    /// store waits for that, and its time is added.
    fn run(&self, w: &Workload) -> Result<Outcome, String> {
        let mut outcome = self.client.run(w)?;
        if matches!(w.op, Op::Put | Op::Update) {
            let started = Instant::now();
            let barrel = self.store.open_barrel("bench").map_err(|e| e.to_string())?;
            let (path, value) = barrel_core::index::parse_path_and_value("$/id/none")?;
            let query = barrel_core::Query {
                path,
                select: barrel_core::Select::Equal(value),
                descending: false,
                include_docs: false,
            };
            barrel
                .query(&query, Some(1), |_| true)
                .map_err(|e| e.to_string())?;
            outcome.secs += started.elapsed().as_secs_f64();
        }
        Ok(outcome)
    }

    /// Stops the server, then the store as `barreld` does (its memtables flushed, so its logs
    /// are empty): RocksDB closes with the last handle, so the driver measures the directory at
    /// rest.
    fn close(self) {
        self.server.stop();
        self.store.close();
        if let Err(e) = self.store.flush_for_close() {
            eprintln!("http_peer: flushing the store as it closes: {e}");
        }
    }
}

/// One keep-alive connection to the server (opened by the first request).
fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build()
}

/// The response's status checked (ureq answers any status of 400 or more as an error), its body
/// read to the end so the connection goes back to the agent.
fn response(url: &str, r: Result<ureq::Response, ureq::Error>) -> Result<ureq::Response, String> {
    match r {
        Ok(resp) => Ok(resp),
        Err(ureq::Error::Status(code, resp)) => Err(format!(
            "{url}: HTTP {code} {}",
            resp.into_string().unwrap_or_default()
        )),
        Err(e) => Err(format!("{url}: {e}")),
    }
}

fn read_body(url: &str, r: Result<ureq::Response, ureq::Error>) -> Result<String, String> {
    response(url, r)?
        .into_string()
        .map_err(|e| format!("{url}: {e}"))
}

fn read_json<T: serde::de::DeserializeOwned>(
    url: &str,
    r: Result<ureq::Response, ureq::Error>,
) -> Result<T, String> {
    response(url, r)?
        .into_json()
        .map_err(|e| format!("{url}: {e}"))
}

/// A page of `_all_docs` (documents, when included, are parsed and skipped).
#[derive(Deserialize)]
struct Page {
    rows: Vec<Row>,
}

#[derive(Deserialize)]
struct Row {
    id: String,
    value: RowValue,
}

#[derive(Deserialize)]
struct RowValue {
    rev: String,
}

/// One document's result in a `_bulk_docs` answer.
#[derive(Deserialize)]
struct Saved {
    id: Option<String>,
    error: Option<String>,
    reason: Option<String>,
}

/// The client side: the barrel's URL and the documents.
struct Client {
    /// `http://127.0.0.1:<port>/barrels/bench`
    base: String,
    templates: Templates,
}

impl Client {
    fn run(&self, w: &Workload) -> Result<Outcome, String> {
        if w.op == Op::Fold {
            return self.fold(w.deadline);
        }
        let revs = if w.op == Op::Update {
            self.revisions(w)?
        } else {
            HashMap::new()
        };
        let contents = attachments(w);
        // One agent (keep-alive connection) per thread.
        run_threads(w, agent, |agent, share, i, rng| {
            Ok(match w.op {
                Op::Put if w.batch == 1 => {
                    let idx = w.start + i;
                    let k = key(w.keyspace, idx);
                    let url = format!("{}/docs/{k}", self.base);
                    let body = self.templates.doc("id", &k, idx, 0);
                    read_body(&url, json_request(agent, "PUT", &url).send_string(&body))?;
                    1
                }
                Op::Put => {
                    let size = w.batch.min(share.first + share.n - i);
                    let mut body = String::with_capacity(size as usize * 1100 + 16);
                    body.push_str("{\"docs\":[");
                    for j in 0..size {
                        let idx = w.start + i + j;
                        if j > 0 {
                            body.push(',');
                        }
                        body.push_str(&self.templates.doc("_id", &key(w.keyspace, idx), idx, 0));
                    }
                    body.push_str("]}");
                    let url = format!("{}/_bulk_docs", self.base);
                    let saved: Vec<Saved> =
                        read_json(&url, json_request(agent, "POST", &url).send_string(&body))?;
                    if saved.len() as u64 != size {
                        return Err(format!("{url}: {} results for {size} docs", saved.len()));
                    }
                    if let Some(e) = saved.iter().find(|s| s.error.is_some()) {
                        return Err(format!("{url}: {:?} {:?} {:?}", e.id, e.error, e.reason));
                    }
                    size
                }
                Op::Update => {
                    let idx = w.start + i;
                    let k = key(w.keyspace, idx);
                    let rev = revs.get(&k).ok_or_else(|| format!("no revision of {k}"))?;
                    let url = format!("{}/docs/{k}?rev={rev}", self.base);
                    let body = self.templates.doc("id", &k, idx, 1);
                    read_body(&url, json_request(agent, "PUT", &url).send_string(&body))?;
                    1
                }
                Op::Get => {
                    let idx = if w.random {
                        rng.below(w.keys)
                    } else {
                        i % w.keys.max(1)
                    };
                    let url = format!("{}/docs/{}", self.base, key(w.keyspace, w.start + idx));
                    let resp = response(&url, agent.get(&url).call())?;
                    if resp.status() != 200 {
                        return Err(format!("{url}: HTTP {}", resp.status()));
                    }
                    resp.into_string().map_err(|e| format!("{url}: {e}"))?;
                    1
                }
                Op::AttPut => {
                    let k = key(w.keyspace, w.start + i);
                    let url = format!("{}/docs/{k}/{ATT_NAME}", self.base);
                    let req = agent
                        .put(&url)
                        .set("Content-Type", "application/octet-stream");
                    read_body(&url, req.send_bytes(&contents[i as usize]))?;
                    1
                }
                Op::AttGet => {
                    let k = key(w.keyspace, w.start + i);
                    let url = format!("{}/docs/{k}/{ATT_NAME}", self.base);
                    let mut content = Vec::with_capacity(w.att_bytes as usize);
                    response(&url, agent.get(&url).call())?
                        .into_reader()
                        .read_to_end(&mut content)
                        .map_err(|e| format!("{url}: {e}"))?;
                    if content.len() as u64 != w.att_bytes {
                        return Err(format!("{url}: {} bytes", content.len()));
                    }
                    1
                }
                Op::Fold => unreachable!("fold runs on its own"),
            })
        })
    }

    /// The current revision of every document the update workload touches, read (before the
    /// clock) as a client would: `_all_docs` over the workload's id range, page by page.
    fn revisions(&self, w: &Workload) -> Result<HashMap<String, String>, String> {
        let mut revs = HashMap::new();
        if w.count == 0 {
            return Ok(revs);
        }
        let agent = agent();
        let end = key(w.keyspace, w.start + w.count - 1);
        let mut from = key(w.keyspace, w.start);
        let mut skip = 0;
        loop {
            let url = format!(
                "{}/_all_docs?startkey=%22{from}%22&endkey=%22{end}%22&limit={PAGE}&skip={skip}",
                self.base
            );
            let page: Page = read_json(&url, agent.get(&url).call())?;
            let full = page.rows.len() == PAGE;
            for row in page.rows {
                from.clone_from(&row.id);
                revs.insert(row.id, row.value.rev);
            }
            if !full {
                return Ok(revs);
            }
            skip = 1;
        }
    }

    /// Reads every document in id order, page by page, as `fold_docs` does (until the
    /// deadline).
    fn fold(&self, deadline: Duration) -> Result<Outcome, String> {
        let agent = agent();
        let started = Instant::now();
        let mut ops = 0u64;
        let mut after: Option<String> = None;
        while started.elapsed() < deadline {
            let url = match &after {
                None => format!("{}/_all_docs?include_docs=true&limit={PAGE}", self.base),
                Some(k) => format!(
                    "{}/_all_docs?include_docs=true&limit={PAGE}&startkey=%22{k}%22&skip=1",
                    self.base
                ),
            };
            let page: Page = read_json(&url, agent.get(&url).call())?;
            ops += page.rows.len() as u64;
            if page.rows.len() < PAGE {
                break;
            }
            after = page.rows.last().map(|r| r.id.clone());
        }
        Ok(Outcome {
            ops,
            secs: started.elapsed().as_secs_f64(),
            p50_us: 0.0,
            p99_us: 0.0,
        })
    }
}

fn json_request(agent: &ureq::Agent, method: &str, url: &str) -> ureq::Request {
    agent
        .request(method, url)
        .set("Content-Type", "application/json")
}

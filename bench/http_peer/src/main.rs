//! The Barrel HTTP peer of `make bench`: the workloads of the embedded API, sent as HTTP
//! requests to Barrel's own server, so the table shows what the HTTP layer costs.
//!
//! On `open` it opens a `barrel_core::Store` in the directory, starts the HTTP server in this
//! process on a free loopback port (`barrel_core::server`, the server behind
//! `barrel:start_http/1` and `barreld`, default settings: no TLS, no authentication) and creates
//! the barrel with `PUT /barrels/bench`. It then runs the workloads the Erlang driver
//! (`bench/bench_external.erl`) asks for, with the line protocol of `bench/rocksdb_floor`:
//!
//! ```text
//! open <dir> <templates file>   -> ok
//! run op=put ks=w1 start=0 count=50000 procs=16 batch=1 keys=0 pattern=seq deadline_ms=20000
//!                               -> ok ops=50000 secs=5.2 p50_us=310.4 p99_us=1520.0
//! close                         -> ok
//! ```
//!
//! "Processes" are threads, each with its own `ureq` agent (one keep-alive connection). A call
//! is one request, timed until its response is read:
//!
//! - `put`, batch 1: `PUT /barrels/bench/docs/<id>` with the document as the JSON body;
//! - `put`, batch N: `POST /barrels/bench/_bulk_docs` with `{"docs": [...]}` (CouchDB's `_id`
//!   instead of `id`), every result checked;
//! - `update`: `PUT /barrels/bench/docs/<id>?rev=<rev>`, the revisions read before the clock;
//! - `get`: `GET /barrels/bench/docs/<id>`, 200 checked, the body read but not decoded;
//! - `fold`: `GET /barrels/bench/_all_docs?include_docs=true` in pages of 1000.
//!
//! Other ops answer `error unsupported ...`. Documents are the bytes the other peers store: the
//! JSON of template `(i + variant) mod K` with `"id"` and `"seq"` in front, id `<ks>-<i, 10
//! digits>`. End of input ends the process, so it never outlives the driver.

use barrel_core::server::{self, ServerConfig, ServerHandle};
use barrel_core::{Store, StoreOptions};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rows a page of `_all_docs` asks for (the fold and the revisions read before an update).
const PAGE: usize = 1000;

fn main() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut peer: Option<Peer> = None;
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let answer = match handle(&mut peer, &line) {
            Ok(a) => a,
            Err(e) => format!("error {}", e.replace('\n', " ")),
        };
        if writeln!(out, "{answer}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    if let Some(p) = peer {
        p.close();
    }
}

fn handle(peer: &mut Option<Peer>, line: &str) -> Result<String, String> {
    let mut words = line.split_whitespace();
    match words.next() {
        Some("open") => {
            let (Some(dir), Some(file)) = (words.next(), words.next()) else {
                return Err("usage: open <dir> <templates>".into());
            };
            if let Some(p) = peer.take() {
                p.close();
            }
            *peer = Some(Peer::open(dir, file)?);
            Ok("ok".into())
        }
        Some("run") => {
            let peer = peer.as_ref().ok_or("no store open")?;
            let params = words
                .filter_map(|w| w.split_once('='))
                .collect::<HashMap<_, _>>();
            let w = Workload::parse(&params)?;
            let r = peer.client.run(&w)?;
            Ok(format!(
                "ok ops={} secs={:.6} p50_us={:.3} p99_us={:.3}",
                r.ops, r.secs, r.p50_us, r.p99_us
            ))
        }
        Some("close") => {
            if let Some(p) = peer.take() {
                p.close();
            }
            Ok("ok".into())
        }
        other => Err(format!("unknown command {other:?}")),
    }
}

/// The store and the server in this process, and the client side that calls it.
struct Peer {
    server: ServerHandle,
    store: Arc<Store>,
    client: Client,
}

impl Peer {
    fn open(dir: &str, templates_file: &str) -> Result<Peer, String> {
        let templates = std::fs::read_to_string(templates_file)
            .map_err(|e| format!("{templates_file}: {e}"))?
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        if templates.is_empty() {
            return Err(format!("{templates_file}: no templates"));
        }
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
        let peer = Peer {
            server,
            store,
            client,
        };
        let base = &peer.client.base;
        read_body(base, agent().put(base).call())?;
        Ok(peer)
    }

    /// Stops the server, then the store: RocksDB closes with the last handle, so the driver
    /// measures the directory at rest.
    fn close(self) {
        self.server.stop();
        self.store.close();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Put,
    Update,
    Get,
    Fold,
}

struct Workload<'a> {
    op: Op,
    keyspace: &'a str,
    start: u64,
    count: u64,
    procs: u64,
    batch: u64,
    keys: u64,
    random: bool,
    deadline: Duration,
}

impl<'a> Workload<'a> {
    fn parse(p: &HashMap<&'a str, &'a str>) -> Result<Workload<'a>, String> {
        let num = |k: &str, default: u64| -> Result<u64, String> {
            p.get(k).map_or(Ok(default), |v| {
                v.parse().map_err(|_| format!("bad {k}={v}"))
            })
        };
        let op = match p.get("op").copied() {
            Some("put") => Op::Put,
            Some("update") => Op::Update,
            Some("get") => Op::Get,
            Some("fold") => Op::Fold,
            other => return Err(format!("unsupported op {other:?}")),
        };
        Ok(Workload {
            op,
            keyspace: p.get("ks").copied().unwrap_or("k"),
            start: num("start", 0)?,
            count: num("count", 0)?,
            procs: num("procs", 1)?.max(1),
            batch: num("batch", 1)?.max(1),
            keys: num("keys", 0)?,
            random: p.get("pattern") == Some(&"random"),
            deadline: Duration::from_millis(num("deadline_ms", 60_000)?),
        })
    }
}

struct Outcome {
    ops: u64,
    secs: f64,
    p50_us: f64,
    p99_us: f64,
}

/// The id of item `i` of a keyspace. Keyspaces are letters and digits, so ids need no escaping
/// in a URL or in JSON.
fn key(keyspace: &str, i: u64) -> String {
    format!("{keyspace}-{i:010}")
}

/// xorshift64*: the random read pattern needs uniform indices, not a crypto generator.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
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
    templates: Vec<String>,
}

impl Client {
    /// Document `i`'s JSON, its id under `id_field` (`id`, or `_id` for `_bulk_docs`).
    fn doc(&self, id_field: &str, key: &str, i: u64, variant: u64) -> String {
        let t = &self.templates[((i + variant) % self.templates.len() as u64) as usize];
        // Every template line is a JSON object: splice the per-document fields in after '{'.
        format!("{{\"{id_field}\":\"{key}\",\"seq\":{i},{}", &t[1..])
    }

    fn run(&self, w: &Workload) -> Result<Outcome, String> {
        if w.op == Op::Fold {
            return self.fold(w.deadline);
        }
        let revs = if w.op == Op::Update {
            self.revisions(w)?
        } else {
            HashMap::new()
        };
        let revs = &revs;
        let started = Instant::now();
        let per = w.count.div_ceil(w.procs);
        let results = std::thread::scope(|s| {
            let workers = (0..w.procs)
                .map(|t| {
                    let first = t * per;
                    let n = per.min(w.count.saturating_sub(first));
                    s.spawn(move || self.worker(w, revs, t, first, n, started))
                })
                .collect::<Vec<_>>();
            workers
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("worker panicked".into())))
                .collect::<Vec<_>>()
        });
        let secs = started.elapsed().as_secs_f64();
        let mut lat = Vec::new();
        let mut ops = 0;
        for r in results {
            let (n, l) = r?;
            ops += n;
            lat.extend(l);
        }
        lat.sort_unstable();
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                0.0
            } else {
                let idx = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
                lat[idx] as f64 / 1000.0
            }
        };
        Ok(Outcome {
            ops,
            secs,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
        })
    }

    /// One thread's share: `n` operations (items `first..first + n` of the workload), timing each
    /// call. Returns the documents done and the latencies in nanoseconds.
    fn worker(
        &self,
        w: &Workload,
        revs: &HashMap<String, String>,
        thread: u64,
        first: u64,
        n: u64,
        started: Instant,
    ) -> Result<(u64, Vec<u64>), String> {
        let agent = agent();
        let mut lat = Vec::with_capacity(n.div_ceil(w.batch) as usize);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (thread + 1).wrapping_mul(0x1000_0000_01b3));
        let mut done = 0;
        let mut last = Instant::now();
        while done < n && started.elapsed() < w.deadline {
            let i = first + done;
            let step = match w.op {
                Op::Put if w.batch == 1 => {
                    let idx = w.start + i;
                    let k = key(w.keyspace, idx);
                    let url = format!("{}/docs/{k}", self.base);
                    let body = self.doc("id", &k, idx, 0);
                    read_body(&url, json_request(&agent, "PUT", &url).send_string(&body))?;
                    1
                }
                Op::Put => {
                    let size = w.batch.min(n - done);
                    let mut body = String::with_capacity(size as usize * 1100 + 16);
                    body.push_str("{\"docs\":[");
                    for j in 0..size {
                        let idx = w.start + i + j;
                        if j > 0 {
                            body.push(',');
                        }
                        body.push_str(&self.doc("_id", &key(w.keyspace, idx), idx, 0));
                    }
                    body.push_str("]}");
                    let url = format!("{}/_bulk_docs", self.base);
                    let saved: Vec<Saved> =
                        read_json(&url, json_request(&agent, "POST", &url).send_string(&body))?;
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
                    let body = self.doc("id", &k, idx, 1);
                    read_body(&url, json_request(&agent, "PUT", &url).send_string(&body))?;
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
                Op::Fold => unreachable!("fold runs on its own"),
            };
            done += step;
            let now = Instant::now();
            lat.push((now - last).as_nanos() as u64);
            last = now;
        }
        Ok((done, lat))
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

//! The raw RocksDB peer of `make bench`: the floor that Barrel's overhead is measured against.
//!
//! It opens RocksDB with the crate's default options (plus `create_if_missing`) and runs the
//! workloads the Erlang driver (`bench/bench_external.erl`) asks for, one command per line on
//! stdin, one answer per line on stdout:
//!
//! ```text
//! open <dir> <templates file>   -> ok
//! run op=put ks=w1 start=0 count=50000 procs=16 batch=1 keys=0 pattern=seq deadline_ms=20000
//!                               -> ok ops=50000 secs=0.31 p50_us=4.1 p99_us=19.0
//! close                         -> ok
//! ```
//!
//! Documents are the same bytes the Erlang side stores: the JSON of template `(i + variant) mod
//! K` with `"id"` and `"seq"` in front, under the key `<ks>-<i, 10 digits>`. End of input ends
//! the process, so it never outlives the driver.

use rocksdb::{Options, WriteBatch, DB};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

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
}

struct Peer {
    db: DB,
    templates: Vec<String>,
}

fn handle(peer: &mut Option<Peer>, line: &str) -> Result<String, String> {
    let mut words = line.split_whitespace();
    match words.next() {
        Some("open") => {
            let (Some(dir), Some(file)) = (words.next(), words.next()) else {
                return Err("usage: open <dir> <templates>".into());
            };
            let mut opts = Options::default();
            opts.create_if_missing(true);
            let db = DB::open(&opts, dir).map_err(|e| e.to_string())?;
            let templates = std::fs::read_to_string(file)
                .map_err(|e| format!("{file}: {e}"))?
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>();
            if templates.is_empty() {
                return Err(format!("{file}: no templates"));
            }
            *peer = Some(Peer { db, templates });
            Ok("ok".into())
        }
        Some("run") => {
            let peer = peer.as_ref().ok_or("no store open")?;
            let params = words
                .filter_map(|w| w.split_once('='))
                .collect::<HashMap<_, _>>();
            let w = Workload::parse(&params)?;
            let r = peer.run(&w)?;
            Ok(format!(
                "ok ops={} secs={:.6} p50_us={:.3} p99_us={:.3}",
                r.ops, r.secs, r.p50_us, r.p99_us
            ))
        }
        Some("close") => {
            *peer = None;
            Ok("ok".into())
        }
        other => Err(format!("unknown command {other:?}")),
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

impl Peer {
    fn doc(&self, key: &str, i: u64, variant: u64) -> Vec<u8> {
        let t = &self.templates[((i + variant) % self.templates.len() as u64) as usize];
        // Every template line is a JSON object: splice the per-document fields in after '{'.
        format!("{{\"id\":\"{key}\",\"seq\":{i},{}", &t[1..]).into_bytes()
    }

    fn run(&self, w: &Workload) -> Result<Outcome, String> {
        if w.op == Op::Fold {
            return self.fold(w.deadline);
        }
        let started = Instant::now();
        let per = w.count.div_ceil(w.procs);
        let results = std::thread::scope(|s| {
            let workers = (0..w.procs)
                .map(|t| {
                    let first = t * per;
                    let n = per.min(w.count.saturating_sub(first));
                    s.spawn(move || self.worker(w, t, first, n, started))
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
        thread: u64,
        first: u64,
        n: u64,
        started: Instant,
    ) -> Result<(u64, Vec<u64>), String> {
        let mut lat = Vec::with_capacity(n.div_ceil(w.batch) as usize);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (thread + 1).wrapping_mul(0x1000_0000_01b3));
        let mut done = 0;
        let mut last = Instant::now();
        while done < n && started.elapsed() < w.deadline {
            let i = first + done;
            let step = match w.op {
                Op::Put | Op::Update => {
                    let variant = u64::from(w.op == Op::Update);
                    let size = w.batch.min(n - done);
                    if w.batch == 1 {
                        let idx = w.start + i;
                        let k = key(w.keyspace, idx);
                        let v = self.doc(&k, idx, variant);
                        self.db.put(k, v).map_err(|e| e.to_string())?;
                    } else {
                        let mut b = WriteBatch::default();
                        for j in 0..size {
                            let idx = w.start + i + j;
                            let k = key(w.keyspace, idx);
                            let v = self.doc(&k, idx, variant);
                            b.put(k, v);
                        }
                        self.db.write(b).map_err(|e| e.to_string())?;
                    }
                    size
                }
                Op::Get => {
                    let idx = if w.random {
                        rng.below(w.keys)
                    } else {
                        i % w.keys.max(1)
                    };
                    let v = self
                        .db
                        .get(key(w.keyspace, w.start + idx))
                        .map_err(|e| e.to_string())?;
                    if v.is_none() {
                        return Err(format!("missing {}", key(w.keyspace, w.start + idx)));
                    }
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

    /// Reads every key and value in order, as `fold_docs` does (until the deadline).
    fn fold(&self, deadline: Duration) -> Result<Outcome, String> {
        let started = Instant::now();
        let mut ops = 0u64;
        let mut bytes = 0usize;
        for item in self.db.iterator(rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(|e| e.to_string())?;
            bytes += k.len() + v.len();
            ops += 1;
            if ops.is_multiple_of(4096) && started.elapsed() > deadline {
                break;
            }
        }
        std::hint::black_box(bytes);
        Ok(Outcome {
            ops,
            secs: started.elapsed().as_secs_f64(),
            p50_us: 0.0,
            p99_us: 0.0,
        })
    }
}

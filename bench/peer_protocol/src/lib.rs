//! What the external Rust peers of `make bench` (`rocksdb_floor`, `http_peer`) share: the line
//! protocol the Erlang driver (`bench/bench_external.erl`) speaks, one command per line on
//! stdin, one answer per line on stdout,
//!
//! ```text
//! open <dir> <templates file>   -> ok
//! run op=put ks=w1 start=0 count=50000 procs=16 batch=1 keys=0 pattern=seq deadline_ms=20000
//!                               -> ok ops=50000 secs=0.31 p50_us=4.1 p99_us=19.0
//! run op=att_put ks=a1m start=0 count=500 procs=1 ... att_bytes=1048576
//!                               -> ok ops=500 secs=1.9 p50_us=3500.0 p99_us=6100.0
//! quiesce                       -> ok (once the store's background work is done)
//! close                         -> ok
//! ```
//!
//! the workload parameters, the documents and attachments (the same bytes the Erlang side
//! stores), and the threads that run a workload and time every call. End of input ends the process, so a peer
//! never outlives the driver.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

/// A store the driver runs workloads on.
pub trait Peer: Sized {
    /// Opens the store in `dir`, with the benchmark's document templates.
    fn open(dir: &str, templates: Templates) -> Result<Self, String>;
    /// Runs one workload.
    fn run(&self, w: &Workload) -> Result<Outcome, String>;
    /// Waits (untimed, before a workload) until the store's background work from the previous
    /// workloads is done, so each workload is measured on its own. Default: nothing to wait for.
    fn quiesce(&self) -> Result<(), String> {
        Ok(())
    }
    /// Closes the store (so the driver measures the directory at rest).
    fn close(self) {}
}

/// Answers the driver's commands until the end of input.
pub fn serve<P: Peer>() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut peer: Option<P> = None;
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

fn handle<P: Peer>(peer: &mut Option<P>, line: &str) -> Result<String, String> {
    let mut words = line.split_whitespace();
    match words.next() {
        Some("open") => {
            let (Some(dir), Some(file)) = (words.next(), words.next()) else {
                return Err("usage: open <dir> <templates>".into());
            };
            if let Some(p) = peer.take() {
                p.close();
            }
            *peer = Some(P::open(dir, Templates::read(file)?)?);
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
        Some("quiesce") => {
            peer.as_ref().ok_or("no store open")?.quiesce()?;
            Ok("ok".into())
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

/// The document templates, one JSON object a line (written by `bench_docs.erl`).
pub struct Templates(Vec<String>);

impl Templates {
    fn read(file: &str) -> Result<Templates, String> {
        let lines = std::fs::read_to_string(file)
            .map_err(|e| format!("{file}: {e}"))?
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        if lines.is_empty() {
            return Err(format!("{file}: no templates"));
        }
        Ok(Templates(lines))
    }

    /// Document `i` of a keyspace, as the Erlang side stores it: the JSON of template
    /// `(i + variant) mod K` with its id (under `id_field`: `id`, or `_id` for CouchDB's
    /// `_bulk_docs`) and `"seq"` in front.
    pub fn doc(&self, id_field: &str, key: &str, i: u64, variant: u64) -> String {
        let t = &self.0[((i + variant) % self.0.len() as u64) as usize];
        // Every template line is a JSON object: splice the per-document fields in after '{'.
        format!("{{\"{id_field}\":\"{key}\",\"seq\":{i},{}", &t[1..])
    }
}

/// What a workload does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    Put,
    Update,
    Get,
    Fold,
    /// A new document with one attachment of `att_bytes` bytes ([`attachment`]).
    AttPut,
    /// The attachment `AttPut` stored, read back whole.
    AttGet,
}

/// One `run` command's parameters.
pub struct Workload<'a> {
    pub op: Op,
    pub keyspace: &'a str,
    pub start: u64,
    pub count: u64,
    pub procs: u64,
    pub batch: u64,
    pub keys: u64,
    pub random: bool,
    pub deadline: Duration,
    /// Bytes of an attachment (the attachment workloads).
    pub att_bytes: u64,
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
            Some("att_put") => Op::AttPut,
            Some("att_get") => Op::AttGet,
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
            att_bytes: num("att_bytes", 0)?,
        })
    }
}

/// A workload's result.
pub struct Outcome {
    pub ops: u64,
    pub secs: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// The key (and document id) of item `i` of a keyspace.
pub fn key(keyspace: &str, i: u64) -> String {
    format!("{keyspace}-{i:010}")
}

/// The `bytes` bytes of the attachment stored under `key`: the ChaCha20 keystream (RFC 8439
/// block function, counter and nonce 0) keyed by `key` padded with zeros to 32 bytes, as
/// `bench_docs:attachment/2` and `pouchdb_peer.js` compute it. Pseudo-random: incompressible,
/// and a different content (digest) for every key.
pub fn attachment(key: &str, bytes: u64) -> Vec<u8> {
    let mut seed = [0u8; 32];
    let n = key.len().min(32);
    seed[..n].copy_from_slice(&key.as_bytes()[..n]);
    let mut content = vec![0u8; bytes as usize];
    ChaCha20Rng::from_seed(seed).fill_bytes(&mut content);
    content
}

/// The attachment of every item of an `AttPut` workload, by item (made before the clock
/// starts); nothing for the other workloads.
pub fn attachments(w: &Workload) -> Vec<Vec<u8>> {
    if w.op != Op::AttPut {
        return Vec::new();
    }
    (0..w.count)
        .map(|i| attachment(&key(w.keyspace, w.start + i), w.att_bytes))
        .collect()
}

/// xorshift64*: the random read pattern needs uniform indices, not a crypto generator.
pub struct Rng(u64);

impl Rng {
    /// The generator of worker thread `thread`.
    pub fn for_thread(thread: u64) -> Rng {
        Rng(0x9e37_79b9_7f4a_7c15 ^ (thread + 1).wrapping_mul(0x1000_0000_01b3))
    }

    /// A uniform index below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// One worker thread's share of a workload: `n` items from `first`, its thread number, and the
/// instant the workload started (for the deadline).
#[derive(Clone, Copy)]
pub struct Share {
    pub thread: u64,
    pub first: u64,
    pub n: u64,
    pub started: Instant,
}

/// Runs `w` on `procs` threads, each doing its contiguous share of the `count` items with
/// `step`, timing every call. Each thread starts with `init()` (its own client, say);
/// `step(state, share, i, rng)` does the call for item `i` (an offset in the workload) and
/// returns how many documents it did (a batch does several).
pub fn run_threads<S, I, F>(w: &Workload, init: I, step: F) -> Result<Outcome, String>
where
    I: Fn() -> S + Sync,
    F: Fn(&mut S, &Share, u64, &mut Rng) -> Result<u64, String> + Sync,
{
    let started = Instant::now();
    let per = w.count.div_ceil(w.procs);
    let (init, step) = (&init, &step);
    let results = std::thread::scope(|s| {
        let workers = (0..w.procs)
            .map(|thread| {
                let first = thread * per;
                let n = per.min(w.count.saturating_sub(first));
                let share = Share {
                    thread,
                    first,
                    n,
                    started,
                };
                s.spawn(move || worker(w, &share, &mut init(), step))
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

/// One thread's share, timing each call: the documents done and the latencies in nanoseconds.
fn worker<S, F>(
    w: &Workload,
    share: &Share,
    state: &mut S,
    step: &F,
) -> Result<(u64, Vec<u64>), String>
where
    F: Fn(&mut S, &Share, u64, &mut Rng) -> Result<u64, String>,
{
    let mut lat = Vec::with_capacity(share.n.div_ceil(w.batch) as usize);
    let mut rng = Rng::for_thread(share.thread);
    let mut done = 0;
    let mut last = Instant::now();
    while done < share.n && share.started.elapsed() < w.deadline {
        done += step(state, share, share.first + done, &mut rng)?;
        let now = Instant::now();
        lat.push((now - last).as_nanos() as u64);
        last = now;
    }
    Ok((done, lat))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_is_the_chacha20_keystream_of_the_padded_key() {
        // RFC 8439 appendix A.1, test vector 1: the all-zero key (here: the empty key).
        let first = [
            0x76, 0xb8, 0xe0, 0xad, 0xa0, 0xf1, 0x3d, 0x90, 0x40, 0x5d, 0x6a, 0xe5, 0x53, 0x86,
            0xbd, 0x28,
        ];
        assert_eq!(attachment("", 16), first);
    }

    #[test]
    fn attachment_differs_by_key_and_extends_by_length() {
        let a = attachment("a1m-0000000000", 1 << 16);
        assert_ne!(a, attachment("a1m-0000000001", 1 << 16));
        assert_eq!(attachment("a1m-0000000000", 1 << 20)[..1 << 16], a[..]);
    }
}

//! The raw RocksDB peer of `make bench`: the floor that Barrel's overhead is measured against.
//!
//! It opens RocksDB with the crate's default options (plus `create_if_missing`) and runs the
//! workloads the Erlang driver (`bench/bench_external.erl`) asks for over the line protocol of
//! `peer_protocol`. Documents are the same bytes the Erlang side stores, under the key
//! `<ks>-<i, 10 digits>`; for the attachment workloads, the attachment's bytes
//! (`peer_protocol::attachment`) under the document's key: one `put`, one `get` of the content.

use peer_protocol::{attachments, key, run_threads, Op, Outcome, Peer, Templates, Workload};
use rocksdb::{Options, WriteBatch, DB};
use std::time::{Duration, Instant};

fn main() {
    peer_protocol::serve::<Floor>();
}

struct Floor {
    db: DB,
    templates: Templates,
}

impl Peer for Floor {
    fn open(dir: &str, templates: Templates) -> Result<Floor, String> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, dir).map_err(|e| e.to_string())?;
        Ok(Floor { db, templates })
    }

    /// Until RocksDB has no flush or compaction running or due (at most a minute).
    fn quiesce(&self) -> Result<(), String> {
        let int = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while [
            "rocksdb.num-running-flushes",
            "rocksdb.num-running-compactions",
            "rocksdb.mem-table-flush-pending",
            "rocksdb.compaction-pending",
        ]
        .iter()
        .any(|p| int(p) > 0)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn run(&self, w: &Workload) -> Result<Outcome, String> {
        if w.op == Op::Fold {
            return self.fold(w.deadline);
        }
        let contents = attachments(w);
        run_threads(
            w,
            || (),
            |_, share, i, rng| {
                Ok(match w.op {
                    Op::Put | Op::Update => {
                        let variant = u64::from(w.op == Op::Update);
                        let size = w.batch.min(share.first + share.n - i);
                        if w.batch == 1 {
                            let idx = w.start + i;
                            let k = key(w.keyspace, idx);
                            let v = self.templates.doc("id", &k, idx, variant);
                            self.db.put(k, v).map_err(|e| e.to_string())?;
                        } else {
                            let mut b = WriteBatch::default();
                            for j in 0..size {
                                let idx = w.start + i + j;
                                let k = key(w.keyspace, idx);
                                let v = self.templates.doc("id", &k, idx, variant);
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
                    Op::AttPut => {
                        let k = key(w.keyspace, w.start + i);
                        self.db
                            .put(k, &contents[i as usize])
                            .map_err(|e| e.to_string())?;
                        1
                    }
                    Op::AttGet => {
                        let k = key(w.keyspace, w.start + i);
                        let v = self.db.get(&k).map_err(|e| e.to_string())?;
                        match v {
                            Some(v) if v.len() as u64 == w.att_bytes => 1,
                            Some(v) => return Err(format!("{k}: {} bytes", v.len())),
                            None => return Err(format!("missing {k}")),
                        }
                    }
                    Op::Fold => unreachable!("fold runs on its own"),
                })
            },
        )
    }
}

impl Floor {
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

// The PouchDB peer of `make bench` (pouchdb-node: the leveldb adapter).
//
// Speaks the same line protocol as bench/rocksdb_floor (see bench_external.erl):
//   open <dir> <templates file>  -> ok
//   run op=put ks=w1 start=0 count=N procs=P batch=B keys=K pattern=seq|random deadline_ms=D
//                                -> ok ops=N secs=S p50_us=X p99_us=Y
//   run op=replicate via=local count=N deadline_ms=D
//                                -> ok ops=N secs=S p50_us=0 p99_us=0
//   run op=att_put|att_get ks=a1m start=0 count=N procs=P att_bytes=B deadline_ms=D
//                                -> ok ops=N secs=S p50_us=X p99_us=Y
//   run op=changes_latency|replication_lag ks=cl count=N procs=P rate=R [flat=true] [via=local]
//       deadline_ms=D            -> ok ops=N secs=S p50_us=X p99_us=Y (write call -> change)
//   quiesce                      -> ok (leveldown has no way to wait for its compactions)
//   close                        -> ok
// Errors answer `error <why>`, an operation this peer cannot do `error unsupported <why>`.
// A document is template (i + variant) mod K with "id" and "seq" in front, under _id
// "<ks>-<i, 10 digits>". The attachment workloads put (putAttachment, a new document) or get
// (getAttachment) one attachment "blob" of B bytes (attachment(): the same bytes as the other
// peers) with Buffers. "procs" are concurrent async callers: Node runs them on one thread.
// End of input closes the database and ends the process.
'use strict';

const crypto = require('crypto');
const readline = require('readline');
const PouchDB = require('pouchdb-node');

let db = null;
let dbDir = null;
let templates = [];

const key = (ks, i) => `${ks}-${String(i).padStart(10, '0')}`;

function doc(ks, i, variant) {
  const k = key(ks, i);
  return Object.assign({ _id: k, id: k, seq: i }, templates[(i + variant) % templates.length]);
}

// The attachment workloads' one attachment a document (the same name in every peer).
const ATT_NAME = 'blob';
const ATT_TYPE = 'application/octet-stream';

// The `bytes` bytes of the attachment stored under `k`: the ChaCha20 keystream (RFC 8439 block
// function, counter and nonce 0: OpenSSL's 16-byte IV all zeros) keyed by `k` padded with zeros
// to 32 bytes, as bench_docs:attachment/2 and peer_protocol::attachment compute it.
function attachment(k, bytes) {
  const seed = Buffer.alloc(32);
  Buffer.from(k).copy(seed);
  return crypto.createCipheriv('chacha20', seed, Buffer.alloc(16)).update(Buffer.alloc(bytes));
}

function percentile(sorted, p) {
  if (sorted.length === 0) return 0;
  const idx = Math.min(sorted.length, Math.max(1, Math.ceil(sorted.length * p))) - 1;
  return Number(sorted[idx]) / 1000;
}

// Every id of keyspace `ks` in [start, start + count) with its current revision.
async function revisions(ks, start, count) {
  const revs = new Map();
  let startkey = key(ks, start);
  const endkey = key(ks, start + count - 1);
  for (;;) {
    const page = await db.allDocs({ startkey, endkey, limit: 1000, skip: revs.size ? 1 : 0 });
    for (const row of page.rows) revs.set(row.id, row.value.rev);
    if (page.rows.length < 1000) return revs;
    startkey = page.rows[page.rows.length - 1].id;
  }
}

async function fold(w) {
  const started = process.hrtime.bigint();
  const deadline = started + BigInt(w.deadline_ms) * 1000000n;
  let ops = 0;
  let startkey;
  while (process.hrtime.bigint() < deadline) {
    const opts = { include_docs: true, limit: 1000 };
    if (startkey !== undefined) Object.assign(opts, { startkey, skip: 1 });
    const page = await db.allDocs(opts);
    ops += page.rows.length;
    if (page.rows.length < 1000) break;
    startkey = page.rows[page.rows.length - 1].id;
  }
  return { ops, secs: Number(process.hrtime.bigint() - started) / 1e9, lat: [] };
}

// PouchDB-to-PouchDB: the whole database to a fresh leveldb one beside it (outside the store's
// directory, destroyed after), with `PouchDB.replicate` and its defaults (batches of 100), as
// an application would. Past the deadline the replication is cancelled and the documents
// written by then are reported.
async function replicate(w) {
  if (w.via === 'ws') throw new Error('unsupported PouchDB has no WebSocket replication');
  if (w.via !== 'local') {
    throw new Error('unsupported PouchDB to PouchDB over HTTP needs a PouchDB server ' +
      '(pouchdb-server), not in this harness');
  }
  const target = new PouchDB(`${dbDir}.replica`);
  await target.info();
  let written = 0;
  let timer;
  try {
    const started = process.hrtime.bigint();
    const replication = PouchDB.replicate(db, target);
    replication.on('change', (info) => { written = info.docs_written; });
    const expired = new Promise((resolve) => { timer = setTimeout(resolve, w.deadline_ms, null); });
    const result = await Promise.race([replication, expired]);
    const secs = Number(process.hrtime.bigint() - started) / 1e9;
    if (result === null) {
      replication.cancel();
      await replication.catch(() => {});
    } else if (!result.ok || result.docs_written < w.count) {
      throw new Error(`replicated ${result.docs_written} of ${w.count} documents ` +
        `(${result.doc_write_failures} write failures)`);
    } else {
      written = result.docs_written;
    }
    return { ops: written, secs, lat: [] };
  } finally {
    clearTimeout(timer);
    await target.destroy();
  }
}

// Latency from a write call to the change heard by a live `changes` feed of `listenDb`: `procs`
// writers together offer `rate` writes a second to `writeDb` (each paced on the clock, sleeping
// while ahead, as bench_changes.erl does), `count` documents in all (with `flat`, the 1 KB
// single-string documents of save_doc_flat_1). `ops` counts the changes heard.
async function changesLatency(w, writeDb, listenDb) {
  const sent = new Map();
  const lat = [];
  const started = process.hrtime.bigint();
  const deadline = started + BigInt(w.deadline_ms) * 1000000n;
  let last = started;
  let feed;
  const heard = new Promise((resolve, reject) => {
    feed = listenDb.changes({ live: true, since: 'now', include_docs: true });
    feed.on('change', (c) => {
      const t = sent.get(c.id);
      if (t === undefined) return;
      last = process.hrtime.bigint();
      lat.push(last - t);
      sent.delete(c.id);
      if (lat.length >= w.count || last > deadline) resolve();
    });
    feed.on('error', reject);
  });
  const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });
  const interval = (1e9 * w.procs) / w.rate;
  const writer = async (p) => {
    let next = Number(started) + (p * interval) / w.procs;
    for (let i = p; i < w.count; i += w.procs) {
      const ahead = next - Number(process.hrtime.bigint());
      if (ahead > 0) await sleep(Math.max(1, Math.floor(ahead / 1e6)));
      if (process.hrtime.bigint() > deadline) return;
      const k = key(w.ks, w.start + i);
      const d = w.flat === 'true' ? { _id: k, id: k, blob: 'x'.repeat(1000) } : doc(w.ks, w.start + i, 0);
      sent.set(k, process.hrtime.bigint());
      await writeDb.put(d);
      next += interval;
    }
  };
  const expired = new Promise((resolve) => { setTimeout(resolve, w.deadline_ms + 1000); });
  try {
    await Promise.all(Array.from({ length: w.procs }, (_, p) => writer(p)));
    await Promise.race([heard, expired]);
  } finally {
    feed.cancel();
  }
  lat.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return { ops: lat.length, secs: Number(last - started) / 1e9, lat };
}

// Continuous replication lag: `PouchDB.replicate` with `live: true` from a new database to
// another beside the store (destroyed after), writes offered to the first, changes heard on the
// second.
async function replicationLag(w) {
  if (w.via !== 'local') {
    throw new Error('unsupported PouchDB replicates live only between databases here ' +
      '(no WebSocket, no PouchDB server in this harness)');
  }
  const source = new PouchDB(`${dbDir}.lag-source`);
  const target = new PouchDB(`${dbDir}.lag-target`);
  await source.info();
  await target.info();
  const replication = PouchDB.replicate(source, target, { live: true });
  try {
    return await changesLatency(w, source, target);
  } finally {
    replication.cancel();
    await source.destroy();
    await target.destroy();
  }
}

async function run(w) {
  if (w.op === 'fold') return fold(w);
  if (w.op === 'replicate') return replicate(w);
  if (w.op === 'changes_latency') return changesLatency(w, db, db);
  if (w.op === 'replication_lag') return replicationLag(w);
  const revs = w.op === 'update' ? await revisions(w.ks, w.start, w.count) : null;
  const contents = w.op === 'att_put'
    ? Array.from({ length: w.count }, (_, i) => attachment(key(w.ks, w.start + i), w.att_bytes))
    : null;
  const started = process.hrtime.bigint();
  const deadline = started + BigInt(w.deadline_ms) * 1000000n;
  const per = Math.ceil(w.count / w.procs);
  const worker = async (t) => {
    const first = t * per;
    const n = Math.max(0, Math.min(per, w.count - first));
    const lat = [];
    let done = 0;
    let last = process.hrtime.bigint();
    while (done < n && last < deadline) {
      const i = first + done;
      if (w.op === 'put' && w.batch > 1) {
        const size = Math.min(w.batch, n - done);
        const docs = [];
        for (let j = 0; j < size; j++) docs.push(doc(w.ks, w.start + i + j, 0));
        const res = await db.bulkDocs(docs);
        for (const r of res) if (r.error) throw new Error(`${r.id}: ${r.message}`);
        done += size;
      } else if (w.op === 'put') {
        await db.put(doc(w.ks, w.start + i, 0));
        done += 1;
      } else if (w.op === 'update') {
        const d = doc(w.ks, w.start + i, 1);
        d._rev = revs.get(d._id);
        await db.put(d);
        done += 1;
      } else if (w.op === 'get') {
        const idx = w.pattern === 'random' ? Math.floor(Math.random() * w.keys) : i % w.keys;
        await db.get(key(w.ks, w.start + idx));
        done += 1;
      } else if (w.op === 'att_put') {
        await db.putAttachment(key(w.ks, w.start + i), ATT_NAME, contents[i], ATT_TYPE);
        done += 1;
      } else if (w.op === 'att_get') {
        const k = key(w.ks, w.start + i);
        const content = await db.getAttachment(k, ATT_NAME);
        if (content.length !== w.att_bytes) throw new Error(`${k}: ${content.length} bytes`);
        done += 1;
      } else {
        throw new Error(`unsupported op ${w.op}`);
      }
      const now = process.hrtime.bigint();
      lat.push(now - last);
      last = now;
    }
    return { done, lat };
  };
  const results = await Promise.all(Array.from({ length: w.procs }, (_, t) => worker(t)));
  const secs = Number(process.hrtime.bigint() - started) / 1e9;
  const lat = results.flatMap((r) => r.lat).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return { ops: results.reduce((s, r) => s + r.done, 0), secs, lat };
}

function parse(words) {
  const w = { op: '', ks: 'k', start: 0, count: 0, procs: 1, batch: 1, keys: 0,
              pattern: 'seq', deadline_ms: 60000, att_bytes: 0, rate: 1000 };
  for (const word of words) {
    const eq = word.indexOf('=');
    if (eq < 0) continue;
    const k = word.slice(0, eq);
    const v = word.slice(eq + 1);
    w[k] = typeof w[k] === 'number' ? Number(v) : v;
  }
  w.procs = Math.max(1, w.procs);
  w.batch = Math.max(1, w.batch);
  return w;
}

async function handle(line) {
  const [cmd, ...words] = line.trim().split(/\s+/);
  if (cmd === 'open') {
    const [dir, file] = words;
    templates = require('fs').readFileSync(file, 'utf8').split('\n')
      .filter((l) => l.length > 0).map((l) => JSON.parse(l));
    db = new PouchDB(dir);
    dbDir = dir;
    await db.info();
    return 'ok';
  }
  if (cmd === 'run') {
    const r = await run(parse(words));
    return `ok ops=${r.ops} secs=${r.secs.toFixed(6)} ` +
      `p50_us=${percentile(r.lat, 0.5).toFixed(3)} p99_us=${percentile(r.lat, 0.99).toFixed(3)}`;
  }
  if (cmd === 'quiesce') {
    return 'ok';
  }
  if (cmd === 'close') {
    if (db) await db.close();
    db = null;
    return 'ok';
  }
  throw new Error(`unknown command ${cmd}`);
}

async function main() {
  // The driver went away (Ctrl-C, crash): end quietly, as on end of input.
  process.stdout.on('error', () => process.exit(0));
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  for await (const line of rl) {
    let answer;
    try {
      answer = await handle(line);
    } catch (e) {
      answer = `error ${String(e && e.message ? e.message : e).replace(/\s+/g, ' ')}`;
    }
    process.stdout.write(`${answer}\n`);
  }
  if (db) await db.close();
}

main();

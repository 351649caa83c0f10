// PouchDB (pouchdb-node, leveldb) replicating with barrels over HTTP: push, pull and live sync,
// with conflicts and deleted documents, and attachments (text and binary, one of 1 MiB, kept
// through an update and deleted) both ways; and Barrel's own replicator (barreld's POST /_replicate)
// pulling from and pushing to a PouchDB server (express-pouchdb). Both sides must end with the
// same revision trees.
//
// Run by `make test` (test-pouchdb): node interop.js <path to barreld>. It starts barreld on a
// free loopback port with a fresh data directory, and stops it at the end.
'use strict';

const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const PouchDB = require('pouchdb-node');

const barreld = process.argv[2];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'barrel-pouch-'));
let server;
let failures = 0;
let passes = 0;

function assert(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${what}`);
}

async function http(method, url, body) {
  const res = await fetch(url, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

// The content of an attachment on a barrel, or null when it has none by that name.
async function barrelAttachment(url, id, name) {
  const res = await fetch(`${url}/${encodeURIComponent(id)}/${encodeURIComponent(name)}`);
  if (res.status === 404) return null;
  assert(res.status === 200, `GET attachment ${id}/${name}: ${res.status}`);
  return Buffer.from(await res.arrayBuffer());
}

async function pouchAttachment(db, id, name) {
  try {
    return await db.getAttachment(id, name);
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
}

// Both sides hold the same attachments for `id`: same names, digests and contents.
async function sameAttachments(pouch, url, id) {
  const local = await pouch.get(id);
  const remote = (await http('GET', `${url}/${encodeURIComponent(id)}`)).body;
  assert(local._rev === remote._rev, `${id}: same winner ${local._rev} / ${remote._rev}`);
  const names = Object.keys(local._attachments || {}).sort();
  const remoteNames = Object.keys(remote._attachments || {}).sort();
  assert(JSON.stringify(names) === JSON.stringify(remoteNames),
    `${id}: attachments ${JSON.stringify(names)} / ${JSON.stringify(remoteNames)}`);
  for (const name of names) {
    assert(local._attachments[name].digest === remote._attachments[name].digest, `${id}/${name}: same digest`);
    assert(local._attachments[name].content_type === remote._attachments[name].content_type,
      `${id}/${name}: same content type`);
    const a = await pouchAttachment(pouch, id, name);
    const b = await barrelAttachment(url, id, name);
    assert(a && b && a.equals(b), `${id}/${name}: same content (${a && a.length} / ${b && b.length} bytes)`);
  }
  return names;
}

// Deterministic bytes that do not compress.
function noise(len, seed) {
  const out = Buffer.alloc(len);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < len; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

function startServer() {
  return new Promise((resolve, reject) => {
    server = spawn(barreld, ['--data-dir', path.join(tmp, 'barrel'), '--port', '0'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    server.on('error', reject);
    server.on('exit', (code) => reject(new Error(`barreld exited with ${code}`)));
    readline.createInterface({ input: server.stdout }).on('line', (line) => {
      const m = line.match(/listening on (http:\/\/\S+)/);
      if (m) resolve(m[1]);
    });
  });
}

function local(name) {
  return new PouchDB(path.join(tmp, name));
}

// Every leaf revision of every document, deleted ones included: {id: [rev, ...]}.
async function pouchTrees(db) {
  const out = {};
  const changes = await db.changes({ style: 'all_docs' });
  for (const c of changes.results) {
    const leaves = await db.get(c.id, { open_revs: 'all' });
    out[c.id] = leaves.map((l) => (l.ok ? l.ok._rev : l.missing)).sort();
  }
  return out;
}

async function barrelTrees(url) {
  const out = {};
  const changes = await http('GET', `${url}/_changes?style=all_docs`);
  for (const c of changes.body.results) {
    const leaves = await http('GET', `${url}/${encodeURIComponent(c.id)}?open_revs=all`);
    out[c.id] = leaves.body.map((l) => (l.ok ? l.ok._rev : l.missing)).sort();
  }
  return out;
}

// The ids whose leaves differ between two {id: [rev]} maps (none: the same trees).
function treeDiff(a, b) {
  const ids = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...ids].filter((id) => JSON.stringify(a[id]) !== JSON.stringify(b[id]))
    .map((id) => `${id}: pouch ${JSON.stringify(a[id])} barrel ${JSON.stringify(b[id])}`);
}

async function sameTrees(pouch, url) {
  const a = await pouchTrees(pouch);
  const b = await barrelTrees(url);
  const diff = treeDiff(a, b);
  assert(diff.length === 0, `same revision trees; differ: ${diff.slice(0, 5).join('; ')}`);
  return Object.keys(a).length;
}

async function test(name, fn) {
  try {
    await fn();
    passes += 1;
    console.log(`  ok    ${name}`);
  } catch (e) {
    failures += 1;
    console.log(`  FAIL  ${name}\n        ${e.stack}`);
  }
}

// A PouchDB server (express-pouchdb over leveldb) in this process, on a free loopback port.
function startPouchServer() {
  const express = require('express');
  const dir = path.join(tmp, 'pouch-server') + path.sep;
  fs.mkdirSync(dir, { recursive: true });
  const ServerPouch = PouchDB.defaults({ prefix: dir });
  const app = express();
  app.use('/', require('express-pouchdb')(ServerPouch, {
    mode: 'minimumForPouchDB',
    logPath: path.join(tmp, 'pouch-server.log'),
  }));
  return new Promise((resolve) => {
    const srv = app.listen(0, '127.0.0.1', () => resolve({ srv, url: `http://127.0.0.1:${srv.address().port}` }));
  });
}

async function main() {
  const base = await startServer();
  console.log(`pouchdb interop against ${base}`);

  await test('push: PouchDB to a barrel, with a conflict and a deletion', async () => {
    const src = local('push');
    const docs = [];
    for (let i = 0; i < 250; i++) docs.push({ _id: `p${String(i).padStart(4, '0')}`, n: i, tags: ['a', i] });
    await src.bulkDocs(docs);
    const d = await src.get('p0001');
    await src.remove(d);
    // A conflict: a second branch written as replication would.
    await src.bulkDocs([{ _id: 'p0002', _rev: '1-ffffffffffffffffffffffffffffffff', n: -2 }], { new_edits: false });
    const url = `${base}/barrels/push`;
    const result = await PouchDB.replicate(src, url);
    assert(result.ok, 'replication ok');
    assert(result.docs_written === 251, `docs written: ${result.docs_written}`);
    const remote = await http('GET', `${url}/p0002?conflicts=true`);
    assert(remote.body._conflicts && remote.body._conflicts.length === 1, 'conflict replicated');
    assert((await http('GET', `${url}/p0001`)).status === 404, 'deletion replicated');
    const n = await sameTrees(src, url);
    assert(n === 250, `250 docs, got ${n}`);
    // A second run has nothing to do (checkpoint in _local/).
    const again = await PouchDB.replicate(src, url);
    assert(again.docs_written === 0, `second push wrote ${again.docs_written}`);
  });

  await test('pull: a barrel to PouchDB, with a conflict and a deletion', async () => {
    const url = `${base}/barrels/pull`;
    assert((await http('PUT', url)).status === 201, 'barrel created');
    const docs = [];
    for (let i = 0; i < 120; i++) docs.push({ _id: `q${i}`, v: `value ${i}` });
    const saved = await http('POST', `${url}/_bulk_docs`, { docs });
    assert(saved.status === 201 && saved.body.length === 120, 'bulk write');
    const r0 = saved.body[0].rev;
    await http('DELETE', `${url}/q0?rev=${r0}`);
    await http('POST', `${url}/_bulk_docs`, {
      new_edits: false,
      docs: [{ _id: 'q1', _rev: '1-00000000000000000000000000000001', v: 'other branch' }],
    });
    const dst = local('pull');
    const result = await PouchDB.replicate(url, dst);
    assert(result.ok, 'replication ok');
    const q1 = await dst.get('q1', { conflicts: true });
    assert(q1._conflicts && q1._conflicts.length === 1, 'conflict pulled');
    let gone = false;
    try { await dst.get('q0'); } catch (e) { gone = e.status === 404; }
    assert(gone, 'deletion pulled');
    const n = await sameTrees(dst, url);
    assert(n === 120, `120 docs, got ${n}`);
    // The conflict is resolved in PouchDB and pushed back: the barrel agrees.
    await dst.remove('q1', q1._conflicts[0]);
    await PouchDB.replicate(dst, url);
    const back = await http('GET', `${url}/q1?conflicts=true`);
    assert(!back.body._conflicts, 'resolution replicated');
    await sameTrees(dst, url);
  });

  await test("Barrel's replicator with a PouchDB server, both ways", async () => {
    const { srv, url: pserver } = await startPouchServer();
    try {
      const src = new PouchDB(`${pserver}/psrc`);
      const docs = [];
      for (let i = 0; i < 150; i++) docs.push({ _id: `s${i}`, i, nested: { list: [i, 'x', null] } });
      await src.bulkDocs(docs);
      await src.remove(await src.get('s0'));
      await src.bulkDocs([{ _id: 's1', _rev: '1-fffffffffffffffffffffffffffffff1', i: -1 }], { new_edits: false });
      // PouchDB server -> barrel.
      const pull = await http('POST', `${base}/_replicate`, { source: `${pserver}/psrc`, target: 'frompouch', create_target: true });
      assert(pull.status === 200 && pull.body.docs_written === 151, `pull: ${JSON.stringify(pull.body)}`);
      const n = await sameTrees(src, `${base}/barrels/frompouch`);
      assert(n === 150, `150 docs, got ${n}`);
      // Edits on the barrel side, then barrel -> a new PouchDB server database.
      const url = `${base}/barrels/frompouch`;
      const s2 = (await http('GET', `${url}/s2`)).body;
      await http('DELETE', `${url}/s2?rev=${s2._rev}`);
      await http('POST', `${url}/_bulk_docs`, { new_edits: false, docs: [{ _id: 's3', _rev: '1-fffffffffffffffffffffffffffffff3', i: -3 }] });
      const push = await http('POST', `${base}/_replicate`, { source: 'frompouch', target: `${pserver}/pdst`, create_target: true });
      assert(push.status === 200, `push: ${JSON.stringify(push.body)}`);
      const dst = new PouchDB(`${pserver}/pdst`);
      await sameTrees(dst, url);
      const s3 = await dst.get('s3', { conflicts: true });
      assert(s3._conflicts && s3._conflicts.length === 1, 'conflict pushed to the PouchDB server');
      // From the checkpoint: nothing more to send.
      const again = await http('POST', `${base}/_replicate`, { source: 'frompouch', target: `${pserver}/pdst` });
      assert(again.body.docs_written === 0, `second push wrote ${again.body.docs_written}`);
    } finally {
      srv.close();
    }
  });

  await test('attachments: PouchDB to a barrel, kept through an update, then deleted', async () => {
    const src = local('att-push');
    const big = noise(1024 * 1024, 7);
    await src.put({
      _id: 'a1',
      kind: 'both',
      _attachments: {
        'notes.txt': { content_type: 'text/plain', data: Buffer.from('héllo, barrel\n') },
        'big.bin': { content_type: 'application/octet-stream', data: big },
      },
    });
    await src.put({ _id: 'a2', _attachments: { 'small.bin': { content_type: 'image/png', data: noise(3000, 9) } } });
    const url = `${base}/barrels/att-push`;
    let result = await PouchDB.replicate(src, url);
    assert(result.ok && result.docs_written === 2, `first push: ${JSON.stringify(result)}`);
    let names = await sameAttachments(src, url, 'a1');
    assert(names.length === 2, `a1 has 2 attachments, got ${names}`);
    await sameAttachments(src, url, 'a2');
    // An update that keeps the attachments (stubs), then one that deletes an attachment.
    const a1 = await src.get('a1');
    a1.kind = 'edited';
    const kept = await src.put(a1);
    result = await PouchDB.replicate(src, url);
    assert(result.docs_written === 1, `update push: ${JSON.stringify(result)}`);
    const remote = (await http('GET', `${url}/a1`)).body;
    assert(remote.kind === 'edited' && remote._attachments['big.bin'].revpos === 1, 'stub kept the big attachment');
    await sameAttachments(src, url, 'a1');
    await src.removeAttachment('a1', 'big.bin', kept.rev);
    result = await PouchDB.replicate(src, url);
    assert(result.docs_written === 1, `delete push: ${JSON.stringify(result)}`);
    names = await sameAttachments(src, url, 'a1');
    assert(names.join() === 'notes.txt', `big.bin deleted, left ${names}`);
    assert((await barrelAttachment(url, 'a1', 'big.bin')) === null, 'big.bin gone from the barrel');
    assert((await sameTrees(src, url)) === 2, 'same trees');
  });

  await test('attachments: a barrel to PouchDB, kept through an update, then deleted', async () => {
    const url = `${base}/barrels/att-pull`;
    assert((await http('PUT', url)).status === 201, 'barrel created');
    const big = noise(1024 * 1024, 11);
    const put = async (path, type, data) => {
      const res = await fetch(`${url}/${path}`, { method: 'PUT', headers: { 'Content-Type': type }, body: data });
      const body = await res.json();
      assert(res.status === 201, `PUT ${path}: ${res.status} ${JSON.stringify(body)}`);
      return body.rev;
    };
    let rev = await put('b1/big.bin', 'application/octet-stream', big);
    rev = await put(`b1/readme.txt?rev=${rev}`, 'text/plain', Buffer.from('über text'));
    await http('POST', `${url}/_bulk_docs`, {
      docs: [{ _id: 'b2', _attachments: { 'x.json': { content_type: 'application/json', data: Buffer.from('{"a":1}').toString('base64') } } }],
    });
    const dst = local('att-pull');
    let result = await PouchDB.replicate(url, dst);
    assert(result.ok && result.docs_written === 2, `first pull: ${JSON.stringify(result)}`);
    let names = await sameAttachments(dst, url, 'b1');
    assert(names.length === 2, `b1 has 2 attachments, got ${names}`);
    await sameAttachments(dst, url, 'b2');
    // Updated on the barrel keeping its attachments (the fetched stubs), then one deleted.
    const b1 = (await http('GET', `${url}/b1`)).body;
    b1.edited = true;
    const saved = await http('PUT', `${url}/b1`, b1);
    assert(saved.status === 201, `update: ${JSON.stringify(saved.body)}`);
    result = await PouchDB.replicate(url, dst);
    assert(result.docs_written === 1, `update pull: ${JSON.stringify(result)}`);
    assert((await dst.get('b1')).edited === true, 'update pulled');
    await sameAttachments(dst, url, 'b1');
    const del = await http('DELETE', `${url}/b1/big.bin?rev=${saved.body.rev}`);
    assert(del.status === 200, `delete: ${JSON.stringify(del.body)}`);
    result = await PouchDB.replicate(url, dst);
    assert(result.docs_written === 1, `delete pull: ${JSON.stringify(result)}`);
    names = await sameAttachments(dst, url, 'b1');
    assert(names.join() === 'readme.txt', `big.bin deleted, left ${names}`);
    assert((await pouchAttachment(dst, 'b1', 'big.bin')) === null, 'big.bin gone from PouchDB');
    assert((await sameTrees(dst, url)) === 2, 'same trees');
  });

  await test('live sync both ways', async () => {
    const url = `${base}/barrels/live`;
    await http('PUT', url);
    const db = local('live');
    const sync = PouchDB.sync(db, url, { live: true, retry: true });
    try {
      await db.put({ _id: 'from-pouch', side: 'pouch' });
      await http('PUT', `${url}/from-barrel`, { side: 'barrel' });
      const deadline = Date.now() + 20000;
      let done = false;
      while (!done && Date.now() < deadline) {
        const inBarrel = (await http('GET', `${url}/from-pouch`)).status === 200;
        let inPouch = false;
        try { await db.get('from-barrel'); inPouch = true; } catch (e) { /* not yet */ }
        done = inBarrel && inPouch;
        if (!done) await new Promise((r) => setTimeout(r, 100));
      }
      assert(done, 'both writes reached the other side');
      // An edit on each side of the same doc makes a conflict on both.
      const doc = await db.get('from-barrel');
      const remote = (await http('GET', `${url}/from-barrel`)).body;
      await db.put({ ...doc, edited: 'pouch' });
      await http('PUT', `${url}/from-barrel?rev=${remote._rev}`, { side: 'barrel', edited: 'barrel' });
      let converged = false;
      while (!converged && Date.now() < deadline + 10000) {
        const a = await pouchTrees(db);
        const b = await barrelTrees(url);
        converged = treeDiff(a, b).length === 0 && a['from-barrel'] && a['from-barrel'].length === 2;
        if (!converged) await new Promise((r) => setTimeout(r, 100));
      }
      assert(converged, 'conflict on both sides, same trees');
      const winnerPouch = (await db.get('from-barrel'))._rev;
      const winnerBarrel = (await http('GET', `${url}/from-barrel`)).body._rev;
      assert(winnerPouch === winnerBarrel, `same winner ${winnerPouch} / ${winnerBarrel}`);
    } finally {
      sync.cancel();
    }
  });
}

main()
  .catch((e) => { failures += 1; console.log(`  FAIL  ${e.stack}`); })
  .finally(async () => {
    if (server) {
      server.removeAllListeners('exit');
      if (server.exitCode === null && server.signalCode === null) {
        // barreld writes its files until it has stopped (indexing what is queued, closing
        // RocksDB): removing its directory before that races with it.
        const exited = new Promise((resolve) => server.once('exit', resolve));
        server.kill('SIGTERM');
        const timer = setTimeout(() => server.kill('SIGKILL'), 10000);
        await exited;
        clearTimeout(timer);
      }
    }
    fs.rmSync(tmp, { recursive: true, force: true });
    // The summary line .ci/run counts (EUnit's shape).
    console.log(`  Failed: ${failures}.  Skipped: 0.  Passed: ${passes}.`);
    process.exit(failures === 0 ? 0 : 1);
  });

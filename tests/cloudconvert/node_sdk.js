// CloudConvert's official Node SDK (npm `cloudconvert`) against RunConvert. Its base URLs
// are fixed, so a subclass overrides its public `callWithBase` to send them here, as a
// user moving from CloudConvert would (the README's "moving from CloudConvert").
// Run by tests/cloudconvert.rs with NODE_PATH at the tests' own npm tree. Environment:
// RC_URL, RC_KEY, RC_PHOTO, RC_FILE_URL. Prints `ok - ...` per check; exits 1 on a failure.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const zlib = require('node:zlib');
const CloudConvert = require('cloudconvert');

const BASE = process.env.RC_URL.replace(/\/$/, '');

class RunConvert extends CloudConvert {
  callWithBase(baseURL, method, route, parameters, options) {
    const here = baseURL.includes('sync.')
      ? `${BASE}/sync/v2/`
      : `${BASE}/v2/`;
    return super.callWithBase(here, method, route, parameters, options);
  }
}

function ok(what) {
  console.log(`ok - ${what}`);
}

// Width and height of a PNG whose scanlines decode to the size its header says.
function pngSize(buf) {
  assert.equal(buf.subarray(0, 8).toString('latin1'), '\x89PNG\r\n\x1a\n', 'not a PNG');
  let pos = 8;
  let width, height, color;
  const idat = [];
  while (pos < buf.length) {
    const length = buf.readUInt32BE(pos);
    const kind = buf.subarray(pos + 4, pos + 8).toString('latin1');
    const body = buf.subarray(pos + 8, pos + 8 + length);
    if (kind === 'IHDR') {
      width = body.readUInt32BE(0);
      height = body.readUInt32BE(4);
      color = body[9];
    } else if (kind === 'IDAT') {
      idat.push(body);
    }
    pos += 12 + length;
  }
  const channels = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 }[color];
  assert.equal(zlib.inflateSync(Buffer.concat(idat)).length, height * (1 + width * channels));
  return [width, height];
}

async function statusOf(promise) {
  try {
    await promise;
    return 200;
  } catch (e) {
    return e.cause ? e.cause.status : String(e);
  }
}

async function main() {
  const cc = new RunConvert(process.env.RC_KEY);

  // Upload (the SDK's own multipart: an unquoted filename, the file last), convert with
  // an option beside `operation`, export; waited for on the sync API; downloaded.
  let job = await cc.jobs.create({
    tag: 'node-sdk',
    tasks: {
      'upload-my-file': { operation: 'import/upload' },
      'convert-my-file': { operation: 'convert', input: 'upload-my-file', output_format: 'png', width: 200 },
      'export-my-file': { operation: 'export/url', input: 'convert-my-file' },
    },
  });
  const upload = job.tasks.find(t => t.name === 'upload-my-file');
  await cc.tasks.upload(upload, fs.createReadStream(process.env.RC_PHOTO), 'my photo (1).jpg');
  job = await cc.jobs.wait(job.id);
  assert.equal(job.status, 'finished', JSON.stringify(job));
  const [file] = cc.jobs.getExportUrls(job);
  assert.equal(file.filename, 'my photo (1).png');
  const res = await fetch(file.url);
  const body = Buffer.from(await res.arrayBuffer());
  assert.deepEqual(pngSize(body), [200, 150]);
  assert.equal(Number(res.headers.get('content-length')), body.length);
  ok('upload with the SDK\'s own form, convert, export; jobs.wait; the download decodes as 200x150');

  // import/url; a task waited for; lists with filters; delete.
  job = await cc.jobs.create({
    tasks: {
      fetch: { operation: 'import/url', url: process.env.RC_FILE_URL },
      out: { operation: 'export/url', input: 'fetch' },
    },
  });
  const fetched = await cc.tasks.wait(job.tasks.find(t => t.name === 'fetch').id);
  assert.equal(fetched.status, 'finished');
  job = await cc.jobs.wait(job.id);
  const tagged = await cc.jobs.all({ 'filter[tag]': 'node-sdk', 'filter[status]': 'finished' });
  assert.deepEqual(tagged.map(j => j.tag), ['node-sdk']);
  const tasks = await cc.tasks.all({ 'filter[job_id]': job.id, 'filter[operation]': 'import/url' });
  assert.deepEqual(tasks.map(t => t.name), ['fetch']);
  assert.equal((await cc.jobs.get(job.id)).id, job.id);
  await cc.jobs.delete(job.id);
  assert.equal(await statusOf(cc.jobs.get(job.id)), 404);
  ok('import/url; tasks.wait; jobs.all and tasks.all with filters; jobs.get; jobs.delete');

  // Single tasks: created (POST /v2/import/url), waited for; a waiting upload cancelled;
  // deleted; users.me.
  let task = await cc.tasks.create('import/url', { url: process.env.RC_FILE_URL, filename: 'one.jpg' });
  task = await cc.tasks.wait(task.id);
  assert.equal(task.status, 'finished', JSON.stringify(task));
  assert.equal(task.result.files[0].filename, 'one.jpg');
  let up = await cc.tasks.create('import/upload');
  assert.equal(up.status, 'waiting');
  up = await cc.tasks.cancel(up.id);
  assert.equal(up.status, 'error');
  assert.equal(up.code, 'cancelled');
  assert.equal(await statusOf(cc.tasks.cancel(up.id)), 422);
  await cc.tasks.delete(up.id);
  assert.equal(await statusOf(cc.tasks.get(up.id)), 404);
  const me = await cc.users.me();
  assert.ok(me.username && 'credits' in me, JSON.stringify(me));
  ok('tasks.create and tasks.wait; tasks.cancel (again: 422); tasks.delete; users.me');

  // A webhook made with CloudConvert's `url`: its delivery passes webhooks.verify.
  const got = [];
  const receiver = http.createServer((req, res) => {
    const parts = [];
    req.on('data', c => parts.push(c));
    req.on('end', () => {
      got.push({ body: Buffer.concat(parts).toString('utf8'), signature: req.headers['cloudconvert-signature'] });
      res.end();
    });
  });
  await new Promise(r => receiver.listen(0, '127.0.0.1', r));
  const hookUrl = `http://127.0.0.1:${receiver.address().port}/hook`;
  const made = await fetch(`${BASE}/v2/webhooks`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${process.env.RC_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ url: hookUrl, events: ['job.finished'] }),
  }).then(r => r.json());
  const secret = made.data.signing_secret;
  job = await cc.jobs.create({ tasks: { in: { operation: 'import/url', url: process.env.RC_FILE_URL } } });
  job = await cc.jobs.wait(job.id);
  const until = Date.now() + 30000;
  let delivery;
  while (!(delivery = got.find(d => JSON.parse(d.body).job.id === job.id))) {
    assert.ok(Date.now() < until, `no delivery: ${got.length}`);
    await new Promise(r => setTimeout(r, 200));
  }
  receiver.close();
  assert.equal(cc.webhooks.verify(delivery.body, delivery.signature, secret), true);
  assert.equal(cc.webhooks.verify(delivery.body, delivery.signature, `${secret}x`), false);
  assert.equal(JSON.parse(delivery.body).job.status, 'finished');
  ok('a webhook with `url`: its CloudConvert-Signature passes webhooks.verify, another secret does not');

  // The errors the SDK surfaces: invalid data, a bad key, a missing job.
  assert.equal(await statusOf(cc.jobs.create({ tasks: { c: { operation: 'convert', output_format: 'png' } } })), 422);
  assert.equal(await statusOf(new RunConvert('not-a-key').jobs.all()), 401);
  assert.equal(await statusOf(cc.jobs.get('00000000-0000-0000-0000-000000000000')), 404);
  ok('invalid data 422, a bad key 401, a missing job 404, each thrown by the SDK');
}

main().catch(e => {
  console.log(`not ok - ${e.stack || e}`);
  process.exit(1);
});

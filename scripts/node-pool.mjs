// The Node.js peer for `csop bench --only compute`: a worker_threads pool of one worker per
// core running the same tasks as CSOP's compute pool, measured in the same run.
//
//   node scripts/node-pool.mjs [--quick]
//
// Prints one JSON object: the custom a+b round trip (p50/p95/p99 in µs), a+b with 64 in
// flight (tasks/s), and 100 CPU-heavy tasks on the pool against the same 100 on the main
// thread (ms, and the speedup). The pool is the usual shape: tasks go round-robin to the
// workers by postMessage (structured clone), each worker compiles a task's source once
// (new Function, cached by source) and posts back {id, result} or {id, error}.
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';

const quick = process.argv.includes('--quick');
const scale = (n) => (quick ? Math.max(1, Math.floor(n / 10)) : n);

const workerSource = `
const { parentPort } = require('node:worker_threads');
const compiled = new Map();
parentPort.on('message', ({ id, fn, args }) => {
  try {
    let f = compiled.get(fn);
    if (!f) { f = new Function('data', fn); compiled.set(fn, f); }
    parentPort.postMessage({ id, result: f(args) });
  } catch (error) {
    parentPort.postMessage({ id, error: String(error) });
  }
});`;

class Pool {
  constructor(size) {
    this.workers = [];
    this.pending = new Map();
    this.next = 0;
    this.ids = 0;
    for (let i = 0; i < size; i++) {
      const worker = new Worker(workerSource, { eval: true });
      worker.on('message', ({ id, result, error }) => {
        const settle = this.pending.get(id);
        this.pending.delete(id);
        if (error !== undefined) settle.reject(new Error(error)); else settle.resolve(result);
      });
      this.workers.push(worker);
    }
  }
  run(fn, args) {
    const id = this.ids++;
    const worker = this.workers[this.next];
    this.next = (this.next + 1) % this.workers.length;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, fn, args });
    });
  }
  close() { return Promise.all(this.workers.map((w) => w.terminate())); }
}

function percentiles(samples) {
  samples.sort((a, b) => a - b);
  const at = (q) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))];
  return { p50: at(0.5), p95: at(0.95), p99: at(0.99) };
}

const add = 'return data.a + data.b';
const heavy = 'let s=0; for (let i=0;i<2e6;i++) s+=i; return s';
const pool = new Pool(availableParallelism());

// One at a time: the round trip.
for (let i = 0; i < 2000; i++) await pool.run(add, { a: 1, b: 2 });
const rounds = scale(50000);
const samples = new Array(rounds);
for (let i = 0; i < rounds; i++) {
  const start = process.hrtime.bigint();
  if ((await pool.run(add, { a: 1, b: 2 })) !== 3) throw new Error('a+b gave a wrong answer');
  samples[i] = Number(process.hrtime.bigint() - start) / 1000;
}
const roundTrip = percentiles(samples);

// 64 in flight: a new task as each one ends.
const total = scale(200000);
const window = 64;
let sent = 0;
const started = process.hrtime.bigint();
await new Promise((resolve, reject) => {
  let done = 0;
  const launch = () => {
    sent++;
    pool.run(add, { a: 1, b: 2 }).then(() => {
      done++;
      if (done === total) resolve(); else if (sent < total) launch();
    }, reject);
  };
  for (let i = 0; i < Math.min(window, total); i++) launch();
});
const inFlight = total / (Number(process.hrtime.bigint() - started) / 1e9);

// 100 CPU-heavy tasks: on the pool, and one after another on this thread.
const heavyRuns = quick ? 3 : 15;
const f = new Function('data', heavy);
await Promise.all(Array.from({ length: 100 }, () => pool.run(heavy, null)));
const poolTimes = [];
const bareTimes = [];
for (let r = 0; r < heavyRuns; r++) {
  let start = process.hrtime.bigint();
  await Promise.all(Array.from({ length: 100 }, () => pool.run(heavy, null)));
  poolTimes.push(Number(process.hrtime.bigint() - start) / 1e6);
  start = process.hrtime.bigint();
  for (let i = 0; i < 100; i++) f(null);
  bareTimes.push(Number(process.hrtime.bigint() - start) / 1e6);
}
const poolHeavy = percentiles(poolTimes).p50;
const bareHeavy = percentiles(bareTimes).p50;

await pool.close();
console.log(JSON.stringify({
  node: process.version,
  workers: availableParallelism(),
  roundTrip,
  inFlight,
  heavy: { poolMilliseconds: poolHeavy, bareMilliseconds: bareHeavy, speedup: bareHeavy / poolHeavy },
}));

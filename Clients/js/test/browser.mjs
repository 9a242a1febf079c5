// Runs the pages of Tests/Browser/pages in headless Chromium against mock-server.mjs (not the
// real server): node Clients/js/test/browser.mjs [chromium binary]. Exit status 1 on failure.
// The real end-to-end run is the Swift test against `csop serve --static`; this one checks the
// client and the pages in a browser without a Swift build.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startMock } from './mock-server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const pages = path.join(here, '..', '..', '..', 'Tests', 'Browser', 'pages');
const chromium = process.argv[2] ?? 'chromium';
const token = 'good-token.for.tests';

const results = new Map();
const waiters = [];
const collector = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
        res.writeHead(204);
        res.end();
        if (req.method !== 'POST' || req.url !== '/test-results') return;
        const report = JSON.parse(body);
        results.set(report.page, report);
        for (const w of waiters.splice(0)) w();
    });
});
await new Promise((resolve) => collector.listen(0, '127.0.0.1', resolve));
const report = `http://127.0.0.1:${collector.address().port}/test-results`;

async function result(page, ms) {
    const deadline = Date.now() + ms;
    while (!results.has(page)) {
        if (Date.now() > deadline) return { page, ok: false, checks: [{ name: 'reported', ok: false, detail: 'no report' }] };
        await new Promise((resolve) => { waiters.push(resolve); setTimeout(resolve, 200); });
    }
    return results.get(page);
}

const browsers = [];
function open(url) {
    const profile = mkdtempSync(path.join(os.tmpdir(), 'csop-chromium-'));
    const child = spawn(chromium, ['--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run', `--user-data-dir=${profile}`, url], { stdio: 'ignore' });
    browsers.push({ child, profile });
    return child;
}

let mock = await startMock({ staticDir: pages, token });
const base = `http://127.0.0.1:${mock.port}`;
const run = Math.random().toString(36).slice(2, 8);
const query = (extra) => `token=${encodeURIComponent(token)}&report=${encodeURIComponent(report)}&run=${run}${extra}`;

const reports = [];
try {
    open(`${base}/basic.html?${query('')}`);
    reports.push(await result('basic', 30000));

    open(`${base}/pubsub.html?${query('&role=pub&wait=30000')}`);
    open(`${base}/pubsub.html?${query('&role=sub&wait=30000')}`);
    reports.push(await result('pubsub-sub', 35000), await result('pubsub-pub', 35000));

    open(`${base}/reconnect.html?${query('&wait=40000')}`);
    const readyBy = Date.now() + 20000;
    while (!mock.state.storage.has(`reconnect:${run}:ready`) && Date.now() < readyBy) await new Promise((r) => setTimeout(r, 50));
    const { port, state } = mock;
    await mock.close(1001);
    await new Promise((r) => setTimeout(r, 1500));
    mock = await startMock({ port, staticDir: pages, token, state });
    reports.push(await result('reconnect', 45000));
} finally {
    for (const { child, profile } of browsers) {
        child.kill('SIGKILL');
        setTimeout(() => rmSync(profile, { recursive: true, force: true }), 500);
    }
    await mock.close();
    collector.close();
}

let failed = 0;
for (const r of reports) {
    console.log(`${r.ok ? 'ok  ' : 'FAIL'} ${r.page}`);
    for (const c of r.checks) if (!c.ok || process.env.VERBOSE) console.log(`     ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail.slice(0, 400)}`);
    if (!r.ok) failed += 1;
}
console.log(`${reports.length - failed} passed, ${failed} failed`);
setTimeout(() => process.exit(failed ? 1 : 0), 600);

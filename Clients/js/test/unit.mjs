// Unit tests for the pure parts of csop.js and its protocol state machine, driven through a
// fake WebSocket. Run: node Clients/js/test/unit.mjs (exit status 1 on any failure).
import assert from 'node:assert/strict';
import {
    CSOP, backoffDelay, defaultSocketURL, parseAction, resolveSocketURL, retryCount, toCompat,
} from '../csop.js';

const tests = [];
function test(name, fn) {
    tests.push({ name, fn });
}

const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(predicate, what, ms = 1000) {
    const deadline = Date.now() + ms;
    while (!predicate()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await tick(1);
    }
}

// A WebSocket the test plays the server of. Every instance is kept in `sockets`.
function makeFake() {
    const sockets = [];
    class FakeWebSocket {
        constructor(url, protocols) {
            this.url = url;
            this.protocols = protocols;
            this.readyState = 0;
            this.sent = [];
            this.closedBy = null;
            sockets.push(this);
        }
        send(frame) {
            if (this.readyState !== 1) throw new Error('not open');
            this.sent.push(JSON.parse(frame));
        }
        close(code, reason) {
            this.readyState = 3;
            this.closedBy = { code, reason };
        }
        accept() {
            this.readyState = 1;
            this.onopen?.({});
        }
        reply(message) {
            this.onmessage?.({ data: JSON.stringify(message) });
        }
        drop(code = 1006, reason = '') {
            this.readyState = 3;
            this.onclose?.({ code, reason });
        }
        request(action) {
            return this.sent.find((r) => r.action === action && !r.answered);
        }
        answer(request, data) {
            request.answered = true;
            this.reply({ id: request.id, status: 'ok', data, duration: 0.1 });
        }
    }
    return { FakeWebSocket, sockets };
}

// Opens a client on a fake, plays the server's part of the handshake (the host.info probe
// and any re-subscriptions), and returns both.
async function connected(options = {}) {
    const { FakeWebSocket, sockets } = makeFake();
    const csop = new CSOP({ url: 'ws://server.test/v1/ws', WebSocket: FakeWebSocket, reconnect: { minDelay: 1, maxDelay: 4 }, ...options });
    const init = csop.init();
    await until(() => sockets.length === 1, 'a socket');
    const ws = sockets[0];
    ws.accept();
    await handshake(ws);
    await init;
    return { csop, sockets, ws };
}

let nextServerSub = 100;
async function handshake(ws, info = { version: '0.1.0', capabilities: [{ name: 'host' }, { name: 'storage' }, { name: 'sync' }] }) {
    await until(() => ws.request('host.info'), 'the host.info probe');
    ws.answer(ws.request('host.info'), info);
    let sub;
    while ((sub = ws.request('sync.subscribe'))) {
        ws.answer(sub, { subscribed: true, channel: sub.payload.channel ?? 'default', subscription: `sub_${nextServerSub++}` });
    }
    await tick();
}

test('parseAction follows the server rule', () => {
    assert.deepEqual(parseAction('storage.save'), { domain: 'storage', operation: 'save' });
    assert.deepEqual(parseAction('_a1._b2'), { domain: '_a1', operation: '_b2' });
    for (const bad of ['storage', 'storage.', '.save', 'a.b.c', '1a.b', 'a-b.c', '', null, 42, `${'a'.repeat(65)}.b`]) {
        assert.equal(parseAction(bad), null, String(bad));
    }
    assert.ok(parseAction(`${'a'.repeat(64)}.b`));
});

test('retryCount reads a number or {attempts}, within 0-10', () => {
    assert.equal(retryCount(undefined), 0);
    assert.equal(retryCount(3), 3);
    assert.equal(retryCount({ attempts: 2 }), 2);
    assert.equal(retryCount(99), 10);
    assert.equal(retryCount(-1), 0);
    assert.equal(retryCount('3'), 0);
});

test('backoff: full jitter under min(max, min x 2^n)', () => {
    assert.equal(backoffDelay(0, 100, 5000, () => 0), 0);
    assert.equal(backoffDelay(0, 100, 5000, () => 0.999999), 99);
    assert.equal(backoffDelay(3, 100, 5000, () => 0.5), 400);
    assert.equal(backoffDelay(6, 100, 5000, () => 0.999999), 4999);
    assert.equal(backoffDelay(1000, 100, 5000, () => 0.999999), 4999);
    for (let n = 0; n < 40; n++) {
        for (let i = 0; i < 50; i++) {
            const d = backoffDelay(n);
            assert.ok(d >= 0 && d < Math.min(5000, 100 * 2 ** n), `attempt ${n}: ${d}`);
        }
    }
});

test('default and explicit socket URLs', () => {
    assert.equal(defaultSocketURL('http://127.0.0.1:8080/v1/csop.js'), 'ws://127.0.0.1:8080/v1/ws');
    assert.equal(defaultSocketURL('https://example.com/v1/csop.js?x=1'), 'wss://example.com/v1/ws');
    assert.equal(defaultSocketURL('file:///tmp/csop.js'), null);
    assert.equal(defaultSocketURL('https://h/api/v1/csop.js'), 'wss://h/api/v1/ws');
    assert.equal(defaultSocketURL('http://h:1/static/csop.js'), 'ws://h:1/v1/ws');
    assert.equal(resolveSocketURL('/v1/ws', 'https://h:9/page.html'), 'wss://h:9/v1/ws');
    assert.equal(resolveSocketURL('http://h:1/v1/ws'), 'ws://h:1/v1/ws');
    assert.equal(resolveSocketURL('ws://h/v1/ws'), 'ws://h/v1/ws');
    assert.equal(resolveSocketURL('ftp://h/'), null);
});

test('compat: compute.execute data is the result; logs move up', () => {
    const r = toCompat('compute.execute', { id: 'a', status: 'ok', data: { result: '354224848179261915075', logs: ['x'] }, duration: 1 });
    assert.deepEqual(r, { id: 'a', status: 'ok', data: '354224848179261915075', logs: ['x'], duration: 1 });
    assert.equal(toCompat('compute.execute', { id: 'a', status: 'ok', data: { result: null } }).data, null);
    assert.equal(toCompat('compute.execute', { id: 'a', status: 'ok', data: { result: false } }).data, false);
});

test('compat: storage.list data is the keys; cursor moves up', () => {
    const r = toCompat('storage.list', { id: 'a', status: 'ok', data: { keys: ['a', 'b'], cursor: 'b' }, duration: 1 });
    assert.deepEqual(r.data, ['a', 'b']);
    assert.equal(r.cursor, 'b');
    assert.equal('cursor' in toCompat('storage.list', { status: 'ok', data: { keys: [] } }), false);
});

test('compat: compute.batch errors become message strings', () => {
    const r = toCompat('compute.batch', {
        status: 'ok',
        data: { total: 2, completed: 1, failed: 1, results: [
            { status: 'fulfilled', task: 'sum', result: 3 },
            { status: 'rejected', task: 'nope', error: { code: 'INVALID_TASK', message: 'unknown task', retry: false } },
        ] },
    });
    assert.deepEqual(r.data.results[0], { status: 'fulfilled', task: 'sum', result: 3 });
    assert.deepEqual(r.data.results[1], { status: 'rejected', task: 'nope', error: 'unknown task', code: 'INVALID_TASK' });
});

test('compat leaves errors and other actions alone', () => {
    const error = { id: 'a', status: 'error', error: { code: 'KEY_NOT_FOUND', message: 'm', retry: false }, duration: 1 };
    assert.equal(toCompat('storage.list', error), error);
    const other = { id: 'a', status: 'ok', data: { result: 1 } };
    assert.equal(toCompat('storage.get', other), other);
});

test('dispatch never throws: bad action, bad payload, before init', async () => {
    const csop = new CSOP({ url: 'ws://x/v1/ws', WebSocket: makeFake().FakeWebSocket });
    const bad = await csop.dispatch('nodot');
    assert.equal(bad.status, 'error');
    assert.equal(bad.error.code, 'INVALID_ACTION');
    assert.equal((await csop.dispatch({ toString() { throw new Error('no'); } })).error.code, 'INVALID_ACTION');
    assert.equal((await csop.dispatch(Symbol('x'))).error.code, 'INVALID_ACTION');
    assert.equal((await csop.dispatch('storage.get', 'x')).error.code, 'INVALID_PAYLOAD');
    assert.equal((await csop.dispatch('storage.get', { key: 'k' })).error.code, 'NOT_INITIALIZED');
    assert.equal((await csop.dispatch('storage.save', { key: 'k', data: 10n })).error.code, 'NOT_INITIALIZED');
});

test('local capabilities: methods, handle(), missing operation, thrown errors', async () => {
    const csop = new CSOP({ url: 'ws://x/v1/ws', WebSocket: makeFake().FakeWebSocket });
    csop.register('greeter', { async hello(p) { return `hello ${p.name}`; }, fail() { throw Object.assign(new Error('nope'), { code: 'KEY_NOT_FOUND' }); } });
    csop.register('echo', { handle: (operation, payload) => ({ operation, payload }) });
    const ok = await csop.dispatch('greeter.hello', { name: 'Ada' });
    assert.equal(ok.status, 'ok');
    assert.equal(ok.data, 'hello Ada');
    assert.equal(typeof ok.duration, 'number');
    assert.match(ok.id, /^c\d+_[0-9a-f]{12}$/);
    assert.deepEqual((await csop.dispatch('echo.anything', { a: 1 })).data, { operation: 'anything', payload: { a: 1 } });
    const missing = await csop.dispatch('greeter.bye');
    assert.equal(missing.error.code, 'OPERATION_NOT_FOUND');
    assert.equal((await csop.dispatch('greeter.toString')).error.code, 'OPERATION_NOT_FOUND');
    const failed = await csop.dispatch('greeter.fail', {}, { retry: 3 });
    assert.deepEqual(failed.error, { code: 'KEY_NOT_FOUND', message: 'nope', retry: false });
    assert.deepEqual(csop.info().capabilities.sort(), ['echo', 'greeter']);
    assert.equal(csop.getCapability('echo').handle.length, 2);
});

test('local capabilities: retries and timeout', async () => {
    const csop = new CSOP({ url: 'ws://x/v1/ws', WebSocket: makeFake().FakeWebSocket, random: () => 0 });
    let calls = 0;
    csop.register('flaky', {
        async once() {
            calls += 1;
            if (calls < 3) throw new Error('try again');
            return calls;
        },
        slow: () => new Promise((resolve) => setTimeout(() => resolve(1), 200)),
    });
    const r = await csop.dispatch('flaky.once', {}, { retry: 2 });
    assert.equal(r.data, 3);
    const t = await csop.dispatch('flaky.slow', {}, { timeout: 20 });
    assert.equal(t.error.code, 'TIMEOUT');
    assert.equal(t.error.retry, true);
});

test('init authenticates with subprotocols and learns the capabilities', async () => {
    const { csop, ws } = await connected({ token: 'header.payload.sig' });
    assert.equal(ws.url, 'ws://server.test/v1/ws');
    assert.deepEqual(ws.protocols, ['csop', 'csop.bearer.header.payload.sig']);
    const info = csop.info();
    assert.equal(info.initialized, true);
    assert.deepEqual(info.capabilities, ['host', 'storage', 'sync']);
    const { csop: anonymous, ws: ws2 } = await connected();
    assert.deepEqual(ws2.protocols, ['csop']);
    anonymous.close();
    csop.close();
});

test('responses are matched by id in any order; options pass through', async () => {
    const { csop, ws } = await connected({ compat: false });
    const a = csop.dispatch('storage.get', { key: 'a' }, { timeout: 1000, retry: 2 });
    const b = csop.dispatch('storage.get', { key: 'b' });
    await tick();
    const [ra, rb] = ws.sent.slice(-2);
    assert.deepEqual(ra.options, { timeout: 1000, retry: 2 });
    assert.equal('options' in rb, false);
    assert.notEqual(ra.id, rb.id);
    ws.reply({ id: 'unknown', status: 'ok', data: 0 });
    ws.reply({ id: rb.id, status: 'ok', data: 'B', duration: 1 });
    ws.reply({ id: ra.id, status: 'ok', data: 'A', duration: 1 });
    assert.equal((await a).data, 'A');
    assert.equal((await b).data, 'B');
    assert.equal((await a).id, ra.id);
    csop.close();
});

test('compat applies to server answers, and can be turned off', async () => {
    for (const compat of [true, false]) {
        const { csop, ws } = await connected({ compat });
        const p = csop.dispatch('compute.execute', { task: 'fibonacci', data: { n: 10 } });
        await tick();
        ws.answer(ws.request('compute.execute'), { result: '55' });
        const r = await p;
        assert.deepEqual(r.data, compat ? '55' : { result: '55' });
        const q = csop.dispatch('storage.list', {});
        await tick();
        ws.answer(ws.request('storage.list'), { keys: ['k'] });
        assert.deepEqual((await q).data, compat ? ['k'] : { keys: ['k'] });
        csop.close();
    }
});

test('subscribe: the callback is kept in the page and gets its events', async () => {
    const { csop, ws } = await connected();
    const got = [];
    const all = [];
    csop.on('event', (e) => all.push(e));
    const p = csop.dispatch('sync.subscribe', { channel: 'news', callback: (e) => got.push(e) });
    await tick();
    const req = ws.request('sync.subscribe');
    assert.deepEqual(req.payload, { channel: 'news' });
    // The event overtakes the subscribe's answer.
    ws.reply({ type: 'event', subscription: 's1', channel: 'news', event: 'early', data: 1 });
    assert.equal(got.length, 0);
    ws.answer(req, { subscribed: true, channel: 'news', subscription: 's1' });
    const r = await p;
    assert.equal(r.data.subscription, 's1');
    ws.reply({ type: 'event', subscription: 's1', channel: 'news', event: 'hello', data: { text: 'hi' } });
    ws.reply({ type: 'event', subscription: 'other', channel: 'x', event: 'e', data: null });
    assert.deepEqual(got.map((e) => e.event), ['early', 'hello']);
    assert.deepEqual(all.map((e) => e.event), ['early', 'hello', 'e']);
    const u = csop.dispatch('sync.unsubscribe', { subscription: 's1' });
    await tick();
    ws.answer(ws.request('sync.unsubscribe'), { unsubscribed: true, channel: 'news', count: 1 });
    assert.equal((await u).status, 'ok');
    ws.reply({ type: 'event', subscription: 's1', channel: 'news', event: 'late', data: 1 });
    assert.equal(got.length, 2);
    csop.close();
});

test('a subscription a plugin reload ended is renewed under the same handle', async () => {
    const { csop, ws } = await connected();
    const got = [];
    const p = csop.dispatch('sync.subscribe', { channel: 'news', callback: (e) => got.push(e) });
    await tick();
    ws.answer(ws.request('sync.subscribe'), { subscribed: true, channel: 'news', subscription: 'sub_1' });
    assert.equal((await p).data.subscription, 'sub_1');
    const ended = [];
    csop.on('event', (e) => { if (e.event === 'subscription.ended') ended.push(e); });
    ws.reply({ type: 'event', subscription: 'sub_1', event: 'subscription.ended', data: { plugin: 'sync', change: 'replaced', reason: 'r' } });
    await tick();
    assert.deepEqual(ended.map((e) => e.subscription), ['sub_1']);
    const again = ws.sent.filter((m) => m.action === 'sync.subscribe');
    assert.equal(again.length, 2);
    assert.deepEqual(again[1].payload, { channel: 'news' });
    assert.equal(again[1].options?.retry, 5, 'the server retries while a crashed plugin restarts');
    ws.answer(again[1], { subscribed: true, channel: 'news', subscription: 'sub_9' });
    await tick();
    ws.reply({ type: 'event', subscription: 'sub_9', channel: 'news', event: 'after', data: 1 });
    assert.deepEqual(got.filter((e) => e.event === 'after').map((e) => e.subscription), ['sub_1']);
    csop.close();
});

test('a refused token is final: init rejects, dispatch answers it, no reconnect', async () => {
    const { FakeWebSocket, sockets } = makeFake();
    const csop = new CSOP({ url: 'ws://server.test/v1/ws', token: 'bad', WebSocket: FakeWebSocket, reconnect: { minDelay: 1, maxDelay: 2 } });
    csop.on('error', () => {});
    const init = csop.init();
    await until(() => sockets.length === 1, 'a socket');
    sockets[0].accept();
    sockets[0].reply({ type: 'error', error: { code: 'UNAUTHENTICATED', message: 'the token is not valid', retry: false } });
    sockets[0].drop(4401, 'unauthenticated');
    await assert.rejects(init, (e) => e.code === 'UNAUTHENTICATED' && e.message === 'the token is not valid');
    const r = await csop.dispatch('storage.get', { key: 'a' });
    assert.deepEqual(r.error, { code: 'UNAUTHENTICATED', message: 'the token is not valid', retry: false });
    await tick(20);
    assert.equal(sockets.length, 1);
    csop.close();
});

test('a first connection that fails rejects init with NOT_CONNECTED', async () => {
    const { FakeWebSocket, sockets } = makeFake();
    const csop = new CSOP({ url: 'ws://server.test/v1/ws', WebSocket: FakeWebSocket });
    const init = csop.init();
    const early = csop.dispatch('storage.get', { key: 'a' });
    await until(() => sockets.length === 1, 'a socket');
    sockets[0].drop(1006);
    await assert.rejects(init, (e) => e.code === 'NOT_CONNECTED');
    assert.equal((await early).error.code, 'NOT_CONNECTED');
    assert.equal((await csop.dispatch('storage.get', { key: 'a' })).error.code, 'NOT_INITIALIZED');
});

test('a storage watch is renewed after a reconnect under the same handle, and unwatch reaches the new id', async () => {
    const { csop, sockets, ws } = await connected();
    const got = [];
    const p = csop.dispatch('storage.watch', { prefix: 'doc:', callback: (e) => got.push(e) });
    await tick();
    const watch = ws.request('storage.watch');
    assert.deepEqual(watch.payload, { prefix: 'doc:' });
    ws.answer(watch, { watching: true, subscription: 'watch_1', prefix: 'doc:' });
    const handle = (await p).data.subscription;
    assert.equal(handle, 'watch_1');
    ws.reply({ type: 'event', subscription: 'watch_1', event: 'storage.changed', data: { key: 'doc:1', version: 1, deleted: false } });

    ws.drop(1001, 'going away');
    await until(() => sockets.length === 2, 'a second socket');
    const ws2 = sockets[1];
    ws2.accept();
    await until(() => ws2.request('storage.watch'), 'the renewed watch');
    const renewed = ws2.request('storage.watch');
    assert.deepEqual(renewed.payload, { prefix: 'doc:' });
    assert.equal(ws2.sent.some((m) => m.action === 'sync.subscribe'), false);
    ws2.answer(renewed, { watching: true, subscription: 'watch_7', prefix: 'doc:' });
    ws2.answer(ws2.request('host.info'), { capabilities: [] });
    await tick();
    ws2.reply({ type: 'event', subscription: 'watch_7', event: 'storage.changed', data: { key: 'doc:2', version: 1, deleted: false } });
    assert.deepEqual(got.map((e) => [e.subscription, e.data.key]), [['watch_1', 'doc:1'], ['watch_1', 'doc:2']]);

    // A sync unsubscribe by channel does not take the watch; storage.unwatch maps the handle.
    const byChannel = csop.dispatch('sync.unsubscribe', { channel: 'doc:' });
    await tick();
    ws2.answer(ws2.request('sync.unsubscribe'), { unsubscribed: false, channel: 'doc:', count: 0 });
    await byChannel;
    const u = csop.dispatch('storage.unwatch', { subscription: handle });
    await tick();
    assert.equal(ws2.request('storage.unwatch').payload.subscription, 'watch_7');
    ws2.answer(ws2.request('storage.unwatch'), { unwatched: true, subscription: 'watch_7' });
    assert.equal((await u).status, 'ok');
    ws2.reply({ type: 'event', subscription: 'watch_7', event: 'storage.changed', data: { key: 'doc:3', version: 1, deleted: false } });
    assert.equal(got.length, 2);
    csop.close();
});

test('reconnect: in-flight answers NOT_CONNECTED or is resent; subscriptions come back under the same handle', async () => {
    const { csop, sockets, ws } = await connected();
    const got = [];
    const p = csop.dispatch('sync.subscribe', { channel: 'news', events: ['hello'], callback: (e) => got.push(e) });
    await tick();
    ws.answer(ws.request('sync.subscribe'), { subscribed: true, channel: 'news', subscription: 'first' });
    const handle = (await p).data.subscription;
    assert.equal(handle, 'first');

    const lost = csop.dispatch('storage.get', { key: 'lost' });
    const resent = csop.dispatch('storage.get', { key: 'resent' }, { retry: 1 });
    await tick();
    const closes = [];
    csop.on('close', (e) => closes.push(e));
    ws.drop(1001, 'going away');
    const r = await lost;
    assert.equal(r.error.code, 'NOT_CONNECTED');
    assert.equal(r.error.retry, true);
    assert.equal(closes[0].final, false);
    const queued = csop.dispatch('storage.get', { key: 'queued' });

    await until(() => sockets.length === 2, 'a second socket');
    const ws2 = sockets[1];
    ws2.accept();
    await until(() => ws2.request('sync.subscribe'), 're-subscription');
    const resub = ws2.request('sync.subscribe');
    assert.deepEqual(resub.payload, { channel: 'news', events: ['hello'] });
    // Nothing of the app's is sent before the connection is restored.
    assert.equal(ws2.sent.some((m) => m.action === 'storage.get'), false);
    ws2.reply({ type: 'event', subscription: 'second', channel: 'news', event: 'hello', data: 0 });
    ws2.answer(resub, { subscribed: true, channel: 'news', subscription: 'second' });
    ws2.answer(ws2.request('host.info'), { capabilities: [] });
    await until(() => ws2.sent.filter((m) => m.action === 'storage.get').length === 2, 'the resent and queued requests');
    const [again, later] = ws2.sent.filter((m) => m.action === 'storage.get');
    assert.equal(again.payload.key, 'resent');
    assert.equal(later.payload.key, 'queued');
    ws2.answer(again, 1);
    ws2.answer(later, 2);
    assert.equal((await resent).data, 1);
    assert.equal((await queued).data, 2);

    ws2.reply({ type: 'event', subscription: 'second', channel: 'news', event: 'hello', data: 1 });
    assert.deepEqual(got.map((e) => [e.subscription, e.data]), [['first', 0], ['first', 1]]);

    const u = csop.dispatch('sync.unsubscribe', { subscription: handle });
    await tick();
    assert.equal(ws2.request('sync.unsubscribe').payload.subscription, 'second');
    ws2.answer(ws2.request('sync.unsubscribe'), { unsubscribed: true, channel: 'news', count: 1 });
    await u;

    // A server that reuses ids on a new connection does not take over an old handle.
    ws2.drop(1001);
    await until(() => sockets.length === 3, 'a third socket');
    sockets[2].accept();
    await handshake(sockets[2]);
    const s2 = csop.dispatch('sync.subscribe', { channel: 'a', callback() {} });
    await tick();
    sockets[2].answer(sockets[2].request('sync.subscribe'), { subscribed: true, channel: 'a', subscription: 'x' });
    assert.equal((await s2).data.subscription, 'x');
    sockets[2].drop(1001);
    await until(() => sockets.length === 4, 'a fourth socket');
    sockets[3].accept();
    await until(() => sockets[3].request('sync.subscribe'), 're-subscription');
    sockets[3].answer(sockets[3].request('sync.subscribe'), { subscribed: true, channel: 'a', subscription: 'y' });
    await handshake(sockets[3]);
    const s3 = csop.dispatch('sync.subscribe', { channel: 'b', callback() {} });
    await tick();
    sockets[3].answer(sockets[3].request('sync.subscribe'), { subscribed: true, channel: 'b', subscription: 'x' });
    const third = (await s3).data.subscription;
    assert.notEqual(third, 'x');
    csop.close();
});

test('a channel with history is re-subscribed from the last offset delivered, nothing twice', async () => {
    const { csop, sockets, ws } = await connected();
    const got = [];
    const p = csop.dispatch('sync.subscribe', { channel: 'feed', callback: (e) => got.push(e) });
    await tick();
    ws.answer(ws.request('sync.subscribe'), { subscribed: true, channel: 'feed', subscription: 'h1', epoch: 'e1', offset: 4 });
    assert.equal((await p).data.subscription, 'h1');
    for (const offset of [5, 6]) ws.reply({ type: 'event', subscription: 'h1', channel: 'feed', event: 'n', data: offset, offset, epoch: 'e1' });
    ws.drop(1006);
    await until(() => sockets.length === 2, 'a second socket');
    const ws2 = sockets[1];
    ws2.accept();
    await until(() => ws2.request('sync.subscribe'), 're-subscription');
    const resub = ws2.request('sync.subscribe');
    assert.deepEqual(resub.payload, { channel: 'feed', since: { offset: 6, epoch: 'e1' } });
    ws2.answer(resub, { subscribed: true, channel: 'feed', subscription: 'h2', epoch: 'e1', offset: 9, recovered: true });
    ws2.answer(ws2.request('host.info'), { capabilities: [] });
    await tick(); // A browser runs each WebSocket message as a task of its own.
    // The backlog (7–9), one repeated message, then live ones: each once, in order.
    for (const offset of [7, 8, 9, 8, 10]) ws2.reply({ type: 'event', subscription: 'h2', channel: 'feed', event: 'n', data: offset, offset, epoch: 'e1' });
    await tick();
    assert.deepEqual(got.map((e) => [e.subscription, e.offset]), [['h1', 5], ['h1', 6], ['h1', 7], ['h1', 8], ['h1', 9], ['h1', 10]]);

    // A history that no longer reaches back: the app is told, and goes on from the new top.
    ws2.drop(1006);
    await until(() => sockets.length === 3, 'a third socket');
    sockets[2].accept();
    await until(() => sockets[2].request('sync.subscribe'), 're-subscription');
    const again = sockets[2].request('sync.subscribe');
    assert.deepEqual(again.payload.since, { offset: 10, epoch: 'e1' });
    sockets[2].answer(again, { subscribed: true, channel: 'feed', subscription: 'h3', epoch: 'e2', offset: 3, recovered: false });
    sockets[2].answer(sockets[2].request('host.info'), { capabilities: [] });
    await tick();
    sockets[2].reply({ type: 'event', subscription: 'h3', channel: 'feed', event: 'n', data: 4, offset: 4, epoch: 'e2' });
    await tick();
    const tail = got.slice(6);
    assert.equal(tail[0].event, 'sync.recovery');
    assert.equal(tail[0].subscription, 'h1');
    assert.deepEqual(tail[0].data.recovered, false);
    assert.deepEqual(tail.slice(1).map((e) => [e.epoch, e.offset]), [['e2', 4]]);
    csop.close();
});

test('requests waiting for a connection answer NOT_CONNECTED after their timeout', async () => {
    const { csop, ws } = await connected({ reconnect: { minDelay: 10000, maxDelay: 10000 }, random: () => 0.99 });
    ws.drop(1006);
    const started = Date.now();
    const r = await csop.dispatch('storage.get', { key: 'a' }, { timeout: 40 });
    assert.equal(r.error.code, 'NOT_CONNECTED');
    assert.equal(r.error.retry, true);
    assert.ok(Date.now() - started >= 35);
    csop.close();
    assert.equal((await csop.dispatch('storage.get', { key: 'a' })).error.code, 'NOT_CONNECTED');
});

test('close 1009: the biggest request in flight answers INVALID_PAYLOAD', async () => {
    const { csop, sockets, ws } = await connected();
    const small = csop.dispatch('storage.get', { key: 'a' });
    const big = csop.dispatch('storage.save', { key: 'b', data: 'x'.repeat(5000) });
    await tick();
    ws.drop(1009, 'message too big');
    assert.equal((await big).error.code, 'INVALID_PAYLOAD');
    assert.equal((await small).error.code, 'NOT_CONNECTED');
    await until(() => sockets.length === 2, 'a reconnect after 1009');
    csop.close();
});

test('close 4403 is final too', async () => {
    const { csop, sockets, ws } = await connected();
    csop.on('error', () => {});
    const p = csop.dispatch('storage.get', { key: 'a' }, { retry: 3 });
    await tick();
    ws.drop(4403, 'forbidden');
    assert.equal((await p).error.code, 'FORBIDDEN');
    await tick(20);
    assert.equal(sockets.length, 1);
    assert.equal((await csop.dispatch('storage.get', {})).error.code, 'FORBIDDEN');
});

test('unsubscribe by channel drops every callback of the channel', async () => {
    const { csop, ws } = await connected();
    const got = [];
    for (const name of ['a', 'b']) {
        const p = csop.dispatch('sync.subscribe', { channel: 'room', callback: () => got.push(name) });
        await tick();
        ws.answer(ws.request('sync.subscribe'), { subscribed: true, channel: 'room', subscription: `room_${name}` });
        await p;
    }
    ws.reply({ type: 'event', subscription: 'room_a', channel: 'room', event: 'e', data: 1 });
    ws.reply({ type: 'event', subscription: 'room_b', channel: 'room', event: 'e', data: 1 });
    const u = csop.dispatch('sync.unsubscribe', { channel: 'room' });
    await tick();
    ws.answer(ws.request('sync.unsubscribe'), { unsubscribed: true, channel: 'room', count: 2 });
    await u;
    ws.reply({ type: 'event', subscription: 'room_a', channel: 'room', event: 'e', data: 2 });
    assert.deepEqual(got, ['a', 'b']);
    csop.close();
});

test('a failed re-subscription is reported, and its unsubscribe answers in the page', async () => {
    const { csop, sockets, ws } = await connected();
    const errors = [];
    csop.on('error', (e) => errors.push(e));
    const p = csop.dispatch('sync.subscribe', { channel: 'gone', callback() {} });
    await tick();
    ws.answer(ws.request('sync.subscribe'), { subscribed: true, channel: 'gone', subscription: 'g1' });
    await p;
    ws.drop(1001);
    await until(() => sockets.length === 2, 'a second socket');
    const ws2 = sockets[1];
    ws2.accept();
    await until(() => ws2.request('sync.subscribe'), 're-subscription');
    const resub = ws2.request('sync.subscribe');
    resub.answered = true;
    ws2.reply({ id: resub.id, status: 'error', error: { code: 'SUBSCRIPTION_FAILED', message: 'too many', retry: false }, duration: 1 });
    ws2.answer(ws2.request('host.info'), {});
    await tick();
    assert.equal(errors[0].code, 'SUBSCRIPTION_FAILED');
    assert.equal(errors[0].subscription, 'g1');
    const u = await csop.dispatch('sync.unsubscribe', { subscription: 'g1' });
    assert.deepEqual(u.data, { unsubscribed: true, channel: 'gone', count: 1 });
    assert.equal(ws2.request('sync.unsubscribe'), undefined);
    csop.close();
});

test('a token function is asked before every connection', async () => {
    let asked = 0;
    const { csop, sockets, ws } = await connected({ token: async () => `t${++asked}` });
    assert.deepEqual(ws.protocols, ['csop', 'csop.bearer.t1']);
    ws.drop(1006);
    await until(() => sockets.length === 2, 'a second socket');
    assert.deepEqual(sockets[1].protocols, ['csop', 'csop.bearer.t2']);
    csop.close();
});

test('init after a refused token starts afresh', async () => {
    const { FakeWebSocket, sockets } = makeFake();
    const csop = new CSOP({ url: 'ws://server.test/v1/ws', WebSocket: FakeWebSocket });
    csop.on('error', () => {});
    const first = csop.init();
    await until(() => sockets.length === 1, 'a socket');
    sockets[0].accept();
    sockets[0].drop(4401);
    await assert.rejects(first, (e) => e.code === 'UNAUTHENTICATED');
    const second = csop.init();
    await until(() => sockets.length === 2, 'a second socket');
    sockets[1].accept();
    await handshake(sockets[1]);
    await second;
    assert.equal(csop.info().connected, true);
    csop.close();
});

test('ids are unique across many requests', () => {
    const csop = new CSOP({ url: 'ws://x/v1/ws', WebSocket: makeFake().FakeWebSocket });
    const seen = new Set();
    for (let i = 0; i < 10000; i++) seen.add(csop._nextId());
    assert.equal(seen.size, 10000);
});

test('putStream and getStream: the HTTP URL, token, options and answers', async () => {
    const calls = [];
    const saved = globalThis.fetch;
    globalThis.fetch = async (url, init) => {
        calls.push({ url: String(url), init });
        if (init.method === 'PUT') return new Response(JSON.stringify({ id: 'srv', status: 'ok', data: { size: 3 } }), { status: 200 });
        if (String(url).includes('missing')) {
            return new Response(JSON.stringify({ status: 'error', error: { code: 'KEY_NOT_FOUND', message: 'no', retry: false } }), { status: 404 });
        }
        return new Response(new Uint8Array([1, 2, 3]), { status: 200, headers: { 'content-length': '3', etag: '"4"' } });
    };
    try {
        const csop = new CSOP({ url: 'wss://example.test/v1/ws', token: async () => 'tok', WebSocket: makeFake().FakeWebSocket });
        const put = await csop.putStream('a/b c', 'xyz', { ttl: 5, ifVersion: 2 });
        assert.equal(put.status, 'ok');
        assert.equal(calls[0].url, 'https://example.test/v1/streams/a%2Fb%20c?ttl=5&ifVersion=2');
        assert.equal(calls[0].init.headers.authorization, 'Bearer tok');
        const got = await csop.getStream('k');
        assert.equal(got.status, 'ok');
        assert.deepEqual([got.data.size, got.data.version], [3, 4]);
        assert.deepEqual([...new Uint8Array(await got.data.response.arrayBuffer())], [1, 2, 3]);
        assert.equal(calls[1].url, 'https://example.test/v1/streams/k');
        const missing = await csop.getStream('missing');
        assert.deepEqual([missing.status, missing.error.code], ['error', 'KEY_NOT_FOUND']);
        assert.equal((await csop.putStream('', 'x')).error.code, 'INVALID_PAYLOAD');
        globalThis.fetch = async () => { throw new TypeError('connection refused'); };
        const down = await csop.getStream('k');
        assert.deepEqual([down.error.code, down.error.retry], ['NOT_CONNECTED', true]);
    } finally {
        globalThis.fetch = saved;
    }
});

let failed = 0;
for (const { name, fn } of tests) {
    try {
        await fn();
        console.log(`ok   ${name}`);
    } catch (error) {
        failed += 1;
        console.log(`FAIL ${name}\n     ${error?.stack ?? error}`);
    }
}
console.log(`${tests.length - failed}/${tests.length} passed`);
process.exit(failed ? 1 : 0);

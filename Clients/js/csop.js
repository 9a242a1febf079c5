// CSOP browser client: one ES module, no dependencies, no build step.
// Served by `csop serve` at /v1/csop.js; the types and contracts are in csop.d.ts beside it.
//
// It keeps the API of the original browser CSOP library (new CSOP(), init(), dispatch(),
// register(), getCapability(), info()) and sends every domain that is not registered in the
// page to a CSOP server over one WebSocket (GET /v1/ws).
//
// Differences from the original (also in README.md, "Differences from the original"):
// - The constructor takes connection options ({url, token, compat, reconnect, timeout,
//   WebSocket}); init(config) ignores `config`: storage, compute and sync are configured in
//   the server's plugins.d.
// - dispatch() never throws. Before init() a server domain answers NOT_INITIALIZED (the
//   original threw); page-local capabilities answer without init().
// - With compat on (the default) answers are reshaped to what the original's apps read:
//   compute.execute data is the task's value (the server's data.result; `logs` and
//   `logsTruncated` move to the response's top level); storage.list data is the array of
//   keys (the server's data.keys; `cursor` moves to the response's top level);
//   compute.batch results[].error is the error's message string (its code in
//   results[].code). Everything else is the server's answer as is, which is a superset of
//   the original's: storage.save's `location` is "local" | "cloud" (not "indexeddb" |
//   "turso") and carries `version`; events carry `type`, `subscription`, `channel` and
//   `origin` besides `event`, `data` and `timestamp`; sync.subscribe answers a
//   `subscription` id; error responses carry `duration`, a fractional number of ms.
// - Numbers are JavaScript numbers: an integer past 2^53 that the server keeps exact
//   arrives rounded (built-in tasks answer big numbers as decimal strings).
// - Options other than the ones the server takes are refused by the server
//   (INVALID_PAYLOAD), as in `csop run`; the original ignored them.

export const VERSION = '0.1.0';

const OPEN = 1;
const FINAL_CLOSE_CODES = new Set([4401, 4403]);
const DEFAULT_ATTEMPT_TIMEOUT = 5000;
const COMMIT_GRACE = 30000;
const MAX_BUFFERED_EVENTS = 1000;
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
// What makes a subscription (a sync channel's, a storage watch's, a compute job watch's) and
// what ends it: the client renews them after a reconnect and maps their ids to the app's handles.
const SUBSCRIBE = new Set(['sync.subscribe', 'storage.watch', 'compute.watch']);
const UNSUBSCRIBE = new Set(['sync.unsubscribe', 'storage.unwatch', 'compute.unwatch']);

function now() {
    return globalThis.performance?.now?.() ?? Date.now();
}

function randomSuffix() {
    const bytes = new Uint8Array(6);
    if (globalThis.crypto?.getRandomValues) {
        globalThis.crypto.getRandomValues(bytes);
    } else {
        for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
    }
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The WebSocket URL for a module loaded from `moduleURL`: http(s)://host:port/... becomes
 * ws(s)://host:port/v1/ws; a module served at …/PREFIX/v1/csop.js (a server behind a proxy
 * path) gives …/PREFIX/v1/ws. Returns null for any other scheme (file:, data:, blob:).
 */
export function defaultSocketURL(moduleURL) {
    let url;
    try {
        url = new URL(moduleURL);
    } catch {
        return null;
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
    const path = url.pathname.endsWith('/v1/csop.js') ? `${url.pathname.slice(0, -'csop.js'.length)}ws` : '/v1/ws';
    return `${url.protocol === 'https:' ? 'wss:' : 'ws:'}//${url.host}${path}`;
}

/**
 * Resolves `url` (absolute, or relative to `base`) to a ws: or wss: URL; http(s) becomes
 * ws(s) with the path kept. Returns null when it cannot.
 */
export function resolveSocketURL(url, base) {
    let parsed;
    try {
        parsed = base ? new URL(url, base) : new URL(url);
    } catch {
        return null;
    }
    if (parsed.protocol === 'http:') parsed.protocol = 'ws:';
    else if (parsed.protocol === 'https:') parsed.protocol = 'wss:';
    if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') return null;
    return parsed.href;
}

/**
 * Full-jitter exponential backoff: a delay drawn uniformly from
 * [0, min(maxDelay, minDelay × 2^attempt)). `attempt` counts from 0.
 */
export function backoffDelay(attempt, minDelay = 100, maxDelay = 5000, random = Math.random) {
    const ceiling = Math.min(maxDelay, minDelay * 2 ** Math.max(0, attempt));
    return Math.floor(random() * ceiling);
}

/**
 * Splits "domain.operation" as the server does (two identifiers of at most 64 bytes joined by
 * one dot); null when `action` is not such a string.
 */
export function parseAction(action) {
    if (typeof action !== 'string') return null;
    const dot = action.indexOf('.');
    if (dot < 0) return null;
    const domain = action.slice(0, dot);
    const operation = action.slice(dot + 1);
    if (!IDENTIFIER.test(domain) || !IDENTIFIER.test(operation)) return null;
    return { domain, operation };
}

/** The number of extra attempts a `retry` option asks for: a number, or `{attempts}`. */
export function retryCount(retry) {
    let n = 0;
    if (typeof retry === 'number') n = retry;
    else if (retry && typeof retry === 'object' && typeof retry.attempts === 'number') n = retry.attempts;
    return Number.isFinite(n) ? Math.max(0, Math.min(10, Math.floor(n))) : 0;
}

/** An error response in the protocol's format. */
export function errorResponse(id, code, message, retry = false, duration = 0) {
    return { id, status: 'error', error: { code, message, retry }, duration };
}

/**
 * Reshapes an ok response from the server into the original library's shape (compat mode).
 * Returns a new response; `response` is not changed. Other actions and error responses come
 * back unchanged.
 */
export function toCompat(action, response) {
    if (!response || response.status !== 'ok') return response;
    const data = response.data;
    if (!data || typeof data !== 'object' || Array.isArray(data)) return response;
    if (action === 'compute.execute' && 'result' in data) {
        const out = { ...response, data: data.result };
        if (data.logs !== undefined) out.logs = data.logs;
        if (data.logsTruncated !== undefined) out.logsTruncated = data.logsTruncated;
        return out;
    }
    if (action === 'storage.list' && Array.isArray(data.keys)) {
        const out = { ...response, data: data.keys };
        if (data.cursor !== undefined) out.cursor = data.cursor;
        return out;
    }
    if (action === 'compute.batch' && Array.isArray(data.results)) {
        const results = data.results.map((r) => {
            if (!r || typeof r !== 'object' || !r.error || typeof r.error !== 'object') return r;
            const { error, ...rest } = r;
            return { ...rest, error: String(error.message ?? error.code ?? ''), code: error.code };
        });
        return { ...response, data: { ...data, results } };
    }
    return response;
}

function neverRetried(code) {
    return (
        typeof code !== 'string' ||
        code.startsWith('INVALID_') ||
        code.endsWith('_NOT_FOUND') ||
        code === 'CONFLICT' ||
        code === 'QUOTA_EXCEEDED'
    );
}

function localOperation(capability, operation) {
    if (capability == null) return null;
    if (typeof capability.handle === 'function') {
        return (payload) => capability.handle(operation, payload);
    }
    const fn = capability[operation];
    if (typeof fn !== 'function' || fn === Object.prototype[operation] || operation === 'constructor') return null;
    return (payload) => fn.call(capability, payload);
}

function describe(value) {
    try {
        return typeof value === 'string' ? JSON.stringify(value) : `a value of type ${value === null ? 'null' : typeof value}`;
    } catch {
        return 'an unreadable value';
    }
}

function delay(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The CSOP client. See csop.d.ts for every method's contract. */
export class CSOP {
    constructor(options = {}) {
        this.version = VERSION;
        this.initialized = false;
        this._options = options;
        this._urlOption = options.url;
        this._token = options.token;
        this._compat = options.compat !== false;
        this._minDelay = options.reconnect?.minDelay ?? 100;
        this._maxDelay = options.reconnect?.maxDelay ?? 5000;
        this._timeout = options.timeout ?? 30000;
        this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
        this._random = options.random ?? Math.random;

        this._idPrefix = randomSuffix();
        this._counter = 0;
        this._state = 'idle'; // idle | connecting | restoring | ready | waiting | final | closed
        this._ws = null;
        this._pending = new Map(); // request id -> entry sent on this._ws
        this._queue = []; // entries waiting for the connection to be ready
        this._subs = new Map(); // app handle -> {handle, action, serverId, channel, payload, callback}
        this._byServerId = new Map(); // server subscription id -> app handle
        this._subscribesInFlight = 0;
        this._eventBuffer = [];
        this._local = new Map();
        this._listeners = new Map();
        this._finalError = null;
        this._lastErrorFrame = null;
        this._serverInfo = null;
        this._knownDomains = new Set();
        this._attempt = 0;
        this._everReady = false;
        this._init = null;
        this._reconnectTimer = null;
        this._connectTimer = null;
    }

    /** Opens the connection. Resolves once connected and authenticated. */
    init() {
        if (this._init) return this._init.promise;
        if (this._state === 'closed' || this._state === 'final') {
            this._state = 'idle';
            this._finalError = null;
            this._everReady = false;
        }
        let resolve, reject;
        const promise = new Promise((res, rej) => {
            resolve = res;
            reject = rej;
        });
        this._init = { promise, resolve, reject, settled: false };
        const url = this._urlOption != null
            ? resolveSocketURL(this._urlOption, globalThis.location?.href ?? import.meta.url)
            : defaultSocketURL(import.meta.url);
        if (!url) {
            this._failInit('NOT_CONNECTED', 'no server URL: pass {url} (this module was not loaded over http or https)');
            return promise;
        }
        if (typeof this._WebSocket !== 'function') {
            this._failInit('NOT_CONNECTED', 'no WebSocket implementation: pass {WebSocket}');
            return promise;
        }
        this._socketURL = url;
        this._connect();
        return promise;
    }

    /**
     * Saves `body` (a Blob, ArrayBuffer, typed array or string; a ReadableStream where the
     * browser can stream a request body) as the streamed value of `key`, over HTTP
     * (`PUT /v1/streams/{key}`): any size, saved in chunks on the server, replacing the key's
     * value only once all of it has arrived. Resolves with the commit's response
     * (`data: {key, location: "stream", size, version}`) or an error response; never rejects.
     * options: {ttl, ifVersion}.
     */
    async putStream(key, body, options = {}) {
        const started = now();
        const id = this._nextId();
        const query = new URLSearchParams();
        if (options.ttl != null) query.set('ttl', String(options.ttl));
        if (options.ifVersion != null) query.set('ifVersion', String(options.ifVersion));
        const init = { method: 'PUT', body };
        if (typeof ReadableStream === 'function' && body instanceof ReadableStream) init.duplex = 'half';
        return this._streamRequest(id, key, query, init, started, async (reply) => ({ ...(await reply.json()), id }));
    }

    /**
     * Reads the streamed value of `key` over HTTP (`GET /v1/streams/{key}`) without holding it
     * whole: resolves `{status: 'ok', data: {size, version, body}}` with `body` a ReadableStream
     * of its bytes (also `data.response`, the fetch Response: `.blob()`, `.arrayBuffer()`), or
     * an error response; never rejects. If the value changes while it is sent, the body ends
     * with an error rather than mixing two versions.
     */
    async getStream(key) {
        const started = now();
        const id = this._nextId();
        return this._streamRequest(id, key, new URLSearchParams(), { method: 'GET' }, started, async (reply) => ({
            id, status: 'ok', duration: now() - started,
            data: {
                size: Number(reply.headers.get('content-length')),
                version: Number(JSON.parse(reply.headers.get('etag') ?? '0')),
                body: reply.body, response: reply,
            },
        }));
    }

    async _streamRequest(id, key, query, init, started, ok) {
        if (typeof key !== 'string' || key === '') return errorResponse(id, 'INVALID_PAYLOAD', 'key must be a non-empty string', false, now() - started);
        let base;
        try {
            const socket = this._socketURL ?? (this._urlOption != null
                ? resolveSocketURL(this._urlOption, globalThis.location?.href ?? import.meta.url)
                : defaultSocketURL(import.meta.url));
            base = new URL(socket);
            base.protocol = base.protocol === 'wss:' ? 'https:' : 'http:';
        } catch {
            return errorResponse(id, 'NOT_CONNECTED', 'no server URL: pass {url} (this module was not loaded over http or https)', true, now() - started);
        }
        let token = this._token;
        try {
            if (typeof token === 'function') token = await token();
        } catch (error) {
            return errorResponse(id, 'UNAUTHENTICATED', `the token function failed: ${error?.message ?? error}`, false, now() - started);
        }
        const search = query.toString();
        const url = new URL(`/v1/streams/${encodeURIComponent(key)}${search ? `?${search}` : ''}`, base);
        init.headers = token ? { authorization: `Bearer ${token}` } : {};
        let reply;
        try {
            reply = await fetch(url, init);
        } catch (error) {
            return errorResponse(id, 'NOT_CONNECTED', `the request to ${url.origin} failed: ${error?.message ?? error}`, true, now() - started);
        }
        if (!reply.ok) {
            const answer = await reply.json().catch(() => null);
            const error = answer?.error ?? { code: 'EXECUTION_FAILED', message: `the server answered ${reply.status}`, retry: false };
            return { id, status: 'error', error, duration: now() - started };
        }
        return ok(reply);
    }

    /** Sends one request; resolves with its response, never rejects. */
    async dispatch(action, payload = {}, options = {}) {
        const started = now();
        const id = this._nextId();
        const parsed = parseAction(action);
        if (!parsed) {
            return errorResponse(id, 'INVALID_ACTION',
                `action must be "domain.operation" (two identifiers joined by one dot), got ${describe(action)}`,
                false, now() - started);
        }
        if (options == null) options = {};
        if (typeof options !== 'object' || Array.isArray(options)) {
            return errorResponse(id, 'INVALID_PAYLOAD', 'options must be an object', false, now() - started);
        }
        if (payload == null) payload = {};
        if (typeof payload !== 'object' || Array.isArray(payload)) {
            return errorResponse(id, 'INVALID_PAYLOAD', 'payload must be an object', false, now() - started);
        }
        const local = this._local.get(parsed.domain);
        if (local !== undefined) return this._dispatchLocal(id, action, parsed, local, payload, options, started);
        return this._dispatchRemote(id, action, payload, options, started);
    }

    /** Registers a capability living in the page; its domain is then answered locally. */
    register(name, capability) {
        if (typeof name !== 'string' || !IDENTIFIER.test(name)) {
            throw new TypeError(`capability name must be an identifier ([A-Za-z_][A-Za-z0-9_]*), got ${JSON.stringify(String(name))}`);
        }
        if (capability == null || (typeof capability !== 'object' && typeof capability !== 'function')) {
            throw new TypeError('capability must be an object with operation methods or a handle(operation, payload) method');
        }
        this._local.set(name, capability);
    }

    /** Removes a page-local capability; its domain goes to the server again. */
    unregister(name) {
        return this._local.delete(name);
    }

    /** The page-local capability registered under `name`, or undefined. */
    getCapability(name) {
        return this._local.get(name);
    }

    /** {version, initialized, capabilities, connected, server}. */
    info() {
        const capabilities = new Set(this._knownDomains);
        for (const name of this._local.keys()) capabilities.add(name);
        return {
            version: this.version,
            initialized: this.initialized,
            capabilities: Array.from(capabilities),
            connected: this._state === 'ready',
            server: this._serverInfo,
        };
    }

    /** Adds a listener; returns a function that removes it. */
    on(name, fn) {
        if (typeof fn !== 'function') throw new TypeError('listener must be a function');
        let set = this._listeners.get(name);
        if (!set) this._listeners.set(name, (set = new Set()));
        set.add(fn);
        return () => this.off(name, fn);
    }

    /** Removes a listener added with on(). */
    off(name, fn) {
        this._listeners.get(name)?.delete(fn);
    }

    /** Closes the connection for good (init() opens it again, without the subscriptions). */
    close() {
        const wasOpen = this._state !== 'idle' && this._state !== 'closed';
        this._state = 'closed';
        this.initialized = false;
        this._clearTimers();
        const ws = this._ws;
        this._ws = null;
        if (ws) {
            this._detach(ws);
            try {
                ws.close(1000, 'closed by the client');
            } catch {}
        }
        const error = { code: 'NOT_CONNECTED', message: 'the client was closed', retry: false };
        this._failAll(error);
        this._subs.clear();
        this._byServerId.clear();
        this._eventBuffer = [];
        if (this._init && !this._init.settled) this._failInit(error.code, error.message);
        this._init = null;
        if (wasOpen) this._emit('close', { code: 1000, reason: 'closed by the client', final: true });
    }

    _nextId() {
        this._counter += 1;
        return `c${this._counter}_${this._idPrefix}`;
    }

    _emit(name, value) {
        const set = this._listeners.get(name);
        if (!set || set.size === 0) {
            if (name === 'error') console.error('CSOP:', value);
            return;
        }
        for (const fn of Array.from(set)) {
            try {
                fn(value);
            } catch (error) {
                if (name !== 'error') this._emit('error', { code: 'LISTENER_FAILED', message: String(error?.message ?? error), cause: error });
                else console.error('CSOP: an error listener threw', error);
            }
        }
    }

    async _dispatchLocal(id, action, parsed, capability, payload, options, started) {
        const run = localOperation(capability, parsed.operation);
        if (!run) {
            return errorResponse(id, 'OPERATION_NOT_FOUND',
                `the page-local capability "${parsed.domain}" has no operation "${parsed.operation}"`, false, now() - started);
        }
        const timeout = typeof options.timeout === 'number' && options.timeout > 0 ? options.timeout : DEFAULT_ATTEMPT_TIMEOUT;
        const retries = retryCount(options.retry);
        let last;
        for (let attempt = 0; ; attempt++) {
            let timer;
            try {
                const result = await Promise.race([
                    Promise.resolve().then(() => run(payload)),
                    new Promise((_, reject) => {
                        timer = setTimeout(() => reject(Object.assign(new Error(`${action} ran out of its ${timeout} ms timeout`), { code: 'TIMEOUT', retry: true })), timeout);
                    }),
                ]);
                return { id, status: 'ok', data: result === undefined ? null : result, duration: now() - started };
            } catch (error) {
                const code = typeof error?.code === 'string' ? error.code : 'EXECUTION_FAILED';
                const retry = !neverRetried(code) && error?.retry !== false && (error?.retry === true || code === 'TIMEOUT' || code === 'EXECUTION_FAILED');
                last = { code, message: String(error?.message ?? error), retry };
                if (!retry || attempt >= retries) break;
                await delay(Math.min(10000, 100 * 2 ** attempt) * (0.5 + 0.5 * this._random()));
            } finally {
                clearTimeout(timer);
            }
        }
        return { id, status: 'error', error: last, duration: now() - started };
    }

    _dispatchRemote(id, action, payload, options, started) {
        if (this._finalError) return Promise.resolve({ id, status: 'error', error: { ...this._finalError }, duration: now() - started });
        if (this._state === 'closed') return Promise.resolve(errorResponse(id, 'NOT_CONNECTED', 'the client was closed', false, now() - started));
        if (this._state === 'idle') {
            return Promise.resolve(errorResponse(id, 'NOT_INITIALIZED', 'call and await csop.init() before dispatching to the server', false, now() - started));
        }
        let callback;
        let body = payload;
        if (SUBSCRIBE.has(action) && 'callback' in payload) {
            ({ callback, ...body } = payload);
            if (typeof callback !== 'function') callback = undefined;
        }
        let probe;
        try {
            probe = JSON.stringify(body);
            JSON.stringify(options);
        } catch (error) {
            return Promise.resolve(errorResponse(id, 'INVALID_PAYLOAD', `payload or options cannot be written as JSON: ${error.message}`, false, now() - started));
        }
        if (probe === undefined) return Promise.resolve(errorResponse(id, 'INVALID_PAYLOAD', 'payload cannot be written as JSON', false, now() - started));
        return new Promise((resolve) => {
            const entry = {
                id, action, payload: body, options, started, callback, internal: false,
                retriesLeft: retryCount(options.retry), resolve, ws: null, size: 0,
                waitTimer: null, guardTimer: null,
            };
            if (this._state === 'ready') this._send(entry);
            else this._enqueue(entry);
        });
    }

    _frame(entry) {
        let payload = entry.payload;
        if (UNSUBSCRIBE.has(entry.action) && typeof payload.subscription === 'string') {
            const sub = this._subs.get(payload.subscription);
            if (sub && sub.serverId) payload = { ...payload, subscription: sub.serverId };
        }
        const request = { id: entry.id, action: entry.action, payload };
        if (Object.keys(entry.options).length > 0) request.options = entry.options;
        return JSON.stringify(request);
    }

    _send(entry) {
        const ws = this._ws;
        if (!ws || ws.readyState !== OPEN) {
            if (entry.internal) return this._finish(entry, null);
            this._enqueue(entry);
            return;
        }
        if (!entry.internal && UNSUBSCRIBE.has(entry.action) && typeof entry.payload.subscription === 'string') {
            const sub = this._subs.get(entry.payload.subscription);
            if (sub && !sub.serverId) {
                // Its re-subscription failed after a reconnect: the server holds nothing to remove.
                this._removeSub(sub.handle);
                const data = entry.action !== 'sync.unsubscribe'
                    ? { unwatched: true, subscription: sub.handle }
                    : { unsubscribed: true, channel: sub.channel, count: 1 };
                this._finish(entry, { id: entry.id, status: 'ok', data, duration: now() - entry.started });
                return;
            }
        }
        const frame = this._frame(entry);
        entry.ws = ws;
        entry.size = frame.length;
        this._pending.set(entry.id, entry);
        if (SUBSCRIBE.has(entry.action)) this._subscribesInFlight += 1;
        if (!entry.internal) {
            const attempt = typeof entry.options.timeout === 'number' ? entry.options.timeout : DEFAULT_ATTEMPT_TIMEOUT;
            const retries = retryCount(entry.options.retry);
            const guard = (retries + 1) * (attempt + COMMIT_GRACE) + retries * 10000 + 5000;
            entry.guardTimer = setTimeout(() => {
                if (this._pending.get(entry.id) !== entry) return;
                this._unpend(entry);
                this._finish(entry, errorResponse(entry.id, 'TIMEOUT',
                    `no answer from the server within ${guard} ms; the effect may have happened`, false, now() - entry.started));
            }, guard);
        }
        try {
            ws.send(frame);
        } catch (error) {
            this._unpend(entry);
            this._finish(entry, errorResponse(entry.id, 'NOT_CONNECTED', `the request could not be sent: ${error?.message ?? error}`, true, now() - entry.started));
        }
    }

    _enqueue(entry) {
        entry.ws = null;
        const wait = typeof entry.options.timeout === 'number' && entry.options.timeout > 0 ? entry.options.timeout : this._timeout;
        entry.waitTimer = setTimeout(() => {
            const index = this._queue.indexOf(entry);
            if (index < 0) return;
            this._queue.splice(index, 1);
            this._finish(entry, errorResponse(entry.id, 'NOT_CONNECTED',
                `not connected to the CSOP server; waited ${wait} ms for the connection`, true, now() - entry.started));
        }, wait);
        this._queue.push(entry);
    }

    _unpend(entry) {
        if (this._pending.get(entry.id) === entry) {
            this._pending.delete(entry.id);
            if (SUBSCRIBE.has(entry.action)) this._subscribesInFlight -= 1;
        }
        clearTimeout(entry.guardTimer);
        entry.guardTimer = null;
    }

    _finish(entry, response) {
        clearTimeout(entry.waitTimer);
        clearTimeout(entry.guardTimer);
        entry.waitTimer = entry.guardTimer = null;
        if (entry.done) return;
        entry.done = true;
        entry.resolve(response);
    }

    _failAll(error) {
        const entries = [...this._pending.values(), ...this._queue];
        this._pending.clear();
        this._queue = [];
        this._subscribesInFlight = 0;
        for (const entry of entries) {
            this._finish(entry, { id: entry.id, status: 'error', error: { ...error }, duration: now() - entry.started });
        }
    }

    _failInit(code, message) {
        const init = this._init;
        if (!init || init.settled) return;
        init.settled = true;
        this._init = null;
        init.reject(Object.assign(new Error(message), { code }));
    }

    _clearTimers() {
        clearTimeout(this._reconnectTimer);
        clearTimeout(this._connectTimer);
        this._reconnectTimer = this._connectTimer = null;
    }

    async _connect() {
        this._state = 'connecting';
        this._lastErrorFrame = null;
        let token = this._token;
        if (typeof token === 'function') {
            try {
                token = await token();
            } catch (error) {
                this._final({ code: 'UNAUTHENTICATED', message: `the token function failed: ${error?.message ?? error}`, retry: false });
                return;
            }
            if (this._state !== 'connecting') return;
        }
        const protocols = token ? ['csop', `csop.bearer.${token}`] : ['csop'];
        let ws;
        try {
            ws = new this._WebSocket(this._socketURL, protocols);
        } catch (error) {
            const code = token && error?.name === 'SyntaxError' ? 'UNAUTHENTICATED' : 'NOT_CONNECTED';
            const message = code === 'UNAUTHENTICATED'
                ? 'the token is not a valid WebSocket subprotocol token (a JWT is)'
                : `cannot open the WebSocket: ${error?.message ?? error}`;
            if (code === 'UNAUTHENTICATED') this._final({ code, message, retry: false });
            else this._lost(null, 1006, message);
            return;
        }
        this._ws = ws;
        ws.onopen = () => this._opened(ws);
        ws.onmessage = (ev) => this._message(ws, ev.data);
        ws.onclose = (ev) => this._closed(ws, ev.code, ev.reason);
        ws.onerror = () => {};
        this._connectTimer = setTimeout(() => {
            if (this._ws !== ws || this._state === 'ready') return;
            this._detach(ws);
            try {
                ws.close(4000, 'connect timeout');
            } catch {}
            this._closed(ws, 4000, `no connection within ${this._timeout} ms`, true);
        }, this._timeout);
    }

    _detach(ws) {
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    }

    _opened(ws) {
        if (this._ws !== ws) return;
        this._state = 'restoring';
        const steps = [];
        // Any answer to the probe proves the server accepted the token: a refused token gets an
        // error frame and close 4401 before any response.
        steps.push(this._internal(ws, 'host.info', {}).then((response) => {
            if (response.status === 'ok' && response.data && Array.isArray(response.data.capabilities)) {
                this._serverInfo = response.data;
                for (const c of response.data.capabilities) if (c && typeof c.name === 'string') this._knownDomains.add(c.name);
            }
            return response;
        }));
        for (const sub of this._subs.values()) steps.push(this._renew(ws, sub, 'after a reconnect'));
        Promise.all(steps).then((responses) => {
            if (this._ws !== ws || this._state !== 'restoring') return;
            if (responses.some((r) => r === null)) return; // the socket closed meanwhile
            clearTimeout(this._connectTimer);
            this._connectTimer = null;
            const reconnected = this._everReady;
            this._state = 'ready';
            this._everReady = true;
            this._attempt = 0;
            this.initialized = true;
            this._flushEvents();
            const queued = this._queue;
            this._queue = [];
            for (const entry of queued) {
                clearTimeout(entry.waitTimer);
                entry.waitTimer = null;
                this._send(entry);
            }
            if (this._init && !this._init.settled) {
                this._init.settled = true;
                this._init.resolve();
            }
            this._emit('open', { reconnected });
        });
    }

    // Resolves with the response, or with null when the socket closes first.
    _internal(ws, action, payload, options = {}) {
        return new Promise((resolve) => {
            const entry = {
                id: this._nextId(), action, payload, options, started: now(), internal: true,
                retriesLeft: 0, resolve, ws: null, size: 0, waitTimer: null, guardTimer: null,
            };
            if (this._ws !== ws || ws.readyState !== OPEN) return resolve(null);
            this._send(entry);
        });
    }

    _message(ws, text) {
        if (this._ws !== ws) return;
        let message;
        try {
            message = JSON.parse(typeof text === 'string' ? text : String(text));
        } catch {
            this._emit('error', { code: 'INVALID_PAYLOAD', message: 'the server sent a frame that is not JSON' });
            return;
        }
        if (!message || typeof message !== 'object') return;
        if ('status' in message && typeof message.id === 'string' && message.type === undefined) {
            this._response(message);
        } else if (message.type === 'error') {
            this._lastErrorFrame = message.error ?? null;
            this._emit('error', { ...(message.error ?? {}), frame: message });
        } else if (message.type === 'event') {
            this._event(message);
        } else if (message.type !== undefined && !('status' in message)) {
            this._emit('event', message);
        }
    }

    _response(message) {
        const entry = this._pending.get(message.id);
        if (!entry) return;
        this._unpend(entry);
        if (entry.internal) {
            this._finish(entry, message);
            return;
        }
        let response = message;
        const domain = entry.action.slice(0, entry.action.indexOf('.'));
        if (response.status === 'ok') this._knownDomains.add(domain);
        if (response.status === 'ok' && SUBSCRIBE.has(entry.action)) response = this._subscribed(entry, response);
        if (response.status === 'ok' && UNSUBSCRIBE.has(entry.action)) this._unsubscribed(entry, response);
        if (this._compat) response = toCompat(entry.action, response);
        this._finish(entry, response);
        if (SUBSCRIBE.has(entry.action)) this._flushEvents();
    }

    _subscribed(entry, response) {
        const data = response.data;
        if (!data || typeof data.subscription !== 'string') return response;
        // The server's first id is the app's handle for good; a server may hand out the same id
        // again on a later connection, so a handle already taken gets a client-made one.
        let handle = data.subscription;
        if (this._subs.has(handle)) {
            this._counter += 1;
            handle = `s${this._counter}_${this._idPrefix}`;
        }
        // `channel`: a sync subscription's channel, a storage watch's prefix, or '' for a job watch.
        const channel = entry.action === 'storage.watch'
            ? data.prefix ?? entry.payload.prefix ?? ''
            : entry.action === 'compute.watch' ? '' : data.channel ?? entry.payload.channel ?? 'default';
        const sub = { handle, action: entry.action, serverId: data.subscription, channel, payload: { ...entry.payload }, callback: entry.callback };
        // A channel with history: where the subscription stands, so a re-subscription resumes there.
        if (entry.action === 'sync.subscribe' && typeof data.epoch === 'string' && typeof data.offset === 'number') {
            sub.position = { offset: data.offset, epoch: data.epoch };
        }
        this._subs.set(handle, sub);
        this._byServerId.set(data.subscription, handle);
        if (handle === data.subscription) return response;
        return { ...response, data: { ...data, subscription: handle } };
    }

    _unsubscribed(entry, response) {
        const { subscription, channel } = entry.payload;
        if (typeof subscription === 'string') {
            this._removeSub(subscription);
        } else if (entry.action === 'sync.unsubscribe') {
            const name = typeof channel === 'string' ? channel : response.data?.channel;
            for (const sub of Array.from(this._subs.values())) if (sub.action === 'sync.subscribe' && sub.channel === name) this._removeSub(sub.handle);
        }
    }

    _removeSub(handle) {
        const sub = this._subs.get(handle);
        if (!sub) return;
        this._subs.delete(handle);
        if (sub.serverId) this._byServerId.delete(sub.serverId);
    }

    // Subscribes `sub` again on `ws` under the app's handle (after a reconnect, or after a
    // plugin reload ended it); a failure is an 'error' event naming the handle.
    // A sync subscription on a channel with history resumes after the last event it delivered
    // (`since`): the server sends what was missed first, each message once. When the history no
    // longer reaches back, the app gets a 'sync.recovery' event ({recovered: false}) to reload.
    _renew(ws, sub, when, options = {}) {
        const payload = sub.action === 'sync.subscribe' && sub.position ? { ...sub.payload, since: { ...sub.position } } : sub.payload;
        return this._internal(ws, sub.action, payload, options).then((response) => {
            if (!response) return response;
            if (!this._subs.has(sub.handle)) return response;
            if (sub.serverId) this._byServerId.delete(sub.serverId);
            if (response.status === 'ok' && response.data && typeof response.data.subscription === 'string') {
                sub.serverId = response.data.subscription;
                this._byServerId.set(sub.serverId, sub.handle);
                const data = response.data;
                if (sub.action === 'sync.subscribe' && data.recovered !== true) {
                    const had = sub.position;
                    sub.position = typeof data.epoch === 'string' && typeof data.offset === 'number' ? { offset: data.offset, epoch: data.epoch } : null;
                    if (had) {
                        this._deliver({
                            type: 'event', subscription: sub.serverId, channel: sub.channel, event: 'sync.recovery',
                            data: { recovered: false, epoch: data.epoch ?? null, offset: data.offset ?? null, reason: `what was published ${when} could not be recovered` },
                            timestamp: Date.now(), origin: '',
                        });
                    }
                }
            } else {
                sub.serverId = null;
                this._emit('error', {
                    code: response.error?.code ?? 'SUBSCRIPTION_FAILED',
                    message: sub.action === 'storage.watch'
                        ? `renewing the storage watch ${sub.handle} of "${sub.channel}" ${when} failed: ${response.error?.message ?? 'no answer'}`
                        : sub.action === 'compute.watch'
                        ? `renewing the job watch ${sub.handle} ${when} failed: ${response.error?.message ?? 'no answer'}`
                        : `re-subscribing ${sub.handle} to "${sub.channel}" ${when} failed: ${response.error?.message ?? 'no answer'}`,
                    subscription: sub.handle,
                });
            }
            this._flushEvents();
            return response;
        });
    }

    _event(message) {
        const handle = typeof message.subscription === 'string' ? this._byServerId.get(message.subscription) : undefined;
        if (message.event === 'subscription.ended' && handle !== undefined && this._ws && this._state === 'ready') {
            // A reload replaced the plugin that held it, or its process crashed: subscribe again
            // (the server retries while a crashed plugin restarts); the app keeps its handle.
            const sub = this._subs.get(handle);
            this._byServerId.delete(message.subscription);
            if (sub) {
                sub.serverId = null;
                this._renew(this._ws, sub, 'after a plugin reload or restart', { retry: 5 });
            }
            this._deliver({ ...message, subscription: handle });
            return;
        }
        if (handle === undefined && this._subscribesInFlight > 0 && typeof message.subscription === 'string') {
            // The event may have overtaken the answer to the subscribe that created it.
            this._eventBuffer.push(message);
            if (this._eventBuffer.length > MAX_BUFFERED_EVENTS) this._deliver(this._eventBuffer.shift());
            return;
        }
        this._deliver(message);
    }

    _flushEvents() {
        if (this._eventBuffer.length === 0) return;
        const buffered = this._eventBuffer;
        this._eventBuffer = [];
        for (const message of buffered) this._event(message);
    }

    _deliver(message) {
        const handle = typeof message.subscription === 'string' ? this._byServerId.get(message.subscription) : undefined;
        const event = handle !== undefined && handle !== message.subscription ? { ...message, subscription: handle } : message;
        const sub = handle !== undefined ? this._subs.get(handle) : undefined;
        if (sub && sub.action === 'sync.subscribe' && typeof message.offset === 'number' && typeof message.epoch === 'string') {
            // Never the same message twice, whatever a re-subscription overlaps.
            if (sub.position && sub.position.epoch === message.epoch && message.offset <= sub.position.offset) return;
            sub.position = { offset: message.offset, epoch: message.epoch };
        }
        if (sub && sub.callback) {
            try {
                sub.callback(event);
            } catch (error) {
                this._emit('error', { code: 'LISTENER_FAILED', message: `a subscription callback threw: ${error?.message ?? error}`, subscription: handle, cause: error });
            }
        }
        this._emit('event', event);
    }

    _closed(ws, code, reason, timedOut = false) {
        if (this._ws !== ws) return;
        this._detach(ws);
        this._ws = null;
        clearTimeout(this._connectTimer);
        this._connectTimer = null;
        if (this._state === 'closed') return;
        if (FINAL_CLOSE_CODES.has(code)) {
            const frame = this._lastErrorFrame;
            this._final({
                code: frame?.code ?? (code === 4401 ? 'UNAUTHENTICATED' : 'FORBIDDEN'),
                message: frame?.message ?? (reason || (code === 4401 ? 'the server refused the token' : 'the token does not allow this connection')),
                retry: false,
            });
            return;
        }
        this._lost(ws, code, reason, timedOut);
    }

    _final(error) {
        this._finalError = error;
        this._state = 'final';
        this.initialized = false;
        this._clearTimers();
        this._failAll(error);
        this._failInit(error.code, error.message);
        this._emit('close', { code: null, reason: error.message, final: true, error });
    }

    _lost(ws, code, reason, timedOut = false) {
        const inFlight = Array.from(this._pending.values()).filter((entry) => entry.ws === ws || ws === null);
        let tooBig = null;
        if (code === 1009) {
            for (const entry of inFlight) {
                if (entry.internal) continue;
                if (reason && reason.includes(entry.id)) {
                    tooBig = entry;
                    break;
                }
                if (!tooBig || entry.size > tooBig.size) tooBig = entry;
            }
        }
        for (const entry of inFlight) {
            this._unpend(entry);
            if (entry.internal) {
                this._finish(entry, null);
                continue;
            }
            if (entry === tooBig) {
                this._finish(entry, errorResponse(entry.id, 'INVALID_PAYLOAD',
                    `the server closed the connection because a frame was too big (close 1009); this request's frame was ${entry.size} bytes`, false, now() - entry.started));
            } else if (entry.retriesLeft > 0) {
                entry.retriesLeft -= 1;
                this._enqueue(entry);
            } else {
                this._finish(entry, errorResponse(entry.id, 'NOT_CONNECTED',
                    `the connection to the CSOP server closed (code ${code}) before the answer came; the request may have run`, true, now() - entry.started));
            }
        }
        this._subscribesInFlight = 0;
        this._eventBuffer = [];
        if (!this._everReady) {
            this._state = 'idle';
            const frame = this._lastErrorFrame;
            this._failAll({ code: frame?.code ?? 'NOT_CONNECTED', message: frame?.message ?? 'the first connection failed', retry: true });
            this._failInit(frame?.code ?? 'NOT_CONNECTED', frame?.message ??
                (timedOut ? reason : `cannot connect to ${this._socketURL} (close code ${code}${reason ? `: ${reason}` : ''})`));
            return;
        }
        if (code === 4429) this._attempt = Math.max(this._attempt, 3);
        const wait = backoffDelay(this._attempt, this._minDelay, this._maxDelay, this._random);
        this._attempt += 1;
        this._state = 'waiting';
        this._emit('close', { code, reason, final: false, reconnectIn: wait });
        this._reconnectTimer = setTimeout(() => {
            this._reconnectTimer = null;
            if (this._state === 'waiting') this._connect();
        }, wait);
    }
}

export default CSOP;

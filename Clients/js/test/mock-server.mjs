// A stand-in for `csop serve`, for testing the client in a browser without the Swift build:
// serves /v1/csop.js and a static directory, and speaks the WebSocket protocol of the spec
// (subprotocol auth, error frame + close 4401 for a refused token) with small in-memory
// storage, compute (fibonacci, custom) and sync (subscribe, broadcast, presence) domains.
// It imitates the answers' shapes as the README gives them; it is not the server.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const clientFile = path.join(here, '..', 'csop.js');
const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8' };

function frame(text, opcode = 1) {
    const payload = Buffer.from(text);
    let header;
    if (payload.length < 126) {
        header = Buffer.from([0x80 | opcode, payload.length]);
    } else if (payload.length < 65536) {
        header = Buffer.alloc(4);
        header[0] = 0x80 | opcode;
        header[1] = 126;
        header.writeUInt16BE(payload.length, 2);
    } else {
        header = Buffer.alloc(10);
        header[0] = 0x80 | opcode;
        header[1] = 127;
        header.writeBigUInt64BE(BigInt(payload.length), 2);
    }
    return Buffer.concat([header, payload]);
}

function closeFrame(code, reason = '') {
    const body = Buffer.alloc(2 + Buffer.byteLength(reason));
    body.writeUInt16BE(code, 0);
    body.write(reason, 2);
    return Buffer.concat([Buffer.from([0x88, body.length]), body]);
}

function fibonacci(n) {
    let a = 0n, b = 1n;
    for (let i = 0; i < n; i++) [a, b] = [b, a + b];
    return a.toString();
}

/**
 * Starts the mock. `state` (storage contents) may be passed in to survive a restart.
 * Returns {port, close(code), state, connections}.
 */
export async function startMock({ port = 0, staticDir, token, state = { storage: new Map() } } = {}) {
    const sockets = new Set();
    const subs = new Map(); // server subscription id -> {socket, channel, events}
    const presence = new Map(); // channel -> Map(userId -> user)
    let subCounter = 0;

    function send(socket, message) {
        if (!socket.destroyed) socket.write(frame(JSON.stringify(message)));
    }

    function deliver(channel, event, data) {
        for (const [id, sub] of subs) {
            if (sub.channel !== channel || (sub.events && !sub.events.includes(event) && !event.startsWith('presence.'))) continue;
            send(sub.socket, { type: 'event', subscription: id, channel, event, data, timestamp: Date.now(), origin: 'mock' });
        }
    }

    const fail = (code, message, retry = false) => ({ error: { code, message, retry } });

    function handle(socket, request) {
        const [domain, operation] = String(request.action).split('.');
        const p = request.payload ?? {};
        switch (`${domain}.${operation}`) {
            case 'host.info':
                return { data: { version: 'mock', capabilities: ['host', 'storage', 'compute', 'sync'].map((name) => ({ name })) } };
            case 'storage.save':
                state.storage.set(p.key, JSON.stringify(p.data));
                return { data: { key: p.key, location: 'local', size: JSON.stringify(p.data).length, version: 1 } };
            case 'storage.get':
                return state.storage.has(p.key) ? { data: JSON.parse(state.storage.get(p.key)) } : fail('KEY_NOT_FOUND', `no key ${p.key}`);
            case 'storage.delete':
                return { data: { deleted: state.storage.delete(p.key), key: p.key } };
            case 'storage.list':
                return { data: { keys: [...state.storage.keys()].filter((k) => k.startsWith(p.prefix ?? '')).sort() } };
            case 'compute.execute':
                if (p.task === 'fibonacci') return { data: { result: fibonacci(p.data.n) } };
                if (p.task === 'custom') {
                    try {
                        return { data: { result: new Function('data', p.data.fn)(p.data.args) } };
                    } catch (error) {
                        return fail('EXECUTION_FAILED', String(error.message));
                    }
                }
                return fail('INVALID_TASK', `unknown task ${p.task}`);
            case 'sync.subscribe': {
                const id = `sub_${++subCounter}`;
                subs.set(id, { socket, channel: p.channel ?? 'default', events: p.events });
                return { data: { subscribed: true, channel: p.channel ?? 'default', subscription: id } };
            }
            case 'sync.unsubscribe': {
                if (p.subscription) {
                    const sub = subs.get(p.subscription);
                    if (!sub || sub.socket !== socket) return fail('SUBSCRIPTION_FAILED', 'no such subscription');
                    subs.delete(p.subscription);
                    return { data: { unsubscribed: true, channel: sub.channel, count: 1 } };
                }
                let count = 0;
                for (const [id, sub] of subs) if (sub.socket === socket && sub.channel === p.channel) { subs.delete(id); count++; }
                return { data: { unsubscribed: count > 0, channel: p.channel, count } };
            }
            case 'sync.broadcast':
                deliver(p.channel ?? 'default', p.event, p.data ?? null);
                return { data: { sent: true, channel: p.channel ?? 'default', event: p.event, mode: 'local' } };
            case 'sync.presence': {
                const channel = p.channel ?? 'default';
                const users = presence.get(channel) ?? new Map();
                presence.set(channel, users);
                const userId = p.userId ?? `user-${Math.random().toString(16).slice(2)}`;
                const user = { userId, onlineAt: Date.now(), ...(p.metadata ?? {}) };
                const joined = !users.has(userId);
                users.set(userId, user);
                if (joined) deliver(channel, 'presence.join', user);
                return { data: { channel, userId, online: users.size, users: [...users.values()] } };
            }
            case 'sync.leave': {
                const channel = p.channel ?? 'default';
                const left = presence.get(channel)?.delete(p.userId) ?? false;
                if (left) deliver(channel, 'presence.leave', { userId: p.userId, reason: 'left' });
                return { data: { left, channel, userId: p.userId } };
            }
            default:
                return domain === 'storage' || domain === 'compute' || domain === 'sync' || domain === 'host'
                    ? fail('OPERATION_NOT_FOUND', `no operation ${operation}`)
                    : fail('CAPABILITY_NOT_FOUND', `no capability ${domain}`);
        }
    }

    function onText(socket, text) {
        let request;
        try {
            request = JSON.parse(text);
        } catch {
            return send(socket, { id: null, status: 'error', error: { code: 'INVALID_PAYLOAD', message: 'not JSON', retry: false }, duration: 0 });
        }
        const started = performance.now();
        const outcome = handle(socket, request);
        const response = outcome.error
            ? { id: request.id, status: 'error', error: outcome.error, duration: performance.now() - started }
            : { id: request.id, status: 'ok', data: outcome.data, duration: performance.now() - started };
        send(socket, response);
    }

    function upgrade(req, socket) {
        const offered = String(req.headers['sec-websocket-protocol'] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
        const accept = createHash('sha1').update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
        const lines = ['HTTP/1.1 101 Switching Protocols', 'Upgrade: websocket', 'Connection: Upgrade', `Sec-WebSocket-Accept: ${accept}`];
        if (offered.includes('csop')) lines.push('Sec-WebSocket-Protocol: csop');
        socket.write(`${lines.join('\r\n')}\r\n\r\n`);
        sockets.add(socket);
        socket.on('close', () => {
            sockets.delete(socket);
            for (const [id, sub] of subs) if (sub.socket === socket) subs.delete(id);
        });
        socket.on('error', () => {});
        const bearer = offered.find((p) => p.startsWith('csop.bearer.'))?.slice('csop.bearer.'.length);
        if (token && bearer !== token) {
            send(socket, { type: 'error', error: { code: 'UNAUTHENTICATED', message: 'the token is not valid', retry: false } });
            socket.end(closeFrame(4401, 'unauthenticated'));
            return;
        }
        let buffer = Buffer.alloc(0);
        socket.on('data', (chunk) => {
            buffer = Buffer.concat([buffer, chunk]);
            for (;;) {
                if (buffer.length < 2) return;
                const opcode = buffer[0] & 0x0f;
                let length = buffer[1] & 0x7f;
                let offset = 2;
                if (length === 126) {
                    if (buffer.length < 4) return;
                    length = buffer.readUInt16BE(2);
                    offset = 4;
                } else if (length === 127) {
                    if (buffer.length < 10) return;
                    length = Number(buffer.readBigUInt64BE(2));
                    offset = 10;
                }
                if (buffer.length < offset + 4 + length) return;
                const mask = buffer.subarray(offset, offset + 4);
                const payload = Buffer.from(buffer.subarray(offset + 4, offset + 4 + length));
                for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
                buffer = buffer.subarray(offset + 4 + length);
                if (opcode === 1) onText(socket, payload.toString('utf8'));
                else if (opcode === 8) socket.end(closeFrame(1000));
                else if (opcode === 9) socket.write(frame(payload.toString(), 10));
            }
        });
    }

    const server = http.createServer(async (req, res) => {
        const url = new URL(req.url, 'http://x');
        let file = null;
        if (url.pathname === '/v1/csop.js') file = clientFile;
        else if (staticDir) {
            file = path.join(staticDir, path.normalize(decodeURIComponent(url.pathname)).replace(/^(\.\.[/\\])+/, ''));
            if (file.endsWith('/')) file += 'index.html';
        }
        try {
            const body = await readFile(file);
            res.writeHead(200, { 'Content-Type': types[path.extname(file)] ?? 'application/octet-stream', 'Cache-Control': 'no-store' });
            res.end(body);
        } catch {
            res.writeHead(404);
            res.end('not found');
        }
    });
    server.on('upgrade', (req, socket) => {
        if (new URL(req.url, 'http://x').pathname !== '/v1/ws') return socket.destroy();
        upgrade(req, socket);
    });
    await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
    return {
        port: server.address().port,
        state,
        connections: () => sockets.size,
        /** Closes every WebSocket with `code` and stops listening. */
        close(code = 1001) {
            for (const socket of sockets) socket.end(closeFrame(code, 'going away'));
            return new Promise((resolve) => {
                server.close(resolve);
                server.closeAllConnections?.();
                setTimeout(() => { for (const socket of sockets) socket.destroy(); }, 100);
            });
        },
    };
}

// Types for csop.js, the CSOP browser client. Every contract below is what csop.js does.

/** The library's version (the `version` of `info()`). */
export const VERSION: string;

/** An error as the protocol carries it. */
export interface CSOPErrorInfo {
    /** A stable code: the protocol's (`INVALID_ACTION`, `TIMEOUT`, …), a plugin's, or the client's (`NOT_CONNECTED`, `NOT_INITIALIZED`, `UNAUTHENTICATED`, `FORBIDDEN`). */
    code: string;
    /** What went wrong and what to fix. */
    message: string;
    /** Whether sending the same request again can help. */
    retry: boolean;
}

export interface OkResponse<T = any> {
    id: string;
    status: 'ok';
    data: T;
    /** Milliseconds (fractional): the server's figure for answers from the server, the client's for the rest. */
    duration: number;
    /** compat mode, `compute.execute`: the task's console output, when it wrote any. */
    logs?: string[];
    /** compat mode, `compute.execute`: set when the console output was cut. */
    logsTruncated?: boolean;
    /** compat mode, `storage.list`: pass it as `payload.cursor` for the next page. */
    cursor?: string;
}

export interface ErrorResponse {
    id: string;
    status: 'error';
    error: CSOPErrorInfo;
    duration: number;
}

export type Response<T = any> = OkResponse<T> | ErrorResponse;

/** A sync event, as the server sends it. */
export interface SyncEvent {
    type: 'event';
    /** The app's handle: the id the first `sync.subscribe` answered, also after reconnects. */
    subscription: string;
    channel: string;
    /**
     * The event name; presence changes are `presence.join` and `presence.leave`;
     * `sync.recovery` (`data: {recovered: false, epoch, offset}`) says messages were lost for
     * good (the channel's history no longer held them): reload the state.
     */
    event: string;
    data: any;
    /** The publisher's wall clock, ms since the epoch. */
    timestamp: number;
    /** The publishing plugin instance. */
    origin?: string;
    /** On a channel with history: the message's place (1, 2, …) in the stream `epoch`. */
    offset?: number;
    epoch?: string;
    [field: string]: any;
}

export interface DispatchOptions {
    /**
     * Milliseconds one attempt may run on the server (1–3,600,000; the server's default is
     * 5000). Also how long the request waits for a connection while the client is
     * disconnected (default: the constructor's `timeout`, 30 s), after which it answers
     * `NOT_CONNECTED`. For a page-local capability: the attempt's timeout (default 5000).
     */
    timeout?: number;
    /**
     * Sent to the server as `options.retry` unchanged (the server takes a number, 0–10). The
     * client also takes it as the number of times to send the request again when the socket
     * dropped while it was in flight (a number, or `{attempts}`); without attempts left such a
     * request answers `NOT_CONNECTED` with `retry: true`. For a page-local capability: retries
     * of failures that are retryable, with the server's backoff.
     */
    retry?: number | { attempts: number; [field: string]: any };
    /** Any other field is sent to the server as is (which refuses unknown ones). */
    [field: string]: any;
}

export interface CSOPOptions {
    /**
     * The server's WebSocket URL: ws(s)://, http(s):// (turned into ws(s)://) or a path
     * relative to the page. Default: `/v1/ws` on the server this module was loaded from.
     */
    url?: string;
    /**
     * A JWT (or a function giving one, called before every connection, so a refreshed token
     * is used on reconnect). Sent as the subprotocol `csop.bearer.<token>` next to `csop`.
     */
    token?: string | (() => string | Promise<string>);
    /** Reshape answers to the original library's shapes (default true); see README.md. */
    compat?: boolean;
    /** Reconnect backoff: full jitter under min(maxDelay, minDelay × 2^attempt); defaults 100 and 5000 ms. */
    reconnect?: { minDelay?: number; maxDelay?: number };
    /**
     * Milliseconds: how long init() waits for the connection, how long a (re)connection may
     * take, and how long a request waits for a connection when its own `timeout` is not given.
     * Default 30000.
     */
    timeout?: number;
    /** A WebSocket class to use instead of the global one (tests). */
    WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
    /** A source of random numbers in [0, 1) for the backoff jitter (tests). */
    random?: () => number;
}

/**
 * A page-local capability. Either an object whose methods are its operations
 * (`{ async hello(payload) { … } }`: `csop.dispatch('greeter.hello', payload)` calls
 * `hello(payload)`), or an object with `handle(operation, payload)`, which then answers every
 * operation. What the method returns (or resolves to) is the response's `data`; what it
 * throws is the error: `code` from the thrown value's `code` (default `EXECUTION_FAILED`),
 * `message` from its `message`, and `retry` from its `retry` (default: true for
 * `EXECUTION_FAILED` and `TIMEOUT`; never for `INVALID_*`, `*_NOT_FOUND`, `CONFLICT`,
 * `QUOTA_EXCEEDED`).
 */
export type LocalCapability =
    | { handle(operation: string, payload: any): any }
    | { [operation: string]: ((payload: any) => any) | any };

export interface CSOPInfo {
    /** The client library's version. */
    version: string;
    /** True from a successful init() until close() or a refused token (reconnecting keeps it true). */
    initialized: boolean;
    /**
     * Domain names: the server's (from the `host.info` done at every connection, when the
     * token allows it; otherwise the domains of the server's ok answers so far) plus the
     * page-local ones.
     */
    capabilities: string[];
    /** Whether the socket is up and restored (re-authenticated, re-subscribed). */
    connected: boolean;
    /** What `host.info` answered, or null when it was refused or not asked yet. */
    server: any | null;
}

export interface CloseInfo {
    code: number | null;
    reason: string;
    /** True when the client will not reconnect: a refused token (4401/4403) or close(). */
    final: boolean;
    /** When not final: milliseconds until the next connection attempt. */
    reconnectIn?: number;
    error?: CSOPErrorInfo;
}

export interface CSOPEvents {
    /** Every event from the server (sync messages, presence changes), after any subscription callback. */
    event: SyncEvent;
    /** Each time a connection is ready: authenticated, subscriptions restored, waiting requests sent. */
    open: { reconnected: boolean };
    /**
     * Each time a connection or a connection attempt ends (so also once per failed reconnect
     * attempt, with `reconnectIn`), and once when the client stops for good (`final`).
     */
    close: CloseInfo;
    /** An error frame from the server, a failed re-subscription, or a throwing callback. Logged to the console when nobody listens. */
    error: { code: string; message: string; subscription?: string; [field: string]: any };
}

export class CSOP {
    /** Creates a client; nothing is opened before init(). */
    constructor(options?: CSOPOptions);

    /** The client library's version. */
    readonly version: string;
    /** As `info().initialized`. */
    readonly initialized: boolean;

    /**
     * Opens the WebSocket. Resolves once connected and authenticated (the server answered the
     * `host.info` probe, whatever its status). Rejects with an Error carrying `.code` when the
     * first connection fails: `UNAUTHENTICATED` or `FORBIDDEN` (close 4401/4403: final, no
     * reconnecting), `NOT_CONNECTED` (unreachable, closed, or not connected within `timeout`).
     * After a rejection init() may be called again. Calling it again while connecting or
     * connected returns the same promise. `config` (the original's plugin settings) is ignored.
     */
    init(config?: unknown): Promise<void>;

    /**
     * Sends one request and resolves with its response. Never rejects or throws: a malformed
     * action (`INVALID_ACTION`), a payload that is not a JSON object (`INVALID_PAYLOAD`), no
     * init() yet (`NOT_INITIALIZED`), no connection (`NOT_CONNECTED`), a refused token are all
     * error responses. A domain registered with register() is answered in the page.
     *
     * `sync.subscribe` takes `payload.callback` (a function, kept in the page, never sent):
     * it is called with each event of that subscription, also after reconnects. The answer's
     * `data.subscription` is the app's handle for `sync.unsubscribe`, valid across reconnects.
     * On a channel with history the client re-subscribes after a reconnect from the last event
     * it delivered (`since`), so nothing published meanwhile is lost or delivered twice; when
     * the history no longer reaches back, the callback gets a `sync.recovery` event.
     * `sync.unsubscribe` with `{channel}` drops every callback of that channel.
     *
     * While disconnected, requests wait for the connection (at most their `timeout`, default
     * the constructor's `timeout`) and are sent once subscriptions are restored.
     */
    dispatch<T = any>(action: string, payload?: Record<string, any>, options?: DispatchOptions): Promise<Response<T>>;

    /**
     * Saves `body` as the streamed value of `key` over HTTP (`PUT /v1/streams/{key}`): any
     * size, replacing the key's value only once all of it has arrived. Never rejects.
     */
    putStream(
        key: string, body: Blob | ArrayBuffer | ArrayBufferView | string | ReadableStream<Uint8Array>,
        options?: { ttl?: number; ifVersion?: number },
    ): Promise<Response<{ key: string; location: 'stream'; size: number; version: number }>>;

    /**
     * Reads the streamed value of `key` over HTTP (`GET /v1/streams/{key}`) as a stream of
     * bytes, never whole in memory. Never rejects.
     */
    getStream(key: string): Promise<Response<{ size: number; version: number; body: ReadableStream<Uint8Array>; response: globalThis.Response }>>;

    /**
     * Registers a capability living in the page under the domain `name`; it takes precedence
     * over a server domain of the same name. Throws TypeError for a name that is not an
     * identifier or a capability that is not an object.
     */
    register(name: string, capability: LocalCapability): void;

    /** Removes a page-local capability; returns whether there was one. */
    unregister(name: string): boolean;

    /** The page-local capability registered as `name`; undefined for server domains. */
    getCapability(name: string): LocalCapability | undefined;

    /** Synchronous: the library's version, state and known domains. */
    info(): CSOPInfo;

    /** Adds a listener; returns a function that removes it. */
    on<K extends keyof CSOPEvents>(name: K, listener: (value: CSOPEvents[K]) => void): () => void;

    /** Removes a listener. */
    off<K extends keyof CSOPEvents>(name: K, listener: (value: CSOPEvents[K]) => void): void;

    /**
     * Closes the socket and stops reconnecting; requests waiting or in flight answer
     * `NOT_CONNECTED` (`retry: false`), subscriptions and their callbacks are dropped.
     * init() opens the client again.
     */
    close(): void;
}

export default CSOP;

/**
 * ws(s)://host:port/v1/ws for a module URL http(s)://host:port/… (…/PREFIX/v1/ws for a module
 * served at …/PREFIX/v1/csop.js); null for other schemes.
 */
export function defaultSocketURL(moduleURL: string): string | null;

/** `url` (absolute or relative to `base`) as a ws: or wss: URL; null when it cannot be one. */
export function resolveSocketURL(url: string, base?: string): string | null;

/** A full-jitter backoff delay in [0, min(maxDelay, minDelay × 2^attempt)). */
export function backoffDelay(attempt: number, minDelay?: number, maxDelay?: number, random?: () => number): number;

/** `{domain, operation}` for a valid action, else null (the server's rule). */
export function parseAction(action: unknown): { domain: string; operation: string } | null;

/** The number of extra attempts a `retry` option asks for (0–10). */
export function retryCount(retry: unknown): number;

/** An error response. */
export function errorResponse(id: string, code: string, message: string, retry?: boolean, duration?: number): ErrorResponse;

/** The compat-mode reshaping of an ok response for `action`; other responses unchanged. */
export function toCompat<T = any>(action: string, response: Response<T>): Response<any>;

/// The script every fresh context runs once. It removes what JavaScriptCore exposes beyond
/// the ECMAScript intrinsics, installs a capturing `console`, freezes the intrinsics (so a
/// task cannot change them for the next one) and returns two functions:
///
/// - `invoke(factory, data, maxResultBytes)` runs one task, entirely inside the host's one
///   call, so the watchdog's time limit, cancellation and memory cap cover all of it:
///   `factory()` makes a fresh function object from the cached compiled source (so nothing
///   set on the function, its `prototype` or through `arguments.callee` reaches the next
///   call), calls it with `data`, converts the result to JSON text (getters, `toJSON` and
///   proxy traps it runs are task code), and runs the promise reactions the task queued. A
///   returned Promise is settled first (the reactions run, then its value is converted).
///   The outcome is the JSON text, or `[kind, message]`: kind `"thrown"` (what the task threw,
///   as "Name: message (line N)"), `"rejected"` (the returned Promise's reason, the same way),
///   `"unsettled"` (the returned Promise was still pending with no reaction left to run),
///   `"size"` (the text would pass `maxResultBytes`), `"depth"` (arrays and objects nested
///   deeper than the host can read) or `"type"` (no JSON form).
///   Last it clears the legacy RegExp statics, which otherwise show the task's last match to
///   the next task, and checks whether the task wrote console lines, added globals or made
///   the global object non-extensible (then the context is replaced). It returns the outcome
///   alone when none of that happened (one VM entry per task, the common case), else
///   `{outcome, report: {logs, truncated, polluted}}`.
/// - `compilesAsAsync(body)` says whether `body` is exactly one `async` function body (one that
///   uses `await` is not a plain function's).
enum SandboxPrelude {
    static let source = #"""
    (function (maxConsoleChars, maxResultDepth, bodyLineOffset, runPromiseReactions) {
        'use strict';
        const G = globalThis;
        const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
        const removed = ['print', '$vm', '$', 'console', 'WebAssembly', 'SharedArrayBuffer', 'Atomics',
            'gc', 'debug', 'describe', 'describeArray', 'readline', 'readFile', 'read', 'load', 'run',
            'runString', 'loadString', 'quit', 'checkSyntax', 'setTimeout', 'setInterval', 'clearTimeout',
            'clearInterval', 'queueMicrotask', 'require', 'process', 'fetch', 'XMLHttpRequest', 'importScripts'];
        for (const name of removed) delete G[name];

        let logs = [];
        let used = 0;
        let truncated = false;
        const show = (value) => {
            if (typeof value === 'string') return value;
            try {
                const text = JSON.stringify(value);
                if (text !== undefined) return text;
            } catch (e) {}
            try { return String(value); } catch (e) { return '[unprintable]'; }
        };
        const writer = (prefix) => function (...args) {
            if (truncated) return;
            let line = prefix + args.map(show).join(' ');
            if (used + line.length > maxConsoleChars) {
                line = line.slice(0, Math.max(0, maxConsoleChars - used));
                truncated = true;
            }
            used += line.length;
            logs.push(line);
        };
        const console = {
            log: writer(''), info: writer(''), debug: writer(''),
            warn: writer('[warn] '), error: writer('[error] ')
        };
        Object.defineProperty(G, 'console', { value: console, writable: false, enumerable: false, configurable: false });

        // Pollution is checked after every task, so it must be cheap (listing the global
        // object's own names takes microseconds): counting enumerable keys and own symbols
        // catches assignments, and the define family (the only way to add a non-enumerable
        // global) is wrapped to flag definitions that land on the global object, also through a
        // proxy of it (checked by the key's presence before and after).
        let definedOnGlobal = false;
        const defineProperty = Object.defineProperty;
        const defineProperties = Object.defineProperties;
        const reflectDefine = Reflect.defineProperty;
        const hasOwn = Object.hasOwn;
        const ownNames = Object.getOwnPropertyNames;
        const ownSymbols = Object.getOwnPropertySymbols;
        // ToPropertyKey, applied once as the real function would.
        const toKey = (k) => {
            if (typeof k === 'symbol' || (typeof k !== 'object' && typeof k !== 'function') || k === null) {
                return typeof k === 'symbol' ? k : '' + k;
            }
            const holder = {};
            holder[k] = 0;
            return Reflect.ownKeys(holder)[0];
        };
        const watchDefine = (define, o, k, d) => {
            if (o === G) definedOnGlobal = true;
            if (o === G || o === null || (typeof o !== 'object' && typeof o !== 'function')) return define(o, k, d);
            const key = toKey(k);
            const had = hasOwn(G, key);
            const result = define(o, key, d);
            if (!had && hasOwn(G, key)) definedOnGlobal = true;
            return result;
        };
        Object.defineProperty = { defineProperty(o, k, d) { return watchDefine(defineProperty, o, k, d); } }.defineProperty;
        Reflect.defineProperty = { defineProperty(o, k, d) { return watchDefine(reflectDefine, o, k, d); } }.defineProperty;
        Object.defineProperties = {
            defineProperties(o, p) {
                if (o === G) {
                    definedOnGlobal = true;
                    return defineProperties(o, p);
                }
                const before = ownNames(G).length + ownSymbols(G).length;
                const result = defineProperties(o, p);
                if (ownNames(G).length + ownSymbols(G).length !== before) definedOnGlobal = true;
                return result;
            }
        }.defineProperties;

        // Assigning e.g. `obj.toString = f` must keep working once prototypes are frozen
        // (the "override mistake"): these become accessors whose setter defines an own property.
        const tame = (proto, name) => {
            const d = Object.getOwnPropertyDescriptor(proto, name);
            if (!d || !('value' in d) || !d.configurable) return;
            const value = d.value;
            Object.defineProperty(proto, name, {
                get() { return value; },
                set(v) {
                    if (this === proto) throw new TypeError('Cannot assign to read only property ' + String(name));
                    Object.defineProperty(this, name, { value: v, writable: true, enumerable: true, configurable: true });
                },
                enumerable: d.enumerable, configurable: false
            });
        };
        for (const name of ['constructor', 'toString', 'valueOf', 'toLocaleString', 'hasOwnProperty', 'isPrototypeOf']) tame(Object.prototype, name);
        for (const name of ['constructor', 'toString', 'name']) tame(Function.prototype, name);
        for (const E of [Error, TypeError, RangeError, SyntaxError, ReferenceError, EvalError, URIError]) {
            for (const name of ['constructor', 'name', 'message', 'toString']) tame(E.prototype, name);
        }
        for (const name of ['constructor', 'toString']) tame(Array.prototype, name);

        // The global object itself stays extensible: tasks may add globals (detected below).
        const seen = new Set([G]);
        const freeze = (o) => {
            if (o === null || (typeof o !== 'object' && typeof o !== 'function') || seen.has(o)) return;
            seen.add(o);
            Object.freeze(o);
            for (const key of Reflect.ownKeys(o)) {
                const d = Object.getOwnPropertyDescriptor(o, key);
                if ('value' in d) freeze(d.value); else { freeze(d.get); freeze(d.set); }
            }
            freeze(Object.getPrototypeOf(o));
        };
        const hidden = [
            function* () {}, async function () {}, async function* () {}, (function* () {})(),
            (async function* () {})(), [][Symbol.iterator](), ''[Symbol.iterator](), new Map()[Symbol.iterator](),
            new Set()[Symbol.iterator](), /x/[Symbol.matchAll](''), Promise.resolve()
        ];
        const maybe = [
            () => [].values().map((x) => x), () => Iterator.from({ next() { return { done: true }; } }),
            () => new Intl.Segmenter().segment('a'), () => new Intl.Segmenter().segment('a')[Symbol.iterator](),
            () => (async function* () {})()[Symbol.asyncIterator]()
        ];
        for (const make of maybe) {
            try { hidden.push(make()); } catch (e) {}
        }
        for (const o of hidden) freeze(Object.getPrototypeOf(o));
        for (const key of Reflect.ownKeys(G)) {
            const d = Object.getOwnPropertyDescriptor(G, key);
            if (d.configurable) {
                Object.defineProperty(G, key, 'value' in d ? { writable: false, configurable: false } : { configurable: false });
            }
            if ('value' in d) freeze(d.value); else { freeze(d.get); freeze(d.set); }
        }
        freeze(Object.getPrototypeOf(G));

        // Every match updates RegExp.$1…$9, lastMatch, input, … for the whole global object; a
        // throwaway match on the empty string after each task resets all of them. The
        // `multiline` flag (also `$*`) is a setter of its own.
        const exec = RegExp.prototype.exec;
        const blank = /(?:)/;
        const multiline = Object.getOwnPropertyDescriptor(RegExp, 'multiline');
        const setMultiline = multiline && multiline.set;
        const isExtensible = Object.isExtensible;

        // The result's conversion to JSON, written here rather than by JSON.stringify of the
        // result: it follows JSON.stringify (ECMA-262 SerializeJSONProperty: toJSON, wrapper
        // objects, own enumerable keys, arrays by length) and leaves string escaping and number
        // formatting to it, but it counts a lower bound of the UTF-8 bytes before writing each
        // value and stops past the limit, and every getter, toJSON and proxy trap runs here, in
        // task time. Natively, shared references (or a getter that rebuilds the result) could
        // make JSON.stringify write gigabytes where no limit can stop it. Pieces are joined in
        // chunks, so memory stays near the text's size.
        const stringify = JSON.stringify;
        const isArray = Array.isArray;
        const objectKeys = Object.keys;
        const getPrototypeOf = Object.getPrototypeOf;
        const apply = Reflect.apply;
        const floor = Math.floor;
        const isView = ArrayBuffer.isView;
        const typedArrayLength = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Int8Array.prototype), 'length').get;
        const maxLength = Number.MAX_SAFE_INTEGER;
        const objectToString = Object.prototype.toString;
        const numberValueOf = Number.prototype.valueOf;
        const stringValueOf = String.prototype.valueOf;
        const booleanValueOf = Boolean.prototype.valueOf;
        const bigintValueOf = BigInt.prototype.valueOf;
        const ObjectPrototype = Object.prototype;
        const ArrayPrototype = Array.prototype;
        const PromiseIntrinsic = Promise;
        const promiseThen = Promise.prototype.then;
        const maxDepth = maxResultDepth;
        const tooLarge = Object.freeze({});
        const tooDeep = Object.freeze({});
        const nonFinite = Object.freeze({});
        const ancestors = new Set();
        let remaining = 0;
        let nonFiniteKey = '';
        let parts = [];
        let chunks = [];
        // Each charge includes the comma after the value; a container's own charge is its
        // brackets less the comma its last member does not have.
        const charge = (bytes) => {
            remaining -= bytes;
            if (remaining < 0) throw tooLarge;
        };
        const put = (piece) => {
            parts.push(piece);
            if (parts.length === 4096) {
                chunks.push(parts.join(''));
                parts = [];
            }
        };
        // A wrapper object's primitive, as JSON.stringify takes it; other objects as they are.
        const unwrap = (value) => {
            let tag;
            try { tag = apply(objectToString, value, []); } catch (e) { return value; }
            try {
                switch (tag) {
                case '[object Number]': apply(numberValueOf, value, []); break;
                case '[object String]': apply(stringValueOf, value, []); break;
                case '[object Boolean]': return apply(booleanValueOf, value, []);
                case '[object BigInt]': return apply(bigintValueOf, value, []);
                default: return value;
                }
            } catch (e) {
                return value;  // A Symbol.toStringTag, not a wrapper.
            }
            return tag === '[object Number]' ? +value : '' + value;
        };
        // The value JSON.stringify writes for holder[key]: after toJSON, unwrapped.
        const prepare = (value, key) => {
            const type = typeof value;
            if ((type === 'object' && value !== null) || type === 'function' || type === 'bigint') {
                const toJSON = value.toJSON;
                if (typeof toJSON === 'function') value = apply(toJSON, value, [typeof key === 'number' ? '' + key : key]);
            }
            if (typeof value === 'object' && value !== null) {
                const proto = getPrototypeOf(value);
                if (proto !== ObjectPrototype && proto !== ArrayPrototype && proto !== null) value = unwrap(value);
            }
            return value;
        };
        // Whether JSON.stringify leaves a prepared value out (null in arrays).
        const omitted = (value) => value === undefined || typeof value === 'function' || typeof value === 'symbol';
        const emit = (value, depth) => {
            switch (typeof value) {
            case 'string': charge(value.length + 3); put(stringify(value)); return;
            case 'number':
                if (value - value !== 0) throw nonFinite;
                charge(2);
                put(value);
                return;
            case 'boolean': charge(5); put(value ? 'true' : 'false'); return;
            case 'bigint': throw new TypeError('JSON.stringify cannot serialize BigInt.');
            }
            if (value === null) { charge(5); put('null'); return; }
            if (depth === maxDepth) throw tooDeep;
            if (ancestors.has(value)) throw new TypeError('JSON.stringify cannot serialize cyclic structures.');
            ancestors.add(value);
            if (isArray(value)) {
                const claimed = +value.length;  // ToLength, as JSON.stringify reads it: once.
                const length = claimed > 0 ? (claimed < maxLength ? floor(claimed) : maxLength) : 0;
                // Every element writes at least "0," or "null,".
                if (!(length * 2 <= remaining)) throw tooLarge;
                charge(1);
                put('[');
                for (let i = 0; i < length; i++) {
                    if (i > 0) put(',');
                    const item = prepare(value[i], i);
                    if (omitted(item)) {
                        charge(5);
                        put('null');
                    } else {
                        nonFiniteKey = i;
                        emit(item, depth + 1);
                    }
                }
                put(']');
            } else {
                if (isView(value)) {
                    // A typed array's keys are its indexes: refuse a huge one before listing them.
                    let length = 0;
                    try { length = apply(typedArrayLength, value, []); } catch (e) {}
                    if (!(length * 6 <= remaining)) throw tooLarge;
                }
                const keys = objectKeys(value);
                charge(1);
                put('{');
                let first = true;
                for (let i = 0; i < keys.length; i++) {
                    const name = keys[i];
                    const item = prepare(value[name], name);
                    if (omitted(item)) continue;
                    charge(name.length + 3);
                    put(first ? stringify(name) + ':' : ',' + stringify(name) + ':');
                    first = false;
                    nonFiniteKey = name;
                    emit(item, depth + 1);
                }
                put('}');
            }
            ancestors.delete(value);
        };
        const describe = (e) => { try { return String(e); } catch (_) { return 'an exception'; } };
        const noJSON = (what) => ['type', 'the result is ' + what + ', which has no JSON form'];
        const nonFiniteMessage = (where) => ['type', 'the result holds NaN or Infinity' + where
            + ', which JSON cannot represent; return null or a string in its place'];
        const convert = (value, maxBytes) => {
            switch (typeof value) {
            case 'undefined': return 'null';
            case 'boolean': return value ? 'true' : 'false';
            case 'number': return value - value === 0 ? stringify(value) : nonFiniteMessage('');
            case 'string': return value.length + 2 > maxBytes ? ['size', ''] : stringify(value);
            case 'symbol': return noJSON('a symbol');
            case 'bigint': return noJSON('a BigInt (return String(n) instead)');
            }
            try {
                const root = prepare(value, '');
                if (omitted(root)) {
                    return noJSON(typeof value === 'function' ? 'a function' : 'a value whose toJSON returned nothing');
                }
                remaining = maxBytes + 1;  // The root has no comma after it.
                nonFiniteKey = '';
                emit(root, 0);
                chunks.push(parts.join(''));
                return chunks.length === 1 ? chunks[0] : chunks.join('');
            } catch (e) {
                if (e === tooLarge) return ['size', ''];
                if (e === tooDeep) return ['depth', ''];
                if (e === nonFinite) return nonFiniteMessage(' (at key "' + nonFiniteKey + '")');
                return ['type', describe(e)];
            } finally {
                ancestors.clear();
                parts = [];
                chunks = [];
            }
        };
        // "Name: message (line N)" for what the task threw, N counted from the body's first line.
        const describeThrown = (e) => {
            let text = describe(e);
            try {
                const line = (typeof e === 'object' && e !== null) || typeof e === 'function' ? e.line : undefined;
                if (typeof line === 'number' && line >= 1 && line - line === 0) {
                    const n = floor(line) - bodyLineOffset;
                    text += ' (line ' + (n > 1 ? n : 1) + ')';
                }
            } catch (_) {}
            return text;
        };
        // Everything the task runs happens inside this one call, under the watchdog: the
        // function, the result's conversion, what it threw turned into text, and the promise
        // reactions it queued. A returned Promise is settled here (its reactions, every await
        // before it included, run inside this call), and the task answers with its value.
        const invoke = function (factory, data, maxBytes) {
            let outcome;
            let value;
            try {
                value = factory()(data);
                if (value instanceof PromiseIntrinsic) {
                    let settled = false;
                    apply(promiseThen, value, [
                        (fulfilled) => { settled = true; value = fulfilled; },
                        (reason) => { settled = true; outcome = ['rejected', describeThrown(reason)]; },
                    ]);
                    if (runPromiseReactions() !== true) {
                        outcome = ['type', 'the result is a Promise, and this JavaScriptCore cannot settle it inside the task; return the value itself'];
                    } else if (!settled) {
                        outcome = ['unsettled', ''];
                    }
                }
            } catch (e) {
                outcome = ['thrown', describeThrown(e)];
            }
            if (outcome === undefined) outcome = convert(value, maxBytes);
            runPromiseReactions();
            const report = after();
            return report === null ? outcome : { outcome, report };
        };

        const enumerableBaseline = Object.keys(G).length;
        const symbolBaseline = ownSymbols(G).length;
        definedOnGlobal = false;
        // The global object's prototype is immutable (setting it throws), so only its own
        // properties and its extensibility can change.
        const after = function () {
            apply(exec, blank, ['']);
            if (setMultiline) apply(setMultiline, RegExp, [false]);
            const polluted = definedOnGlobal || Object.keys(G).length !== enumerableBaseline
                || ownSymbols(G).length !== symbolBaseline || !isExtensible(G);
            if (!polluted && logs.length === 0 && !truncated) return null;
            const report = { logs, truncated, polluted };
            logs = [];
            used = 0;
            truncated = false;
            return report;
        };
        // Whether `body` is exactly one async function body: the AsyncFunction constructor, like
        // JSObjectMakeFunction for a plain body, parses it alone, so `}); (async function () {`
        // and the like are refused.
        const compilesAsAsync = function (body) {
            try {
                AsyncFunction('data', body);
                return true;
            } catch (_) {
                return false;
            }
        };
        return Object.freeze({ invoke: Object.freeze(invoke), compilesAsAsync: Object.freeze(compilesAsAsync) });
    })
    """#
}

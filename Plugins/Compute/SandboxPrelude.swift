/// The script every fresh context runs once. It removes what JavaScriptCore exposes beyond
/// the ECMAScript intrinsics, installs a capturing `console`, freezes the intrinsics (so a
/// task cannot change them for the next one) and returns `after()`, which reports captured
/// output and whether the task added globals (then the context is replaced).
enum SandboxPrelude {
    static let source = #"""
    (function (maxConsoleChars) {
        'use strict';
        const G = globalThis;
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

        // Pollution is checked after every task, so it must be cheap: counting enumerable keys
        // and own symbols catches assignments, and the define family (the only way to add a
        // non-enumerable global) is wrapped to flag definitions on the global object.
        let definedOnGlobal = false;
        const defineProperty = Object.defineProperty;
        const defineProperties = Object.defineProperties;
        const reflectDefine = Reflect.defineProperty;
        Object.defineProperty = { defineProperty(o, k, d) { if (o === G) definedOnGlobal = true; return defineProperty(o, k, d); } }.defineProperty;
        Object.defineProperties = { defineProperties(o, p) { if (o === G) definedOnGlobal = true; return defineProperties(o, p); } }.defineProperties;
        Reflect.defineProperty = { defineProperty(o, k, d) { if (o === G) definedOnGlobal = true; return reflectDefine(o, k, d); } }.defineProperty;

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

        const enumerableBaseline = Object.keys(G).length;
        const symbolBaseline = Object.getOwnPropertySymbols(G).length;
        definedOnGlobal = false;
        return function after() {
            const polluted = definedOnGlobal || Object.keys(G).length !== enumerableBaseline
                || Object.getOwnPropertySymbols(G).length !== symbolBaseline;
            if (!polluted && logs.length === 0 && !truncated) return null;
            const report = { logs, truncated, polluted };
            logs = [];
            used = 0;
            truncated = false;
            return report;
        };
    })
    """#
}

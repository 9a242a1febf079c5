// Shared by the browser test pages: query parameters, checks, and the report.
//
// A page records checks, then finish() sets document.title to "PASS" or "FAIL: <names>" and
// POSTs {page, ok, checks: [{name, ok, detail}]} as JSON to the `report` query parameter (a
// URL whose path is "/" or empty gets "/test-results" appended). The POST is a CORS "simple"
// request (Content-Type text/plain, mode no-cors), so the collector needs no CORS headers; it
// must read the body as JSON whatever the content type says.

export const params = new URLSearchParams(location.search);

/** The `token` query parameter, or undefined. */
export const token = params.get('token') || undefined;

/** The `run` query parameter (names keys and channels so runs do not collide), or a random one. */
export const run = params.get('run') || Math.random().toString(36).slice(2, 10);

/** Milliseconds the page may take before it reports what it has (`wait`, default 60000). */
export const wait = Number(params.get('wait') || 60000);

export function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves with what `probe()` returns once it is truthy; null after `ms`. */
export async function eventually(probe, ms, every = 50) {
    const deadline = Date.now() + ms;
    for (;;) {
        const value = await probe();
        if (value) return value;
        if (Date.now() > deadline) return null;
        await sleep(every);
    }
}

export function show(value) {
    try {
        return typeof value === 'string' ? value : JSON.stringify(value);
    } catch {
        return String(value);
    }
}

export class Checks {
    constructor(page, ms = wait) {
        this.page = page;
        this.checks = [];
        this.finished = false;
        this.log = document.getElementById('log');
        document.title = 'RUNNING';
        this.deadline = setTimeout(() => {
            this.check('finished in time', false, `the page did not finish within ${ms} ms`);
            this.finish();
        }, ms);
    }

    /** Records one check; returns `ok`. */
    check(name, ok, detail = '') {
        ok = Boolean(ok);
        this.checks.push({ name, ok, detail: show(detail) });
        if (this.log) this.log.textContent += `${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ` — ${show(detail)}` : ''}\n`;
        return ok;
    }

    /** Records a response check: ok when status is "ok" and `predicate(data)` holds. */
    response(name, response, predicate = () => true) {
        let ok = response?.status === 'ok';
        if (ok) {
            try {
                ok = Boolean(predicate(response.data, response));
            } catch (error) {
                ok = false;
            }
        }
        return this.check(name, ok, response);
    }

    /** Sets the title and posts the report, once. */
    async finish() {
        if (this.finished) return;
        this.finished = true;
        clearTimeout(this.deadline);
        const failed = this.checks.filter((c) => !c.ok).map((c) => c.name);
        const ok = this.checks.length > 0 && failed.length === 0;
        const body = { page: this.page, ok, checks: this.checks };
        const target = reportURL();
        if (target) {
            try {
                await fetch(target, {
                    method: 'POST', mode: 'no-cors', keepalive: true,
                    headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
                    body: JSON.stringify(body),
                });
            } catch (error) {
                failed.push(`report POST failed: ${error?.message ?? error}`);
            }
        }
        document.title = ok && failed.length === 0 ? 'PASS' : `FAIL: ${failed.join(', ') || 'no checks ran'}`;
    }
}

function reportURL() {
    const report = params.get('report');
    if (!report) return null;
    try {
        const url = new URL(report, location.href);
        if (url.pathname === '' || url.pathname === '/') url.pathname = '/test-results';
        return url.href;
    } catch {
        return null;
    }
}

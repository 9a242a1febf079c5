import CSOPHost   // product "CSOP": the host, requests, responses and JSON values

// Finds plugins.d as csop does (CSOP_PLUGINS_DIR, ./plugins.d, ~/.config/csop/plugins.d, PREFIX/etc/csop/plugins.d).
let host = await CSOPHost.load(HostConfiguration())
for failure in host.failures { print(failure) }

let saved = await host.dispatch("storage.save", ["key": "user:1", "data": ["name": "Ada"]],
                                options: RequestOptions(timeout: 2000, retry: 2))
if let error = saved.error { print(error.code, error.message) }
print(await host.dispatch("storage.get", ["key": "user:1"]))    // {"id":"csop_…","status":"ok","data":{"name":"Ada"},"duration":…}
print(await host.dispatch("compute.execute", ["task": "fibonacci", "data": ["n": 90]]))
print(await host.dispatch("diag.noop"))

let events = host.events()                     // AsyncStream<HostEvent>: events from now on
_ = await host.dispatch("sync.subscribe", ["channel": "news"])
_ = await host.dispatch("sync.broadcast", ["channel": "news", "event": "hello", "data": ["text": "hi"]])
for await event in events {
    print(event.value)                         // {"type":"event","subscription":…,"channel":"news","event":"hello",…}
    break                                      // the stream ends only at shutdown: stop after the first
}

await host.shutdown()                          // drains running calls, then destroys the plugins

import Foundation

// Why the host links Foundation although it uses little of it (a thread for shutdown): the storage, compute and sync
// plugins do (through swift-crypto and postgres-nio). Loading Foundation with dlopen after an
// async `main` has parked the main thread in dispatch_main() hands the main queue to a
// CFRunLoop that never runs, so the program's next await on the main actor never resumes
// (top-level code runs there). Linked into every program that embeds the host, Foundation is
// loaded before `main`, Swift's async main then drains the main queue with CFRunLoopRun, and
// plugins can be loaded at any time. The embedding example (examples/embed), which never
// imports Foundation, is the test.

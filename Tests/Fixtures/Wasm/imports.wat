;; A module that asks for a host function: refused, wasm tasks get no imports.
(module
  (import "env" "read_file" (func $read (param i32) (result i32)))
  (func (export "run") (result i32) (call $read (i32.const 0))))

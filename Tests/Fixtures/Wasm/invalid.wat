;; Type-checks wrong (an i64 where an i32 is declared): built with `wat2wasm --no-check`, refused as invalid.
(module (func (export "bad") (result i32) (i64.const 1)))
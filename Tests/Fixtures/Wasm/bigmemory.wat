;; Asks for 4 GiB of memory up front (65536 pages): over any memory cap.
(module
  (memory (export "memory") 65536)
  (func (export "start") (result i32) (i32.const 1)))

;; What must stop: an endless loop, a memory.grow bomb, deep recursion, and the traps.
(module
  (memory 1)
  (func (export "spin") (loop $forever (br $forever)))
  (func (export "grow") (result i32)
    (loop $more (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    (memory.size))
  (func $recurse (export "recurse") (param i32) (result i32)
    (call $recurse (i32.add (local.get 0) (i32.const 1))))
  (func (export "unreachable") unreachable)
  (func (export "oob") (result i32) (i32.load (i32.const 70000)))
  (func (export "divzero") (param i32) (result i32) (i32.div_s (i32.const 1) (local.get 0))))

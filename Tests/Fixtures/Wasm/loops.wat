;; Control flow the JIT's rewriting must keep (WasmInstrumenter): branches out of nested
;; loops, br_table across loops, loops with parameters and results, calls through a table
;; (element segments renumbered), recursion, a start function and a funcref global. Every
;; export answers the same in WasmKit's interpreter and in JavaScriptCore.
(module
  (type $binary (func (param i32 i32) (result i32)))
  (type $loopio (func (param i32) (result i32)))
  (table 4 funcref)
  (elem (i32.const 0) $add $sub $mul)
  (global $started (mut i32) (i32.const 0))
  (global $ref funcref (ref.func $mul))
  (start $start)
  (func $start (global.set $started (i32.const 7)))
  (func $add (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func $sub (param i32 i32) (result i32) (i32.sub (local.get 0) (local.get 1)))
  (func $mul (param i32 i32) (result i32) (i32.mul (local.get 0) (local.get 1)))
  (func (export "started") (result i32) (global.get $started))
  ;; Sums i*j over i < n, j < n, leaving both loops from the inner one when the sum passes limit.
  (func (export "nested") (param $n i32) (param $limit i32) (result i32)
    (local $i i32) (local $j i32) (local $sum i32)
    (block $out
      (loop $rows
        (br_if $out (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $j (i32.const 0))
        (loop $cols
          (local.set $sum (i32.add (local.get $sum) (i32.mul (local.get $i) (local.get $j))))
          (br_if $out (i32.gt_u (local.get $sum) (local.get $limit)))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br_if $cols (i32.lt_u (local.get $j) (local.get $n))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $rows)))
    (local.get $sum))
  ;; Counts down from n, routing each step through br_table to one of three counters.
  (func (export "table") (param $n i32) (result i32)
    (local $a i32) (local $b i32) (local $c i32)
    (loop $next
      (block $done
        (block $third
          (block $second
            (block $first
              (br_table $first $second $third $done
                (select (i32.rem_u (local.get $n) (i32.const 3)) (i32.const 3) (local.get $n))))
            (local.set $a (i32.add (local.get $a) (i32.const 1)))
            (local.set $n (i32.sub (local.get $n) (i32.const 1)))
            (br $next))
          (local.set $b (i32.add (local.get $b) (i32.const 1)))
          (local.set $n (i32.sub (local.get $n) (i32.const 1)))
          (br $next))
        (local.set $c (i32.add (local.get $c) (i32.const 1)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (i32.add (i32.mul (local.get $a) (i32.const 10000)) (i32.add (i32.mul (local.get $b) (i32.const 100)) (local.get $c))))
  ;; A loop that takes a parameter and gives a result: doubles x n times.
  (func (export "carry") (param $x i32) (param $n i32) (result i32)
    (local.get $x)
    (loop $again (type $loopio) (param i32) (result i32)
      (i32.add (local.tee $x) (local.get $x))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $again (i32.gt_s (local.get $n) (i32.const 0)))))
  ;; A loop that gives a result without parameters: the first power of 2 at or past n.
  (func (export "power") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (i32.const 1))
    (loop $up (result i32)
      (local.set $p (i32.shl (local.get $p) (i32.const 1)))
      (br_if $up (i32.lt_u (local.get $p) (local.get $n)))
      (local.get $p)))
  ;; Folds 1..n with the table's function k (0 add, 1 sub, 2 mul, 3 the global's).
  (func (export "fold") (param $k i32) (param $n i32) (result i32)
    (local $acc i32) (local $i i32)
    (table.set 0 (i32.const 3) (global.get $ref))
    (local.set $acc (i32.const 1))
    (local.set $i (i32.const 1))
    (block $done
      (loop $step
        (br_if $done (i32.gt_u (local.get $i) (local.get $n)))
        (local.set $acc (call_indirect (type $binary) (local.get $acc) (local.get $i) (local.get $k)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $step)))
    (local.get $acc))
  ;; Naive recursion: many calls, no loops.
  (func $fib (export "fib") (param $n i32) (result i32)
    (if (result i32) (i32.lt_u (local.get $n) (i32.const 2))
      (then (local.get $n))
      (else (i32.add (call $fib (i32.sub (local.get $n) (i32.const 1))) (call $fib (i32.sub (local.get $n) (i32.const 2)))))))
  ;; Calls a function (through call) inside a loop many times: the call counter's path.
  (func (export "calls") (param $n i32) (result i32)
    (local $acc i32)
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $acc (call $add (local.get $acc) (local.get $n)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $more)))
    (local.get $acc)))

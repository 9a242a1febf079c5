;; The benchmark's CPU-heavy loop: the same as ComputeBench's JavaScript and Swift versions.
;; Sums (i * i) xor (i >> 3) over i in [0, n), wrapping at 32 bits.
(module
  (func (export "heavy") (param $n i32) (result i32)
    (local $i i32) (local $acc i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $acc (i32.add (local.get $acc)
          (i32.xor (i32.mul (local.get $i) (local.get $i)) (i32.shr_u (local.get $i) (i32.const 3)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $acc)))

// Small buffers, derived from the default config: act 0.5 KiB, wgt 4 KiB, acc 1 KiB, vec 64 KiB.
// RUN: sed -e '/name = "act"/,/size_kib/s/value = [0-9.]*/value = 0.5/' \
// RUN:     -e '/name = "wgt"/,/size_kib/s/value = [0-9.]*/value = 4/' \
// RUN:     -e '/name = "acc"/,/size_kib/s/value = [0-9.]*/value = 1/' \
// RUN:     -e '/name = "vec"/,/size_kib/s/value = [0-9.]*/value = 64/' \
// RUN:     %S/../../../ctac/data/default_hw.toml > %t.toml
// RUN: not ctac-opt %s -p 'lower-to-isa{hw="%t.toml"}' 2>&1 | filecheck %s

// Limits of the small buffers (act halves of 128 elements, wgt halves of 1024) are reported per
// op, not as out-of-range tiles: a softmax row of 300 does not fit a buffer half. (The attention
// over 80 keys that did not fit a wgt half before key tiling now compiles: see
// attention_key_tiles.mlir.)

// CHECK:      error: 1 op(s) cannot be lowered to the CTA-ISA:
// CHECK-NEXT:   'p' (onnx.Softmax): rows of 300 elements do not fit a buffer half
func.func @main(%x: tensor<2x300xf32> {onnx.name = "x"}, %q: tensor<1x1x2x8xf32> {onnx.name = "q"}, %k: tensor<1x1x80x8xf32> {onnx.name = "k"}, %v: tensor<1x1x80x8xf32> {onnx.name = "v"}) -> (tensor<2x300xf32> {onnx.name = "p"}, tensor<1x1x2x8xf32> {onnx.name = "o"}) {
  %p = onnx.Softmax %x {axis = -1 : i64} : (tensor<2x300xf32>) -> tensor<2x300xf32>
  %o = cta.attention %q, %k, %v {num_heads = 1 : i64, kv_heads = 1 : i64, head_dim = 8 : i64, scale = 5.000000e-01 : f64} : (tensor<1x1x2x8xf32>, tensor<1x1x80x8xf32>, tensor<1x1x80x8xf32>) -> tensor<1x1x2x8xf32>
  func.return %p, %o : tensor<2x300xf32>, tensor<1x1x2x8xf32>
}

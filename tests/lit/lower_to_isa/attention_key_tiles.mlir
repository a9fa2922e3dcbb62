// Small buffers, derived from the default config: act 0.5 KiB, wgt 4 KiB, acc 1 KiB, vec 64 KiB.
// RUN: sed -e '/name = "act"/,/size_kib/s/value = [0-9.]*/value = 0.5/' \
// RUN:     -e '/name = "wgt"/,/size_kib/s/value = [0-9.]*/value = 4/' \
// RUN:     -e '/name = "acc"/,/size_kib/s/value = [0-9.]*/value = 1/' \
// RUN:     -e '/name = "vec"/,/size_kib/s/value = [0-9.]*/value = 64/' \
// RUN:     %S/../../../ctac/data/default_hw.toml > %t.toml
// RUN: ctac-opt %s -p 'lower-to-isa{hw="%t.toml"}' | filecheck %s

// Attention of 2 queries over 80 keys (head dim 8) with act halves of 128 elements: the keys are
// tiled (tk = 32, the largest tile for which both query rows' Q and P slots fit act), so the
// query tile runs key tiles of 32, 32 and 16 with an online softmax. The first tile starts the running statistics (first=1) and
// overwrites O (accumulate=0); every later tile rescales O by the state's third column
// (vec mul, bcast=col) before accumulating P V (accumulate=1); the last one normalises
// (last=1); O is stored once.

// The three steps are software-pipelined: the second and third key tiles' scores come before the
// first tile's P V, and each step copies its rescale out of the running state (vec copy) before
// the next tile's softmax rewrites it.
// CHECK:     ctaisa.gemm {{.*}} m=2 k=8 n=32 accumulate=0 transpose_b=1
// CHECK:     ctaisa.gemm {{.*}} m=2 k=8 n=32 accumulate=0 transpose_b=1
// CHECK:     ctaisa.softmax_online {{.*}} rows=2 cols=32 {{.*}} state_addr=[[STATE:[0-9]+]] first=1 last=0
// CHECK:     ctaisa.gemm {{.*}} m=2 k=8 n=16 accumulate=0 transpose_b=1
// CHECK:     ctaisa.softmax_online {{.*}} rows=2 cols=32 {{.*}} first=0 last=0
// CHECK:     ctaisa.vec op=copy dst=vec dst_addr=[[R1:[0-9]+]] {{.*}} rows=2 cols=1
// CHECK:     ctaisa.gemm {{.*}} m=2 k=32 n=8 accumulate=0 transpose_b=0
// CHECK:     ctaisa.softmax_online {{.*}} rows=2 cols=16 {{.*}} first=0 last=1
// CHECK:     ctaisa.vec op=copy dst=vec dst_addr=[[R2:[0-9]+]] {{.*}} rows=2 cols=1
// CHECK:     ctaisa.vec op=mul dst=acc {{.*}} b=vec b_addr=[[R1]] rows=2 cols=8 bcast=col
// CHECK:     ctaisa.gemm {{.*}} m=2 k=32 n=8 accumulate=1
// CHECK:     ctaisa.vec op=mul dst=acc {{.*}} b=vec b_addr=[[R2]] rows=2 cols=8 bcast=col
// CHECK:     ctaisa.gemm {{.*}} m=2 k=16 n=8 accumulate=1
// CHECK:     ctaisa.store {{.*}} rows=2 cols=8
// CHECK-NOT: ctaisa.store
// CHECK:     ctaisa.halt
func.func @main(%q: tensor<1x1x2x8xf32> {onnx.name = "q"}, %k: tensor<1x1x80x8xf32> {onnx.name = "k"}, %v: tensor<1x1x80x8xf32> {onnx.name = "v"}) -> (tensor<1x1x2x8xf32> {onnx.name = "o"}) {
  %o = cta.attention %q, %k, %v {num_heads = 1 : i64, kv_heads = 1 : i64, head_dim = 8 : i64, scale = 5.000000e-01 : f64} : (tensor<1x1x2x8xf32>, tensor<1x1x80x8xf32>, tensor<1x1x80x8xf32>) -> tensor<1x1x2x8xf32>
  func.return %o : tensor<1x1x2x8xf32>
}

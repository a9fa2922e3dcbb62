// Small buffers, derived from the default config: act 0.5 KiB, wgt 4 KiB, acc 1 KiB, vec 64 KiB.
// RUN: sed -e '/name = "act"/,/size_kib/s/value = [0-9.]*/value = 0.5/' \
// RUN:     -e '/name = "wgt"/,/size_kib/s/value = [0-9.]*/value = 4/' \
// RUN:     -e '/name = "acc"/,/size_kib/s/value = [0-9.]*/value = 1/' \
// RUN:     -e '/name = "vec"/,/size_kib/s/value = [0-9.]*/value = 64/' \
// RUN:     %S/../../../ctac/data/default_hw.toml > %t.toml
// RUN: ctac-opt %s -p 'lower-to-isa{hw="%t.toml"}' | filecheck %s

// With small buffers (act 256 elements, wgt 2048, acc 512) a (4 x 70) @ (70 x 40) Gemm with bias
// is tiled tm = 4, tk = 32 (A tiles of 4 x 32 = 128), tn = 32 (B tiles of 32 x 32 = 1024): n tiles
// [0, 32) and [32, 40), each over k tiles [0, 32), [32, 64), [64, 70). The first k tile of each
// n tile writes its accumulator and adds that n tile's bias (its own vec slot, 0 and 64); the
// later ones accumulate. A, B and C alternate between two slots (act 0/128, wgt 0/1024, acc
// 0/128) and the loop is software-pipelined: each k step's loads are issued one step ahead of
// its GEMM, and an n tile's store follows the next tile's first GEMM.

// CHECK:      ctaisa.load dst=vec dst_addr=0 src=3080 rows=1 cols=32 stride=32 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=0 rows=4 cols=32 stride=70 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=0 src=280 rows=32 cols=32 stride=40 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=128 src=32 rows=4 cols=32 stride=70 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=1024 src=1560 rows=32 cols=32 stride=40 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=0 m=4 k=32 n=32 accumulate=0 transpose_b=0 has_bias=1 bias=vec bias_addr=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=64 rows=4 cols=6 stride=70 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=0 src=2840 rows=6 cols=32 stride=40 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=128 b=wgt b_addr=1024 m=4 k=32 n=32 accumulate=1 transpose_b=0 has_bias=0 bias=vec bias_addr=0
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=64 src=3112 rows=1 cols=8 stride=8 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=128 src=0 rows=4 cols=32 stride=70 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=1024 src=312 rows=32 cols=8 stride=40 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=0 m=4 k=6 n=32 accumulate=1 transpose_b=0 has_bias=0 bias=vec bias_addr=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=32 rows=4 cols=32 stride=70 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=0 src=1592 rows=32 cols=8 stride=40 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=128 a=act a_addr=128 b=wgt b_addr=1024 m=4 k=32 n=8 accumulate=0 transpose_b=0 has_bias=1 bias=vec bias_addr=64
// CHECK-NEXT: ctaisa.store src=acc src_addr=0 dst=3120 rows=4 cols=32 stride=40 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=128 src=64 rows=4 cols=6 stride=70 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=1024 src=2872 rows=6 cols=8 stride=40 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=128 a=act a_addr=0 b=wgt b_addr=0 m=4 k=32 n=8 accumulate=1 transpose_b=0 has_bias=0 bias=vec bias_addr=64
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=128 a=act a_addr=128 b=wgt b_addr=1024 m=4 k=6 n=8 accumulate=1 transpose_b=0 has_bias=0 bias=vec bias_addr=64
// CHECK-NEXT: ctaisa.store src=acc src_addr=128 dst=3152 rows=4 cols=8 stride=40 src_stride=0
// CHECK-NEXT: ctaisa.halt
func.func @main(%x: tensor<4x70xf32> {onnx.name = "x"}, %w: tensor<70x40xf32> {onnx.name = "w"}, %b: tensor<40xf32> {onnx.name = "b"}) -> (tensor<4x40xf32> {onnx.name = "y"}) {
  %y = onnx.Gemm %x, %w, C %b : (tensor<4x70xf32>, tensor<70x40xf32>, tensor<40xf32>) -> tensor<4x40xf32>
  func.return %y : tensor<4x40xf32>
}

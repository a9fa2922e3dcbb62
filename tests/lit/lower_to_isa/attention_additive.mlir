// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// An additive mask (1, 1, 3, 5) broadcast over the 2 heads: with each key tile's scores the
// tile's (3 x 5) block is loaded into a vec slot (the same block, DRAM 104, for both heads) and
// SOFTMAX_ONLINE adds it to the scores (mask=additive).

// CHECK:      ctaisa.symbol input "bias" float32 [1, 1, 3, 5] at=104
// CHECK-NEXT: ctaisa.symbol output "o" float32 [1, 2, 3, 4] at=119
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=0 src=24 rows=5 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=0 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=64 src=44 rows=5 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=64 src=12 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=0 src=104 rows=3 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=0 m=3 k=4 n=5 accumulate=0 transpose_b=1 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=64 src=104 rows=3 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=64 a=act a_addr=64 b=wgt b_addr=64 m=3 k=4 n=5 accumulate=0 transpose_b=1 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.softmax_online dst=act dst_addr=128 src=acc src_addr=0 rows=3 cols=5 scale=0.5 softcap=0.0 mask=additive mask_addr=0 has_counts=0 counts_addr=128 causal=0 causal_offset=0 state_addr=256 first=1 last=1
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=128 src=64 rows=5 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.softmax_online dst=act dst_addr=192 src=acc src_addr=64 rows=3 cols=5 scale=0.5 softcap=0.0 mask=additive mask_addr=64 has_counts=0 counts_addr=192 causal=0 causal_offset=0 state_addr=320 first=1 last=1
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=192 src=84 rows=5 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=128 a=act a_addr=128 b=wgt b_addr=128 m=3 k=5 n=4 accumulate=0 transpose_b=0 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=192 a=act a_addr=192 b=wgt b_addr=192 m=3 k=5 n=4 accumulate=0 transpose_b=0 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=128 dst=119 rows=3 cols=4 stride=4 src_stride=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=192 dst=131 rows=3 cols=4 stride=4 src_stride=0
// CHECK-NEXT: ctaisa.halt
func.func @main(%q: tensor<1x2x3x4xf32> {onnx.name = "q"}, %k: tensor<1x2x5x4xf32> {onnx.name = "k"}, %v: tensor<1x2x5x4xf32> {onnx.name = "v"}, %bias: tensor<1x1x3x5xf32> {onnx.name = "bias"}) -> (tensor<1x2x3x4xf32> {onnx.name = "o"}) {
  %o = cta.attention %q, %k, %v, mask %bias {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "additive"} : (tensor<1x2x3x4xf32>, tensor<1x2x5x4xf32>, tensor<1x2x5x4xf32>, tensor<1x1x3x5xf32>) -> tensor<1x2x3x4xf32>
  func.return %o : tensor<1x2x3x4xf32>
}

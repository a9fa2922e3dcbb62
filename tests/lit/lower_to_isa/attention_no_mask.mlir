// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// cta.attention without a mask, 2 heads, 3 queries over 5 keys, head_dim 4, value dim 6. Per
// head: K and V side by side in one wgt half (V right after the 5 x 4 keys), Q into act,
// S = Q K^T (transpose_b=1, n = 5 keys), P = SOFTMAX(S) written into act after Q, O = P V
// written into acc after S, then one STORE of the head's (3 x 6) block.

// CHECK:      ctaisa.symbol input "q" float32 [1, 2, 3, 4] at=0
// CHECK-NEXT: ctaisa.symbol input "k" float32 [1, 2, 5, 4] at=24
// CHECK-NEXT: ctaisa.symbol input "v" float32 [1, 2, 5, 6] at=64
// CHECK-NEXT: ctaisa.symbol output "o" float32 [1, 2, 3, 6] at=124
// head 0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=65536 src=24 rows=5 cols=4 stride=4
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=65556 src=64 rows=5 cols=6 stride=6
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=0 rows=3 cols=4 stride=4
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=65536 m=3 k=4 n=5 accumulate=0 transpose_b=1 has_bias=0
// CHECK-NEXT: ctaisa.softmax dst=act dst_addr=12 src=acc src_addr=0 rows=3 cols=5 scale=0.5 softcap=0.0 mask=none {{.*}} has_counts=0 {{.*}} causal=0 row0=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=15 a=act a_addr=12 b=wgt b_addr=65556 m=3 k=5 n=6 accumulate=0 transpose_b=0 has_bias=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=15 dst=124 rows=3 cols=6 stride=6
// head 1
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=65536 src=44 rows=5 cols=4 stride=4
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=65556 src=94 rows=5 cols=6 stride=6
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=12 rows=3 cols=4 stride=4
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=65536 m=3 k=4 n=5 accumulate=0 transpose_b=1
// CHECK-NEXT: ctaisa.softmax dst=act dst_addr=12 src=acc src_addr=0 rows=3 cols=5 scale=0.5 softcap=0.0 mask=none
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=15 a=act a_addr=12 b=wgt b_addr=65556 m=3 k=5 n=6 accumulate=0 transpose_b=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=15 dst=142 rows=3 cols=6 stride=6
// CHECK-NEXT: ctaisa.halt
func.func @main(%q: tensor<1x2x3x4xf32> {onnx.name = "q"}, %k: tensor<1x2x5x4xf32> {onnx.name = "k"}, %v: tensor<1x2x5x6xf32> {onnx.name = "v"}) -> (tensor<1x2x3x6xf32> {onnx.name = "o"}) {
  %o = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64} : (tensor<1x2x3x4xf32>, tensor<1x2x5x4xf32>, tensor<1x2x5x6xf32>) -> tensor<1x2x3x6xf32>
  func.return %o : tensor<1x2x3x6xf32>
}

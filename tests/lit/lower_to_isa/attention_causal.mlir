// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// Causal attention, 3 queries over 5 keys: the SOFTMAX applies the causal frontier itself
// (causal=1, row0 = the tile's first query, causal_offset = kv_seq - q_seq = 2 by default);
// no mask is loaded. A second op sets causal_offset = 0 explicitly.

// CHECK:      ctaisa.load dst=wgt dst_addr=65536 src=12 rows=5 cols=4 stride=4
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=65556 src=32 rows=5 cols=4 stride=4
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=0 rows=3 cols=4 stride=4
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=65536 m=3 k=4 n=5 accumulate=0 transpose_b=1
// CHECK-NEXT: ctaisa.softmax dst=act dst_addr=12 src=acc src_addr=0 rows=3 cols=5 scale=0.5 softcap=0.0 mask=none {{.*}} causal=1 row0=0 causal_offset=2
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=15 a=act a_addr=12 b=wgt b_addr=65556 m=3 k=5 n=4
// CHECK-NEXT: ctaisa.store src=acc src_addr=15 dst=52 rows=3 cols=4 stride=4
// CHECK-NEXT: ctaisa.load dst=wgt
// CHECK-NEXT: ctaisa.load dst=wgt
// CHECK-NEXT: ctaisa.load dst=act
// CHECK-NEXT: ctaisa.gemm
// CHECK-NEXT: ctaisa.softmax dst=act dst_addr=12 src=acc src_addr=0 rows=3 cols=5 scale=0.5 softcap=0.0 mask=none {{.*}} causal=1 row0=0 causal_offset=0
// CHECK-NEXT: ctaisa.gemm
// CHECK-NEXT: ctaisa.store src=acc src_addr=15 dst=64 rows=3 cols=4 stride=4
// CHECK-NEXT: ctaisa.halt
func.func @main(%q: tensor<1x1x3x4xf32> {onnx.name = "q"}, %k: tensor<1x1x5x4xf32> {onnx.name = "k"}, %v: tensor<1x1x5x4xf32> {onnx.name = "v"}) -> (tensor<1x1x3x4xf32> {onnx.name = "o"}, tensor<1x1x3x4xf32> {onnx.name = "o0"}) {
  %o = cta.attention %q, %k, %v {num_heads = 1 : i64, kv_heads = 1 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, causal = 1 : i64} : (tensor<1x1x3x4xf32>, tensor<1x1x5x4xf32>, tensor<1x1x5x4xf32>) -> tensor<1x1x3x4xf32>
  %o0 = cta.attention %q, %k, %v {num_heads = 1 : i64, kv_heads = 1 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, causal = 1 : i64, causal_offset = 0 : i64} : (tensor<1x1x3x4xf32>, tensor<1x1x5x4xf32>, tensor<1x1x5x4xf32>) -> tensor<1x1x3x4xf32>
  func.return %o, %o0 : tensor<1x1x3x4xf32>, tensor<1x1x3x4xf32>
}

// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// Causal attention, 3 queries over 5 keys: SOFTMAX_ONLINE applies the causal frontier itself
// (causal=1; causal_offset = the frontier of the tile's first row in tile columns: kv_seq - q_seq
// = 2 by default); no mask is loaded. A second op sets causal_offset = 0 explicitly: its last
// query sees keys 0..2 only, so keys 3 and 4 are never loaded (n = 3).

// CHECK:      ctaisa.load dst=wgt dst_addr=0 src=12 rows=5 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=0 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=0 m=3 k=4 n=5 accumulate=0 transpose_b=1 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.softmax_online dst=act dst_addr=128 src=acc src_addr=0 rows=3 cols=5 scale=0.5 softcap=0.0 mask=none mask_addr=0 has_counts=0 counts_addr=128 causal=1 causal_offset=2 state_addr=256 first=1 last=1
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=128 src=32 rows=5 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=128 a=act a_addr=128 b=wgt b_addr=128 m=3 k=5 n=4 accumulate=0 transpose_b=0 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=128 dst=52 rows=3 cols=4 stride=4 src_stride=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=0 src=12 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=0 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=0 m=3 k=4 n=3 accumulate=0 transpose_b=1 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.softmax_online dst=act dst_addr=128 src=acc src_addr=0 rows=3 cols=3 scale=0.5 softcap=0.0 mask=none mask_addr=0 has_counts=0 counts_addr=128 causal=1 causal_offset=0 state_addr=256 first=1 last=1
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=128 src=32 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=128 a=act a_addr=128 b=wgt b_addr=128 m=3 k=3 n=4 accumulate=0 transpose_b=0 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=128 dst=64 rows=3 cols=4 stride=4 src_stride=0
// CHECK-NEXT: ctaisa.halt
func.func @main(%q: tensor<1x1x3x4xf32> {onnx.name = "q"}, %k: tensor<1x1x5x4xf32> {onnx.name = "k"}, %v: tensor<1x1x5x4xf32> {onnx.name = "v"}) -> (tensor<1x1x3x4xf32> {onnx.name = "o"}, tensor<1x1x3x4xf32> {onnx.name = "o0"}) {
  %o = cta.attention %q, %k, %v {num_heads = 1 : i64, kv_heads = 1 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, causal = 1 : i64} : (tensor<1x1x3x4xf32>, tensor<1x1x5x4xf32>, tensor<1x1x5x4xf32>) -> tensor<1x1x3x4xf32>
  %o0 = cta.attention %q, %k, %v {num_heads = 1 : i64, kv_heads = 1 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, causal = 1 : i64, causal_offset = 0 : i64} : (tensor<1x1x3x4xf32>, tensor<1x1x5x4xf32>, tensor<1x1x5x4xf32>) -> tensor<1x1x3x4xf32>
  func.return %o, %o0 : tensor<1x1x3x4xf32>, tensor<1x1x3x4xf32>
}

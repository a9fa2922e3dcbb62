// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// GQA: 4 query heads share 2 key/value heads. Query heads 0 and 1 load K/V head 0 (DRAM 32 and
// 56), heads 2 and 3 load K/V head 1 (44 and 68); Q and O advance per query head.

// CHECK:      ctaisa.symbol input "q" float32 [1, 4, 2, 4] at=0
// CHECK-NEXT: ctaisa.symbol input "k" float32 [1, 2, 3, 4] at=32
// CHECK-NEXT: ctaisa.symbol input "v" float32 [1, 2, 3, 4] at=56
// CHECK-NEXT: ctaisa.symbol output "o" float32 [1, 4, 2, 4] at=80
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=0 src=32 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=0 rows=2 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=64 src=32 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=64 src=8 rows=2 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=0 m=2 k=4 n=3 accumulate=0 transpose_b=1 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=0 src=44 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=16 rows=2 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=64 a=act a_addr=64 b=wgt b_addr=64 m=2 k=4 n=3 accumulate=0 transpose_b=1 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.softmax_online dst=act dst_addr=128 src=acc src_addr=0 rows=2 cols=3 scale=0.5 softcap=0.0 mask=none mask_addr=0 has_counts=0 counts_addr=128 causal=0 causal_offset=0 state_addr=256 first=1 last=1
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=128 src=56 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=64 src=44 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=64 src=24 rows=2 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=0 m=2 k=4 n=3 accumulate=0 transpose_b=1 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.softmax_online dst=act dst_addr=192 src=acc src_addr=64 rows=2 cols=3 scale=0.5 softcap=0.0 mask=none mask_addr=64 has_counts=0 counts_addr=192 causal=0 causal_offset=0 state_addr=320 first=1 last=1
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=192 src=56 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=128 a=act a_addr=128 b=wgt b_addr=128 m=2 k=3 n=4 accumulate=0 transpose_b=0 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=64 a=act a_addr=64 b=wgt b_addr=64 m=2 k=4 n=3 accumulate=0 transpose_b=1 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.softmax_online dst=act dst_addr=128 src=acc src_addr=0 rows=2 cols=3 scale=0.5 softcap=0.0 mask=none mask_addr=0 has_counts=0 counts_addr=128 causal=0 causal_offset=0 state_addr=256 first=1 last=1
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=128 src=68 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=192 a=act a_addr=192 b=wgt b_addr=192 m=2 k=3 n=4 accumulate=0 transpose_b=0 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=128 dst=80 rows=2 cols=4 stride=4 src_stride=0
// CHECK-NEXT: ctaisa.softmax_online dst=act dst_addr=192 src=acc src_addr=64 rows=2 cols=3 scale=0.5 softcap=0.0 mask=none mask_addr=64 has_counts=0 counts_addr=192 causal=0 causal_offset=0 state_addr=320 first=1 last=1
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=192 src=68 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=128 a=act a_addr=128 b=wgt b_addr=128 m=2 k=3 n=4 accumulate=0 transpose_b=0 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=192 dst=88 rows=2 cols=4 stride=4 src_stride=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=192 a=act a_addr=192 b=wgt b_addr=192 m=2 k=3 n=4 accumulate=0 transpose_b=0 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=128 dst=96 rows=2 cols=4 stride=4 src_stride=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=192 dst=104 rows=2 cols=4 stride=4 src_stride=0
// CHECK-NEXT: ctaisa.halt
func.func @main(%q: tensor<1x4x2x4xf32> {onnx.name = "q"}, %k: tensor<1x2x3x4xf32> {onnx.name = "k"}, %v: tensor<1x2x3x4xf32> {onnx.name = "v"}) -> (tensor<1x4x2x4xf32> {onnx.name = "o"}) {
  %o = cta.attention %q, %k, %v {num_heads = 4 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64} : (tensor<1x4x2x4xf32>, tensor<1x2x3x4xf32>, tensor<1x2x3x4xf32>) -> tensor<1x4x2x4xf32>
  func.return %o : tensor<1x4x2x4xf32>
}

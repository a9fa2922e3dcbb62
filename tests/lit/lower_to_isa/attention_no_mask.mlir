// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// cta.attention without a mask, 2 heads, 3 queries over 5 keys, head_dim 4, value dim 6: one
// query tile and one key tile per head. The loop is software-pipelined over five stages (load K
// and Q; S = Q K^T; SOFTMAX_ONLINE and load V; O = P V; store O), so head 1's loads and scores
// come before head 0's softmax. A single key tile is both first and last: the softmax starts and
// normalises its running statistics (state: three 3-row columns, max, sum, rescale) in one go
// and the P V GEMM overwrites O (accumulate=0).

// CHECK:      ctaisa.symbol input "q" float32 [1, 2, 3, 4] at=0
// CHECK-NEXT: ctaisa.symbol input "k" float32 [1, 2, 5, 4] at=24
// CHECK-NEXT: ctaisa.symbol input "v" float32 [1, 2, 5, 6] at=64
// CHECK-NEXT: ctaisa.symbol output "o" float32 [1, 2, 3, 6] at=124
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=0 src=24 rows=5 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=0 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=64 src=44 rows=5 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=64 src=12 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=0 m=3 k=4 n=5 accumulate=0 transpose_b=1 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=64 a=act a_addr=64 b=wgt b_addr=64 m=3 k=4 n=5 accumulate=0 transpose_b=1 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.softmax_online dst=act dst_addr=128 src=acc src_addr=0 rows=3 cols=5 scale=0.5 softcap=0.0 mask=none mask_addr=0 has_counts=0 counts_addr=128 causal=0 causal_offset=0 state_addr=256 first=1 last=1
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=128 src=64 rows=5 cols=6 stride=6 narrow=0
// CHECK-NEXT: ctaisa.softmax_online dst=act dst_addr=192 src=acc src_addr=64 rows=3 cols=5 scale=0.5 softcap=0.0 mask=none mask_addr=64 has_counts=0 counts_addr=192 causal=0 causal_offset=0 state_addr=320 first=1 last=1
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=192 src=94 rows=5 cols=6 stride=6 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=128 a=act a_addr=128 b=wgt b_addr=128 m=3 k=5 n=6 accumulate=0 transpose_b=0 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=192 a=act a_addr=192 b=wgt b_addr=192 m=3 k=5 n=6 accumulate=0 transpose_b=0 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=128 dst=124 rows=3 cols=6 stride=6 src_stride=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=192 dst=142 rows=3 cols=6 stride=6 src_stride=0
// CHECK-NEXT: ctaisa.halt
func.func @main(%q: tensor<1x2x3x4xf32> {onnx.name = "q"}, %k: tensor<1x2x5x4xf32> {onnx.name = "k"}, %v: tensor<1x2x5x6xf32> {onnx.name = "v"}) -> (tensor<1x2x3x6xf32> {onnx.name = "o"}) {
  %o = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64} : (tensor<1x2x3x4xf32>, tensor<1x2x5x4xf32>, tensor<1x2x5x6xf32>) -> tensor<1x2x3x6xf32>
  func.return %o : tensor<1x2x3x6xf32>
}

// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// A key_padding mask (batch, kv_seq): with each key tile the batch's validity row for those keys
// (DRAM 60 for batch 0, 65 for batch 1) is loaded into a vec slot and SOFTMAX_ONLINE reads it as
// a keys mask.

// CHECK:      ctaisa.symbol input "m" int64 [2, 5] at=104
// CHECK-NEXT: ctaisa.symbol output "o" float32 [2, 1, 3, 4] at=114
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=0 src=24 rows=5 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=0 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=64 src=44 rows=5 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=64 src=12 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=0 src=104 rows=1 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=0 m=3 k=4 n=5 accumulate=0 transpose_b=1 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=64 src=109 rows=1 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=64 a=act a_addr=64 b=wgt b_addr=64 m=3 k=4 n=5 accumulate=0 transpose_b=1 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.softmax_online dst=act dst_addr=128 src=acc src_addr=0 rows=3 cols=5 scale=0.5 softcap=0.0 mask=keys mask_addr=0 has_counts=0 counts_addr=128 causal=0 causal_offset=0 state_addr=256 first=1 last=1
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=128 src=64 rows=5 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.softmax_online dst=act dst_addr=192 src=acc src_addr=64 rows=3 cols=5 scale=0.5 softcap=0.0 mask=keys mask_addr=64 has_counts=0 counts_addr=192 causal=0 causal_offset=0 state_addr=320 first=1 last=1
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=192 src=84 rows=5 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=128 a=act a_addr=128 b=wgt b_addr=128 m=3 k=5 n=4 accumulate=0 transpose_b=0 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=192 a=act a_addr=192 b=wgt b_addr=192 m=3 k=5 n=4 accumulate=0 transpose_b=0 has_bias=0 bias=act bias_addr=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=128 dst=114 rows=3 cols=4 stride=4 src_stride=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=192 dst=126 rows=3 cols=4 stride=4 src_stride=0
// CHECK-NEXT: ctaisa.halt
func.func @main(%q: tensor<2x1x3x4xf32> {onnx.name = "q"}, %k: tensor<2x1x5x4xf32> {onnx.name = "k"}, %v: tensor<2x1x5x4xf32> {onnx.name = "v"}, %m: tensor<2x5xi64> {onnx.name = "m"}) -> (tensor<2x1x3x4xf32> {onnx.name = "o"}) {
  %o = cta.attention %q, %k, %v, mask %m {num_heads = 1 : i64, kv_heads = 1 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "key_padding"} : (tensor<2x1x3x4xf32>, tensor<2x1x5x4xf32>, tensor<2x1x5x4xf32>, tensor<2x5xi64>) -> tensor<2x1x3x4xf32>
  func.return %o : tensor<2x1x3x4xf32>
}

// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// A key_padding mask (batch, kv_seq): each batch's row of 5 is loaded once into vec's persistent
// area (114688) and every SOFTMAX of that batch reads it as a keys mask.

// CHECK:      ctaisa.symbol input "m" int64 [2, 5] at=104
// CHECK-NEXT: ctaisa.symbol output "o" float32 [2, 1, 3, 4] at=114
// batch 0
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=114688 src=104 rows=1 cols=5 stride=5
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=65536 src=24 rows=5 cols=4 stride=4
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=65556 src=64 rows=5 cols=4 stride=4
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=0 rows=3 cols=4 stride=4
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=65536 m=3 k=4 n=5 accumulate=0 transpose_b=1
// CHECK-NEXT: ctaisa.softmax dst=act dst_addr=12 src=acc src_addr=0 rows=3 cols=5 scale=0.5 softcap=0.0 mask=keys mask_buf=vec mask_addr=114688 has_counts=0 {{.*}} causal=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=15 a=act a_addr=12 b=wgt b_addr=65556 m=3 k=5 n=4
// CHECK-NEXT: ctaisa.store src=acc src_addr=15 dst=114 rows=3 cols=4 stride=4
// batch 1: the mask's second row
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=114688 src=109 rows=1 cols=5 stride=5
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=65536 src=44 rows=5 cols=4 stride=4
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=65556 src=84 rows=5 cols=4 stride=4
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=12 rows=3 cols=4 stride=4
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=65536 m=3 k=4 n=5 accumulate=0 transpose_b=1
// CHECK-NEXT: ctaisa.softmax dst=act dst_addr=12 src=acc src_addr=0 rows=3 cols=5 scale=0.5 softcap=0.0 mask=keys mask_buf=vec mask_addr=114688
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=15 a=act a_addr=12 b=wgt b_addr=65556 m=3 k=5 n=4
// CHECK-NEXT: ctaisa.store src=acc src_addr=15 dst=126 rows=3 cols=4 stride=4
// CHECK-NEXT: ctaisa.halt
func.func @main(%q: tensor<2x1x3x4xf32> {onnx.name = "q"}, %k: tensor<2x1x5x4xf32> {onnx.name = "k"}, %v: tensor<2x1x5x4xf32> {onnx.name = "v"}, %m: tensor<2x5xi64> {onnx.name = "m"}) -> (tensor<2x1x3x4xf32> {onnx.name = "o"}) {
  %o = cta.attention %q, %k, %v, mask %m {num_heads = 1 : i64, kv_heads = 1 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "key_padding"} : (tensor<2x1x3x4xf32>, tensor<2x1x5x4xf32>, tensor<2x1x5x4xf32>, tensor<2x5xi64>) -> tensor<2x1x3x4xf32>
  func.return %o : tensor<2x1x3x4xf32>
}

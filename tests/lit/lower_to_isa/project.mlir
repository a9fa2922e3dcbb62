// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// cta.project of columns [4, 8) of w (4 x 8) into 2 heads of 2: per batch ONE GEMM across both
// heads (n = 4), loading its 4 weight columns with the full row stride (8) and its bias slice
// (DRAM 36) into a vec slot, then one STORE per head reading that head's column block of the C
// tile (src_stride=4) into ((b * heads + h) * seq) * head_dim: 64, 70, 76, 82. The two batches
// are software-pipelined (batch 1's loads before batch 0's GEMM).

// CHECK:      ctaisa.data at=0 size=32
// CHECK-NEXT: ctaisa.data at=32 size=8
// CHECK-NEXT: ctaisa.symbol input "x" float32 [2, 3, 4] at=40
// CHECK-NEXT: ctaisa.symbol output "k" float32 [2, 2, 3, 2] at=64
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=0 src=36 rows=1 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=40 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=0 src=4 rows=4 cols=4 stride=8 narrow=0
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=64 src=36 rows=1 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=64 src=52 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=64 src=4 rows=4 cols=4 stride=8 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=0 m=3 k=4 n=4 accumulate=0 transpose_b=0 has_bias=1 bias=vec bias_addr=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=64 a=act a_addr=64 b=wgt b_addr=64 m=3 k=4 n=4 accumulate=0 transpose_b=0 has_bias=1 bias=vec bias_addr=64
// CHECK-NEXT: ctaisa.store src=acc src_addr=0 dst=64 rows=3 cols=2 stride=2 src_stride=4
// CHECK-NEXT: ctaisa.store src=acc src_addr=2 dst=70 rows=3 cols=2 stride=2 src_stride=4
// CHECK-NEXT: ctaisa.store src=acc src_addr=64 dst=76 rows=3 cols=2 stride=2 src_stride=4
// CHECK-NEXT: ctaisa.store src=acc src_addr=66 dst=82 rows=3 cols=2 stride=2 src_stride=4
// CHECK-NEXT: ctaisa.halt
func.func @main(%x: tensor<2x3x4xf32> {onnx.name = "x"}) -> (tensor<2x2x3x2xf32> {onnx.name = "k"}) {
  %w = onnx.Constant dense<[[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], [1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5], [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]]> : tensor<4x8xf32>
  %b = onnx.Constant dense<[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]> : tensor<8xf32>
  %k = cta.project %x, %w, bias %b {heads = 2 : i64, head_dim = 2 : i64, columns = array<i64: 4, 8>} : (tensor<2x3x4xf32>, tensor<4x8xf32>, tensor<8xf32>) -> tensor<2x2x3x2xf32>
  func.return %k : tensor<2x2x3x2xf32>
}

// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// Gemm with transB and a bias: the bias row of the n tile comes into a double-buffered slot of
// vec with the tile's loads, and the GEMM reads w stored n x k (transpose_b=1) and adds the bias
// row (has_bias=1).

// CHECK:      ctaisa.data at=0 size=8 dense<[1.000000e+00, 2.000000e+00, 3.000000e+00, 4.000000e+00, 5.000000e+00, 6.000000e+00, 7.000000e+00, 8.000000e+00]> : tensor<8xf32>
// CHECK-NEXT: ctaisa.data at=8 size=2 dense<[5.000000e-01, -5.000000e-01]> : tensor<2xf32>
// CHECK-NEXT: ctaisa.symbol input "x" float32 [3, 4] at=10
// CHECK-NEXT: ctaisa.symbol output "y" float32 [3, 2] at=22
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=0 src=8 rows=1 cols=2 stride=2 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=10 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=0 src=0 rows=2 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=0 m=3 k=4 n=2 accumulate=0 transpose_b=1 has_bias=1 bias=vec bias_addr=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=0 dst=22 rows=3 cols=2 stride=2 src_stride=0
// CHECK-NEXT: ctaisa.halt
func.func @main(%x: tensor<3x4xf32> {onnx.name = "x"}) -> (tensor<3x2xf32> {onnx.name = "y"}) {
  %w = onnx.Constant dense<[[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]> : tensor<2x4xf32>
  %b = onnx.Constant dense<[0.5, -0.5]> : tensor<2xf32>
  %y = onnx.Gemm %x, %w, C %b {transB = 1 : i64} : (tensor<3x4xf32>, tensor<2x4xf32>, tensor<2xf32>) -> tensor<3x2xf32>
  func.return %y : tensor<3x2xf32>
}

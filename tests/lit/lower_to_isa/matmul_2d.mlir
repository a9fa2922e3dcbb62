// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// MatMul by a 2-D weight: the leading axes of x fold into the GEMM's m (2 x 3 = 6 rows), so the
// whole op is one LOAD of x, one LOAD of w, one GEMM and one STORE. The weight is a constant: it
// is the data segment at DRAM address 0, then x (40 elements later) and y. Tile slots start at 0
// in every buffer (each op has the buffers to itself).

// CHECK:      builtin.module attributes {ctaisa.hw = "{{[0-9a-f]+}}", ctaisa.dram = #builtin.int<118>, ctaisa.element_type = "fp16"}
// CHECK-NEXT:   ctaisa.data at=0 size=40 dense<
// CHECK-NEXT:   ctaisa.symbol input "x" float32 [2, 3, 8] at=40
// CHECK-NEXT:   ctaisa.symbol output "y" float32 [2, 3, 5] at=88
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=40 rows=6 cols=8 stride=8 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=0 src=0 rows=8 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=0 m=6 k=8 n=5 accumulate=0 transpose_b=0 has_bias=0 bias=vec bias_addr=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=0 dst=88 rows=6 cols=5 stride=5 src_stride=0
// CHECK-NEXT: ctaisa.halt
func.func @main(%x: tensor<2x3x8xf32> {onnx.name = "x"}) -> (tensor<2x3x5xf32> {onnx.name = "y"}) {
  %w = onnx.Constant dense<[[1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 6.0]]> : tensor<8x5xf32>
  %y = onnx.MatMul %x, %w : (tensor<2x3x8xf32>, tensor<8x5xf32>) -> tensor<2x3x5xf32>
  func.return %y : tensor<2x3x5xf32>
}

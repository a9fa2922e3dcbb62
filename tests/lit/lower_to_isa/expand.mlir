// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// Expand is a VEC copy of operand b broadcast over the output tile: a (1, 4) row from the
// persistent area (bcast=row), a (3, 1) column loaded one element per row (bcast=col).

// CHECK:      ctaisa.load dst=vec dst_addr=114688 src=2 rows=1 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.vec op=copy dst=vec dst_addr=57344 {{.*}} b=vec b_addr=114688 rows=3 cols=4 bcast=row
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=9 rows=3 cols=4 stride=4
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=6 rows=3 cols=1 stride=1 narrow=0
// CHECK-NEXT: ctaisa.vec op=copy dst=vec dst_addr=0 {{.*}} b=act b_addr=0 rows=3 cols=4 bcast=col
// CHECK-NEXT: ctaisa.store src=vec src_addr=0 dst=21 rows=3 cols=4 stride=4
// CHECK-NEXT: ctaisa.halt
func.func @main(%row: tensor<1x4xf32> {onnx.name = "row"}, %col: tensor<3x1xf32> {onnx.name = "col"}) -> (tensor<3x4xf32> {onnx.name = "rows"}, tensor<3x4xf32> {onnx.name = "cols"}) {
  %shape = onnx.Constant dense<[3, 4]> : tensor<2xi64>
  %rows = onnx.Expand %row, %shape : (tensor<1x4xf32>, tensor<2xi64>) -> tensor<3x4xf32>
  %cols = onnx.Expand %col, %shape : (tensor<3x1xf32>, tensor<2xi64>) -> tensor<3x4xf32>
  func.return %rows, %cols : tensor<3x4xf32>, tensor<3x4xf32>
}

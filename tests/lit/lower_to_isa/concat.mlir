// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// Concat on axis 1 of (2, 3, 4) and (2, 1, 4) with a zero (2, 1, 4) constant: each input is
// copied as (outer = 2) rows of its inner size (12, 4, 4) into the output rows of 20, at
// column offsets 0, 12 and 16; the splat constant is written from the immediate. Copies are
// software-pipelined: the second input's load is issued before the first one's store.

// CHECK:      ctaisa.load dst=act dst_addr=65536 src=8 rows=2 cols=12 stride=12 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=32 rows=2 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=65536 dst=40 rows=2 cols=12 stride=20 src_stride=0
// CHECK-NEXT: ctaisa.store src=act src_addr=0 dst=52 rows=2 cols=4 stride=20 src_stride=0
// CHECK-NEXT: ctaisa.vec op=copy dst=act dst_addr=65536 a=act a_addr=0 b=act b_addr=0 rows=2 cols=4 bcast=imm imm=0.0
// CHECK-NEXT: ctaisa.store src=act src_addr=65536 dst=56 rows=2 cols=4 stride=20 src_stride=0
// CHECK-NEXT: ctaisa.halt
func.func @main(%a: tensor<2x3x4xf32> {onnx.name = "a"}, %b: tensor<2x1x4xf32> {onnx.name = "b"}) -> (tensor<2x5x4xf32> {onnx.name = "y"}) {
  %zero = onnx.Constant dense<0.000000e+00> : tensor<2x1x4xf32>
  %y = onnx.Concat %a, %b, %zero {axis = 1 : i64} : (tensor<2x3x4xf32>, tensor<2x1x4xf32>, tensor<2x1x4xf32>) -> tensor<2x5x4xf32>
  func.return %y : tensor<2x5x4xf32>
}

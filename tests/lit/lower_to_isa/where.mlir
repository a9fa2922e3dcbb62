// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// Where becomes SELECT with one broadcast mode per operand: a row operand comes from vec's
// persistent area; a splat constant (SELECT has no immediate) is first written there as a
// scalar by a VEC copy of the immediate.

// CHECK:      ctaisa.data at=0 size=1 dense<-1.000000e+04>
// CHECK:      ctaisa.load dst=vec dst_addr=114688 src=17 rows=1 cols=4 stride=4 narrow=0 src "{{[^"]*}}y"
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=1 rows=2 cols=4 stride=4 narrow=1
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=65536 src=9 rows=2 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.select dst=vec dst_addr=57344 cond=act cond_addr=65536 a=wgt a_addr=65536 b=vec b_addr=114688 rows=2 cols=4 cond_bcast=full a_bcast=full b_bcast=row
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=21 rows=2 cols=4 stride=4
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=1 rows=2 cols=4 stride=4 narrow=1 src "{{[^"]*}}z"
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=0 src=9 rows=2 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.vec op=copy dst=vec dst_addr=114688 {{.*}} rows=1 cols=1 bcast=imm imm=-10000.0
// CHECK-NEXT: ctaisa.select dst=vec dst_addr=0 cond=act cond_addr=0 a=wgt a_addr=0 b=vec b_addr=114688 rows=2 cols=4 cond_bcast=full a_bcast=full b_bcast=scalar
// CHECK-NEXT: ctaisa.store src=vec src_addr=0 dst=29 rows=2 cols=4 stride=4
// CHECK-NEXT: ctaisa.halt
func.func @main(%c: tensor<2x4xi1> {onnx.name = "c"}, %a: tensor<2x4xf32> {onnx.name = "a"}, %b: tensor<4xf32> {onnx.name = "b"}) -> (tensor<2x4xf32> {onnx.name = "y"}, tensor<2x4xf32> {onnx.name = "z"}) {
  %y = onnx.Where %c, %a, %b : (tensor<2x4xi1>, tensor<2x4xf32>, tensor<4xf32>) -> tensor<2x4xf32>
  %neg = onnx.Constant dense<-1.000000e+04> : tensor<f32>
  %z = onnx.Where %c, %a, %neg : (tensor<2x4xi1>, tensor<2x4xf32>, tensor<f32>) -> tensor<2x4xf32>
  func.return %y, %z : tensor<2x4xf32>, tensor<2x4xf32>
}

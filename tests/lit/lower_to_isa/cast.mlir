// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// Cast: float -> int truncates, anything -> bool tests for nonzero, int -> float is a copy
// (DRAM holds every value as float32).

// CHECK:      ctaisa.load dst=act dst_addr=65536 src=0 rows=2 cols=3 stride=3 narrow=0
// CHECK-NEXT: ctaisa.vec op=trunc dst=vec dst_addr=57344 a=act a_addr=65536 {{.*}} rows=2 cols=3
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=12 rows=2 cols=3 stride=3
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=0 rows=2 cols=3 stride=3 narrow=0
// CHECK-NEXT: ctaisa.vec op=nonzero dst=vec dst_addr=0 a=act a_addr=0 {{.*}} rows=2 cols=3
// CHECK-NEXT: ctaisa.store src=vec src_addr=0 dst=18 rows=2 cols=3 stride=3
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=6 rows=2 cols=3 stride=3 narrow=0
// CHECK-NEXT: ctaisa.vec op=copy dst=vec dst_addr=57344 {{.*}} b=act b_addr=65536 rows=2 cols=3 bcast=full
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=24 rows=2 cols=3 stride=3
// CHECK-NEXT: ctaisa.halt
func.func @main(%x: tensor<2x3xf32> {onnx.name = "x"}, %i: tensor<2x3xi64> {onnx.name = "i"}) -> (tensor<2x3xi64> {onnx.name = "to_int"}, tensor<2x3xi1> {onnx.name = "to_bool"}, tensor<2x3xf32> {onnx.name = "to_float"}) {
  %to_int = onnx.Cast %x {to = i64} : (tensor<2x3xf32>) -> tensor<2x3xi64>
  %to_bool = onnx.Cast %x {to = i1} : (tensor<2x3xf32>) -> tensor<2x3xi1>
  %to_float = onnx.Cast %i {to = f32} : (tensor<2x3xi64>) -> tensor<2x3xf32>
  func.return %to_int, %to_bool, %to_float : tensor<2x3xi64>, tensor<2x3xi1>, tensor<2x3xf32>
}

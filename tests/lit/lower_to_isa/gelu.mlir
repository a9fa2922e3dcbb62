// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// Gelu: the exact (erf) form is VEC gelu, approximate = "tanh" is VEC gelu_tanh.

// CHECK:      ctaisa.load dst=act dst_addr=65536 src=0 rows=2 cols=6 stride=6 narrow=0
// CHECK-NEXT: ctaisa.vec op=gelu dst=vec dst_addr=57344 a=act a_addr=65536 {{.*}} rows=2 cols=6
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=12 rows=2 cols=6 stride=6
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=0 rows=2 cols=6 stride=6 narrow=0
// CHECK-NEXT: ctaisa.vec op=gelu_tanh dst=vec dst_addr=0 a=act a_addr=0 {{.*}} rows=2 cols=6
// CHECK-NEXT: ctaisa.store src=vec src_addr=0 dst=24 rows=2 cols=6 stride=6
// CHECK-NEXT: ctaisa.halt
func.func @main(%x: tensor<2x6xf32> {onnx.name = "x"}) -> (tensor<2x6xf32> {onnx.name = "exact"}, tensor<2x6xf32> {onnx.name = "approx"}) {
  %exact = onnx.Gelu %x : (tensor<2x6xf32>) -> tensor<2x6xf32>
  %approx = onnx.Gelu %x {approximate = "tanh"} : (tensor<2x6xf32>) -> tensor<2x6xf32>
  func.return %exact, %approx : tensor<2x6xf32>, tensor<2x6xf32>
}

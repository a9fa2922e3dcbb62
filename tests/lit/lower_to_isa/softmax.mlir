// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// Softmax over the last axis: one SOFTMAX over (2 x 3) rows of 7, scale 1, no mask, not causal.

// CHECK:      ctaisa.load dst=act dst_addr=65536 src=0 rows=6 cols=7 stride=7 narrow=0
// CHECK-NEXT: ctaisa.softmax dst=vec dst_addr=57344 src=act src_addr=65536 rows=6 cols=7 scale=1.0 softcap=0.0 mask=none {{.*}} has_counts=0 {{.*}} causal=0
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=42 rows=6 cols=7 stride=7
// CHECK-NEXT: ctaisa.halt
func.func @main(%x: tensor<2x3x7xf32> {onnx.name = "x"}) -> (tensor<2x3x7xf32> {onnx.name = "p"}) {
  %p = onnx.Softmax %x {axis = -1 : i64} : (tensor<2x3x7xf32>) -> tensor<2x3x7xf32>
  func.return %p : tensor<2x3x7xf32>
}

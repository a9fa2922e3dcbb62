// RUN: ctac-opt %s -p assign-layers | filecheck %s
// RUN: ctac-opt %s -p lower-to-isa | filecheck %s --check-prefix=ISA

// Without attention there are no transformer blocks: assign-layers sets no layer and removes a
// stale one, and sources carry no layer. A name that itself ends like a layer tag gets the
// empty-layer marker "@L?", so the source cannot be read as layer 3.
// CHECK:      %y = onnx.Add %x, %x {ctac.source = "block@L3"} :
// CHECK-NEXT: %z = onnx.Mul %y, %y :
// CHECK-NOT:  ctac.layer
// ISA:        ctaisa.vec {{.*}} src "onnx.Add:block@L3@L?"
// ISA:        ctaisa.vec {{.*}} src "onnx.Mul:z"
func.func @main(%x: tensor<2x4xf32> {onnx.name = "x"}) -> (tensor<2x4xf32> {onnx.name = "z"}) {
  %y = onnx.Add %x, %x {ctac.source = "block@L3", ctac.layer = #builtin.int<5>} : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
  %z = onnx.Mul %y, %y : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
  func.return %z : tensor<2x4xf32>
}

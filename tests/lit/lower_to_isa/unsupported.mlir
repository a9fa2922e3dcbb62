// RUN: not ctac-opt %s -p lower-to-isa 2>&1 | filecheck %s

// Ops the lowering cannot handle are collected and reported together, each by its result name
// and op with the reason; the Relu, which can be lowered, and the ReduceMean over the first axis,
// which legalize-for-isa turns into one over the last, are not named. No module is printed.

// CHECK:      error: 3 op(s) cannot be lowered to the CTA-ISA:
// CHECK-NEXT:   'ge' (onnx.GatherElements): no lowering for this op
// CHECK-NEXT:   'p' (onnx.Softmax): softmax over an axis other than the last
// CHECK-NEXT:   'g' (onnx.Gemm): Gemm with transA, alpha or beta
// CHECK-NOT:  'ok'
// CHECK-NOT:  'm'
// CHECK-NOT:  ctaisa.
func.func @main(%x: tensor<1x3x8x8xf32> {onnx.name = "x"}, %s: tensor<2x3x4xf32> {onnx.name = "s"}, %a: tensor<4x3xf32> {onnx.name = "a"}, %b: tensor<4x5xf32> {onnx.name = "b"}) -> (tensor<1x3x8x8xf32> {onnx.name = "ge"}, tensor<2x3x4xf32> {onnx.name = "p"}, tensor<1x3x4xf32> {onnx.name = "m"}, tensor<3x5xf32> {onnx.name = "g"}, tensor<2x3x4xf32> {onnx.name = "ok"}) {
  %i = onnx.Constant dense<1> : tensor<1x3x8x8xi64>
  %ge = onnx.GatherElements %x, %i {axis = 1 : i64} : (tensor<1x3x8x8xf32>, tensor<1x3x8x8xi64>) -> tensor<1x3x8x8xf32>
  %p = onnx.Softmax %s {axis = 1 : i64} : (tensor<2x3x4xf32>) -> tensor<2x3x4xf32>
  %axes = onnx.Constant dense<0> : tensor<1xi64>
  %m = onnx.ReduceMean %s, axes %axes : (tensor<2x3x4xf32>, tensor<1xi64>) -> tensor<1x3x4xf32>
  %g = onnx.Gemm %a, %b {transA = 1 : i64} : (tensor<4x3xf32>, tensor<4x5xf32>) -> tensor<3x5xf32>
  %ok = onnx.Relu %s : (tensor<2x3x4xf32>) -> tensor<2x3x4xf32>
  func.return %ge, %p, %m, %g, %ok : tensor<1x3x8x8xf32>, tensor<2x3x4xf32>, tensor<1x3x4xf32>, tensor<3x5xf32>, tensor<2x3x4xf32>
}

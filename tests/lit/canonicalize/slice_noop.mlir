// RUN: ctac-opt %s -p onnx-canonicalize | filecheck %s

// A Slice whose result has its input's type, with forward steps, cuts nothing (a T5 encoder's
// position-bias slices at a fixed length): it forwards its input. A negative step reverses the
// axis, so that Slice stays.

// CHECK-LABEL: func.func @noop(%x: tensor<1x6x8x8xf32>) -> tensor<1x6x8x8xf32> {
// CHECK-NOT:     onnx.Slice
// CHECK:         %y = onnx.Relu %x
// CHECK-NEXT:    func.return %y
func.func @noop(%x: tensor<1x6x8x8xf32>) -> tensor<1x6x8x8xf32> {
  %starts = onnx.Constant dense<0> : tensor<1xi64>
  %ends = onnx.Constant dense<8> : tensor<1xi64>
  %axes = onnx.Constant dense<3> : tensor<1xi64>
  %steps = onnx.Constant dense<1> : tensor<1xi64>
  %s = onnx.Slice %x, %starts, %ends, axes %axes, steps %steps : (tensor<1x6x8x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x6x8x8xf32>
  %y = onnx.Relu %s : (tensor<1x6x8x8xf32>) -> tensor<1x6x8x8xf32>
  func.return %y : tensor<1x6x8x8xf32>
}

// CHECK-LABEL: func.func @reversed(
// CHECK:         onnx.Slice
func.func @reversed(%x: tensor<1x6x8x8xf32>) -> tensor<1x6x8x8xf32> {
  %starts = onnx.Constant dense<7> : tensor<1xi64>
  %ends = onnx.Constant dense<-9> : tensor<1xi64>
  %axes = onnx.Constant dense<3> : tensor<1xi64>
  %steps = onnx.Constant dense<-1> : tensor<1xi64>
  %s = onnx.Slice %x, %starts, %ends, axes %axes, steps %steps : (tensor<1x6x8x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x6x8x8xf32>
  func.return %s : tensor<1x6x8x8xf32>
}

// RUN: ctac-opt %s -p onnx-canonicalize | filecheck %s

// Identity and inference-mode Dropout (no training_mode, or a false one) forward their input;
// ops left without users are removed.

// CHECK-LABEL: func.func @main(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
// CHECK-NEXT:    %y = onnx.Relu %x : (tensor<2x8xf32>) -> tensor<2x8xf32>
// CHECK-NEXT:    func.return %y : tensor<2x8xf32>
// CHECK-NEXT:  }
func.func @main(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  %a = onnx.Identity %x : (tensor<2x8xf32>) -> tensor<2x8xf32>
  %b = onnx.Dropout %a : (tensor<2x8xf32>) -> tensor<2x8xf32>
  %ratio = onnx.Constant dense<1.000000e-01> : tensor<f32>
  %off = onnx.Constant dense<false> : tensor<i1>
  %c = onnx.Dropout %b, ratio %ratio, training_mode %off : (tensor<2x8xf32>, tensor<f32>, tensor<i1>) -> tensor<2x8xf32>
  %y = onnx.Relu %c : (tensor<2x8xf32>) -> tensor<2x8xf32>
  %unused = onnx.Neg %x : (tensor<2x8xf32>) -> tensor<2x8xf32>
  func.return %y : tensor<2x8xf32>
}

// Training-mode Dropout is not an identity: it stays.
// CHECK-LABEL: func.func @training(
// CHECK:         %y = onnx.Dropout %x, ratio %{{[^ ]+}}, training_mode %{{[^ ]+}} : (tensor<2x8xf32>, tensor<f32>, tensor<i1>) -> tensor<2x8xf32>
// CHECK-NEXT:    func.return %y
func.func @training(%x: tensor<2x8xf32>) -> tensor<2x8xf32> {
  %on = onnx.Constant dense<true> : tensor<i1>
  %ratio = onnx.Constant dense<1.000000e-01> : tensor<f32>
  %y = onnx.Dropout %x, ratio %ratio, training_mode %on : (tensor<2x8xf32>, tensor<f32>, tensor<i1>) -> tensor<2x8xf32>
  func.return %y : tensor<2x8xf32>
}

// An Identity returned directly.
// CHECK-LABEL: func.func @returned(
// CHECK-NEXT:    func.return %x : tensor<4xi64>
func.func @returned(%x: tensor<4xi64>) -> tensor<4xi64> {
  %y = onnx.Identity %x : (tensor<4xi64>) -> tensor<4xi64>
  func.return %y : tensor<4xi64>
}

// RUN: ctac-opt %s -p onnx-canonicalize | filecheck %s

// Regressions: patterns whose shapes broadcast differently from LayerNorm / GELU must stay.

// The variance drops its reduced axis (keepdims = 0), so the Div divides column j by row j's
// deviation: not a LayerNorm.
// CHECK-LABEL: func.func @variance_without_keepdims(
// CHECK-NOT:   onnx.LayerNormalization
// CHECK:       onnx.Div %centered, %std : (tensor<4x4xf32>, tensor<4xf32>)
func.func @variance_without_keepdims(%x: tensor<4x4xf32>) -> tensor<4x4xf32> {
  %axes = onnx.Constant dense<-1> : tensor<1xi64>
  %mean = onnx.ReduceMean %x, axes %axes : (tensor<4x4xf32>, tensor<1xi64>) -> tensor<4x1xf32>
  %centered = onnx.Sub %x, %mean : (tensor<4x4xf32>, tensor<4x1xf32>) -> tensor<4x4xf32>
  %two = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %square = onnx.Pow %centered, %two : (tensor<4x4xf32>, tensor<f32>) -> tensor<4x4xf32>
  %variance = onnx.ReduceMean %square, axes %axes {keepdims = 0 : i64} : (tensor<4x4xf32>, tensor<1xi64>) -> tensor<4xf32>
  %eps = onnx.Constant dense<1.000000e-05> : tensor<f32>
  %shifted = onnx.Add %variance, %eps : (tensor<4xf32>, tensor<f32>) -> tensor<4xf32>
  %std = onnx.Sqrt %shifted : (tensor<4xf32>) -> tensor<4xf32>
  %y = onnx.Div %centered, %std : (tensor<4x4xf32>, tensor<4xf32>) -> tensor<4x4xf32>
  func.return %y : tensor<4x4xf32>
}

// The 0.5 factor broadcasts x from 16 to 2x16 elements: a Gelu of x cannot produce that shape.
// CHECK-LABEL: func.func @gelu_half_broadcasts(
// CHECK-NOT:   onnx.Gelu
// CHECK:       onnx.Erf
// CHECK:       onnx.Mul %xi, %half : (tensor<16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
func.func @gelu_half_broadcasts(%x: tensor<16xf32>) -> tensor<2x16xf32> {
  %sqrt2 = onnx.Constant dense<1.41421354> : tensor<f32>
  %scaled = onnx.Div %x, %sqrt2 : (tensor<16xf32>, tensor<f32>) -> tensor<16xf32>
  %erf = onnx.Erf %scaled : (tensor<16xf32>) -> tensor<16xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inner = onnx.Add %erf, %one : (tensor<16xf32>, tensor<f32>) -> tensor<16xf32>
  %xi = onnx.Mul %x, %inner : (tensor<16xf32>, tensor<16xf32>) -> tensor<16xf32>
  %half = onnx.Constant dense<5.000000e-01> : tensor<2x16xf32>
  %y = onnx.Mul %xi, %half : (tensor<16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
  func.return %y : tensor<2x16xf32>
}

// RUN: ctac-opt %s -p onnx-canonicalize | filecheck %s

// The decomposed RMSNorm (T5, LLaMA-style: no mean subtracted) becomes one onnx.RMSNormalization:
// epsilon from the Add, axis from the mean's axes, scale from the trailing Mul.

// T5 as TorchScript exports it: x * (1 / sqrt(mean(x^2) + eps)), then weight * that.
// CHECK-LABEL: func.func @t5_torchscript(%x: tensor<2x4x8xf32>) -> tensor<2x4x8xf32> {
// CHECK-NEXT:    %w = onnx.Constant dense<[1.000000e+00, 2.000000e+00, 3.000000e+00, 4.000000e+00, 5.000000e+00, 6.000000e+00, 7.000000e+00, 8.000000e+00]> : tensor<8xf32>
// CHECK-NEXT:    %y = onnx.RMSNormalization %x, %w {axis = -1 : i64, epsilon = 1.000000e-06 : f32} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
// CHECK-NEXT:    func.return %y : tensor<2x4x8xf32>
// CHECK-NEXT:  }
func.func @t5_torchscript(%x: tensor<2x4x8xf32>) -> tensor<2x4x8xf32> {
  %two = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %square = onnx.Pow %x, %two : (tensor<2x4x8xf32>, tensor<f32>) -> tensor<2x4x8xf32>
  %axes = onnx.Constant dense<-1> : tensor<1xi64>
  %ms = onnx.ReduceMean %square, axes %axes {keepdims = 1 : i64} : (tensor<2x4x8xf32>, tensor<1xi64>) -> tensor<2x4x1xf32>
  %eps = onnx.Constant dense<9.99999997E-7> : tensor<f32>
  %shifted = onnx.Add %ms, %eps : (tensor<2x4x1xf32>, tensor<f32>) -> tensor<2x4x1xf32>
  %root = onnx.Sqrt %shifted : (tensor<2x4x1xf32>) -> tensor<2x4x1xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inverse = onnx.Div %one, %root : (tensor<f32>, tensor<2x4x1xf32>) -> tensor<2x4x1xf32>
  %normalized = onnx.Mul %x, %inverse : (tensor<2x4x8xf32>, tensor<2x4x1xf32>) -> tensor<2x4x8xf32>
  %w = onnx.Constant dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]> : tensor<8xf32>
  %y = onnx.Mul %w, %normalized : (tensor<8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  func.return %y : tensor<2x4x8xf32>
}

// Reciprocal of the root, the inverse root first in the Mul, square as Mul(x, x), epsilon on
// the left, no scale: the scale becomes a constant of ones.
// CHECK-LABEL: func.func @reciprocal_no_scale(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
// CHECK-NEXT:    %[[ONES:[^ ]+]] = onnx.Constant dense<1.000000e+00> : tensor<8xf32>
// CHECK-NEXT:    %y = onnx.RMSNormalization %x, %[[ONES]] {axis = -1 : i64, epsilon = 1.000000e-05 : f32} : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
// CHECK-NEXT:    func.return %y : tensor<4x8xf32>
func.func @reciprocal_no_scale(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %square = onnx.Mul %x, %x : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %axes = onnx.Constant dense<1> : tensor<1xi64>
  %ms = onnx.ReduceMean %square, axes %axes : (tensor<4x8xf32>, tensor<1xi64>) -> tensor<4x1xf32>
  %eps = onnx.Constant dense<9.99999974E-6> : tensor<f32>
  %shifted = onnx.Add %eps, %ms : (tensor<f32>, tensor<4x1xf32>) -> tensor<4x1xf32>
  %root = onnx.Sqrt %shifted : (tensor<4x1xf32>) -> tensor<4x1xf32>
  %inverse = onnx.Reciprocal %root : (tensor<4x1xf32>) -> tensor<4x1xf32>
  %y = onnx.Mul %inverse, %x : (tensor<4x1xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  func.return %y : tensor<4x8xf32>
}

// Pow(ms + eps, -0.5) as the inverse root, over the last two axes: axis = -2.
// CHECK-LABEL: func.func @pow_half_two_axes(
// CHECK:         %y = onnx.RMSNormalization %x, %w {axis = -2 : i64, epsilon = 1.000000e-05 : f32} : (tensor<2x4x8xf32>, tensor<4x8xf32>) -> tensor<2x4x8xf32>
// CHECK-NOT:     onnx.ReduceMean
func.func @pow_half_two_axes(%x: tensor<2x4x8xf32>) -> tensor<2x4x8xf32> {
  %two = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %square = onnx.Pow %x, %two : (tensor<2x4x8xf32>, tensor<f32>) -> tensor<2x4x8xf32>
  %axes = onnx.Constant dense<[1, 2]> : tensor<2xi64>
  %ms = onnx.ReduceMean %square, axes %axes : (tensor<2x4x8xf32>, tensor<2xi64>) -> tensor<2x1x1xf32>
  %eps = onnx.Constant dense<9.99999974E-6> : tensor<f32>
  %shifted = onnx.Add %ms, %eps : (tensor<2x1x1xf32>, tensor<f32>) -> tensor<2x1x1xf32>
  %minus_half = onnx.Constant dense<-5.000000e-01> : tensor<f32>
  %inverse = onnx.Pow %shifted, %minus_half : (tensor<2x1x1xf32>, tensor<f32>) -> tensor<2x1x1xf32>
  %normalized = onnx.Mul %x, %inverse : (tensor<2x4x8xf32>, tensor<2x1x1xf32>) -> tensor<2x4x8xf32>
  %w = onnx.Constant dense<5.000000e-01> : tensor<4x8xf32>
  %y = onnx.Mul %normalized, %w : (tensor<2x4x8xf32>, tensor<4x8xf32>) -> tensor<2x4x8xf32>
  func.return %y : tensor<2x4x8xf32>
}

// What ctac/contrib_fused.py writes for SkipSimplifiedLayerNormalization (opset 17 has no
// ReduceMean with axes as an input): x / sqrt(ReduceSum(x * x) / n + eps) * gamma.
// CHECK-LABEL: func.func @sum_over_width(
// CHECK:         %y = onnx.RMSNormalization %x, %w {axis = -1 : i64, epsilon = 1.000000e-12 : f32} : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
// CHECK-NOT:     onnx.ReduceSum
func.func @sum_over_width(%x: tensor<2x4x8xf32>) -> tensor<2x4x8xf32> {
  %square = onnx.Mul %x, %x : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %axes = onnx.Constant dense<-1> : tensor<1xi64>
  %sum = onnx.ReduceSum %square, axes %axes {keepdims = 1 : i64} : (tensor<2x4x8xf32>, tensor<1xi64>) -> tensor<2x4x1xf32>
  %width = onnx.Constant dense<8.000000e+00> : tensor<f32>
  %ms = onnx.Div %sum, %width : (tensor<2x4x1xf32>, tensor<f32>) -> tensor<2x4x1xf32>
  %eps = onnx.Constant dense<9.99999996E-13> : tensor<f32>
  %shifted = onnx.Add %ms, %eps : (tensor<2x4x1xf32>, tensor<f32>) -> tensor<2x4x1xf32>
  %root = onnx.Sqrt %shifted : (tensor<2x4x1xf32>) -> tensor<2x4x1xf32>
  %normalized = onnx.Div %x, %root : (tensor<2x4x8xf32>, tensor<2x4x1xf32>) -> tensor<2x4x8xf32>
  %w = onnx.Constant dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]> : tensor<8xf32>
  %y = onnx.Mul %normalized, %w : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  func.return %y : tensor<2x4x8xf32>
}

// Near misses stay as they are: the sum divided by the wrong count, a mean over a middle axis,
// and the root of another value's mean square.
// CHECK-LABEL: func.func @near_misses(
// CHECK-NOT:     onnx.RMSNormalization
// CHECK:         func.return
func.func @near_misses(%x: tensor<2x4x8xf32>, %z: tensor<2x4x8xf32>) -> (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>) {
  %square = onnx.Mul %x, %x : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %last = onnx.Constant dense<-1> : tensor<1xi64>
  %sum = onnx.ReduceSum %square, axes %last {keepdims = 1 : i64} : (tensor<2x4x8xf32>, tensor<1xi64>) -> tensor<2x4x1xf32>
  %four = onnx.Constant dense<4.000000e+00> : tensor<f32>
  %ms = onnx.Div %sum, %four : (tensor<2x4x1xf32>, tensor<f32>) -> tensor<2x4x1xf32>
  %eps = onnx.Constant dense<9.99999974E-6> : tensor<f32>
  %shifted = onnx.Add %ms, %eps : (tensor<2x4x1xf32>, tensor<f32>) -> tensor<2x4x1xf32>
  %root = onnx.Sqrt %shifted : (tensor<2x4x1xf32>) -> tensor<2x4x1xf32>
  %a = onnx.Div %x, %root : (tensor<2x4x8xf32>, tensor<2x4x1xf32>) -> tensor<2x4x8xf32>
  %middle = onnx.Constant dense<1> : tensor<1xi64>
  %ms_middle = onnx.ReduceMean %square, axes %middle : (tensor<2x4x8xf32>, tensor<1xi64>) -> tensor<2x1x8xf32>
  %shifted_middle = onnx.Add %ms_middle, %eps : (tensor<2x1x8xf32>, tensor<f32>) -> tensor<2x1x8xf32>
  %root_middle = onnx.Sqrt %shifted_middle : (tensor<2x1x8xf32>) -> tensor<2x1x8xf32>
  %b = onnx.Div %x, %root_middle : (tensor<2x4x8xf32>, tensor<2x1x8xf32>) -> tensor<2x4x8xf32>
  %ms_x = onnx.ReduceMean %square, axes %last : (tensor<2x4x8xf32>, tensor<1xi64>) -> tensor<2x4x1xf32>
  %shifted_x = onnx.Add %ms_x, %eps : (tensor<2x4x1xf32>, tensor<f32>) -> tensor<2x4x1xf32>
  %root_x = onnx.Sqrt %shifted_x : (tensor<2x4x1xf32>) -> tensor<2x4x1xf32>
  %c = onnx.Div %z, %root_x : (tensor<2x4x8xf32>, tensor<2x4x1xf32>) -> tensor<2x4x8xf32>
  func.return %a, %b, %c : tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>
}

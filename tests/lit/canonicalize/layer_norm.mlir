// RUN: ctac-opt %s -p onnx-canonicalize | filecheck %s

// The decomposed LayerNorm of exported models becomes one onnx.LayerNormalization: epsilon from
// the Add, axis from the ReduceMean axes (as a negative axis), scale and bias from the trailing
// Mul and Add.

// CHECK-LABEL: func.func @with_affine(%x: tensor<2x4x8xf32>) -> tensor<2x4x8xf32> {
// CHECK-NEXT:    %gamma = onnx.Constant dense<[1.000000e+00, 2.000000e+00, 3.000000e+00, 4.000000e+00, 5.000000e+00, 6.000000e+00, 7.000000e+00, 8.000000e+00]> : tensor<8xf32>
// CHECK-NEXT:    %beta = onnx.Constant dense<5.000000e-01> : tensor<8xf32>
// CHECK-NEXT:    %y = onnx.LayerNormalization %x, %gamma, B %beta {axis = -1 : i64, epsilon = 1.000000e-05 : f32} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
// CHECK-NEXT:    func.return %y : tensor<2x4x8xf32>
// CHECK-NEXT:  }
func.func @with_affine(%x: tensor<2x4x8xf32>) -> tensor<2x4x8xf32> {
  %axes = onnx.Constant dense<-1> : tensor<1xi64>
  %mean = onnx.ReduceMean %x, axes %axes : (tensor<2x4x8xf32>, tensor<1xi64>) -> tensor<2x4x1xf32>
  %centered = onnx.Sub %x, %mean : (tensor<2x4x8xf32>, tensor<2x4x1xf32>) -> tensor<2x4x8xf32>
  %two = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %square = onnx.Pow %centered, %two : (tensor<2x4x8xf32>, tensor<f32>) -> tensor<2x4x8xf32>
  %variance = onnx.ReduceMean %square, axes %axes : (tensor<2x4x8xf32>, tensor<1xi64>) -> tensor<2x4x1xf32>
  %eps = onnx.Constant dense<9.99999974E-6> : tensor<f32>
  %shifted = onnx.Add %variance, %eps : (tensor<2x4x1xf32>, tensor<f32>) -> tensor<2x4x1xf32>
  %std = onnx.Sqrt %shifted : (tensor<2x4x1xf32>) -> tensor<2x4x1xf32>
  %normalized = onnx.Div %centered, %std : (tensor<2x4x8xf32>, tensor<2x4x1xf32>) -> tensor<2x4x8xf32>
  %gamma = onnx.Constant dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]> : tensor<8xf32>
  %scaled = onnx.Mul %normalized, %gamma : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %beta = onnx.Constant dense<5.000000e-01> : tensor<8xf32>
  %y = onnx.Add %scaled, %beta : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  func.return %y : tensor<2x4x8xf32>
}

// Square as Mul(d, d), epsilon on the left of the Add, a positive axis, no scale or bias: the
// scale becomes a constant of ones and there is no B.
// CHECK-LABEL: func.func @without_affine(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
// CHECK-NEXT:    %[[ONES:[^ ]+]] = onnx.Constant dense<1.000000e+00> : tensor<8xf32>
// CHECK-NEXT:    %y = onnx.LayerNormalization %x, %[[ONES]] {axis = -1 : i64, epsilon = 1.000000e-12 : f32} : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
// CHECK-NEXT:    func.return %y : tensor<4x8xf32>
// CHECK-NEXT:  }
func.func @without_affine(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %axes = onnx.Constant dense<1> : tensor<1xi64>
  %mean = onnx.ReduceMean %x, axes %axes : (tensor<4x8xf32>, tensor<1xi64>) -> tensor<4x1xf32>
  %centered = onnx.Sub %x, %mean : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  %square = onnx.Mul %centered, %centered : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %variance = onnx.ReduceMean %square, axes %axes : (tensor<4x8xf32>, tensor<1xi64>) -> tensor<4x1xf32>
  %eps = onnx.Constant dense<1.000000e-12> : tensor<f32>
  %shifted = onnx.Add %eps, %variance : (tensor<f32>, tensor<4x1xf32>) -> tensor<4x1xf32>
  %std = onnx.Sqrt %shifted : (tensor<4x1xf32>) -> tensor<4x1xf32>
  %y = onnx.Div %centered, %std : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  func.return %y : tensor<4x8xf32>
}

// Normalising over the last two axes gives axis = -2.
// CHECK-LABEL: func.func @two_axes(
// CHECK:         %y = onnx.LayerNormalization %x, %{{[^ ]+}} {axis = -2 : i64, epsilon = 1.000000e-05 : f32} : (tensor<2x4x8xf32>, tensor<4x8xf32>) -> tensor<2x4x8xf32>
// CHECK-NOT:     onnx.ReduceMean
func.func @two_axes(%x: tensor<2x4x8xf32>) -> tensor<2x4x8xf32> {
  %axes = onnx.Constant dense<[1, 2]> : tensor<2xi64>
  %mean = onnx.ReduceMean %x, axes %axes : (tensor<2x4x8xf32>, tensor<2xi64>) -> tensor<2x1x1xf32>
  %centered = onnx.Sub %x, %mean : (tensor<2x4x8xf32>, tensor<2x1x1xf32>) -> tensor<2x4x8xf32>
  %two = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %square = onnx.Pow %centered, %two : (tensor<2x4x8xf32>, tensor<f32>) -> tensor<2x4x8xf32>
  %variance = onnx.ReduceMean %square, axes %axes : (tensor<2x4x8xf32>, tensor<2xi64>) -> tensor<2x1x1xf32>
  %eps = onnx.Constant dense<1.000000e-05> : tensor<f32>
  %shifted = onnx.Add %variance, %eps : (tensor<2x1x1xf32>, tensor<f32>) -> tensor<2x1x1xf32>
  %std = onnx.Sqrt %shifted : (tensor<2x1x1xf32>) -> tensor<2x1x1xf32>
  %y = onnx.Div %centered, %std : (tensor<2x4x8xf32>, tensor<2x1x1xf32>) -> tensor<2x4x8xf32>
  func.return %y : tensor<2x4x8xf32>
}

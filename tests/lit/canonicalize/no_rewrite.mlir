// RUN: ctac-opt %s -p onnx-canonicalize | filecheck %s
// RUN: ctac-opt %s -p onnx-canonicalize | filecheck %s --check-prefix=NONE

// Near misses of the LayerNorm and GELU patterns: canonicalize must leave them alone.
// NONE-NOT: onnx.LayerNormalization
// NONE-NOT: onnx.Gelu

// The "variance" is the mean of the cube, not of the square.
// CHECK-LABEL: func.func @cube_not_square(
// CHECK-NOT:   onnx.LayerNormalization
// CHECK-NOT:   onnx.Gelu
// CHECK:       onnx.Pow %centered, %three
// CHECK-NOT:   onnx.LayerNormalization
// CHECK-NOT:   onnx.Gelu
// CHECK:       onnx.Div %centered, %std
func.func @cube_not_square(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %axes = onnx.Constant dense<-1> : tensor<1xi64>
  %mean = onnx.ReduceMean %x, axes %axes : (tensor<4x8xf32>, tensor<1xi64>) -> tensor<4x1xf32>
  %centered = onnx.Sub %x, %mean : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  %three = onnx.Constant dense<3.000000e+00> : tensor<f32>
  %cube = onnx.Pow %centered, %three : (tensor<4x8xf32>, tensor<f32>) -> tensor<4x8xf32>
  %variance = onnx.ReduceMean %cube, axes %axes : (tensor<4x8xf32>, tensor<1xi64>) -> tensor<4x1xf32>
  %eps = onnx.Constant dense<1.000000e-05> : tensor<f32>
  %shifted = onnx.Add %variance, %eps : (tensor<4x1xf32>, tensor<f32>) -> tensor<4x1xf32>
  %std = onnx.Sqrt %shifted : (tensor<4x1xf32>) -> tensor<4x1xf32>
  %y = onnx.Div %centered, %std : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  func.return %y : tensor<4x8xf32>
}

// The variance squares x, not x - mean(x).
// CHECK-LABEL: func.func @square_of_input(
// CHECK-NOT:   onnx.LayerNormalization
// CHECK-NOT:   onnx.Gelu
// CHECK:       onnx.Mul %x, %x
// CHECK-NOT:   onnx.LayerNormalization
// CHECK-NOT:   onnx.Gelu
// CHECK:       onnx.Div %centered, %std
func.func @square_of_input(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %axes = onnx.Constant dense<-1> : tensor<1xi64>
  %mean = onnx.ReduceMean %x, axes %axes : (tensor<4x8xf32>, tensor<1xi64>) -> tensor<4x1xf32>
  %centered = onnx.Sub %x, %mean : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  %square = onnx.Mul %x, %x : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %variance = onnx.ReduceMean %square, axes %axes : (tensor<4x8xf32>, tensor<1xi64>) -> tensor<4x1xf32>
  %eps = onnx.Constant dense<1.000000e-05> : tensor<f32>
  %shifted = onnx.Add %variance, %eps : (tensor<4x1xf32>, tensor<f32>) -> tensor<4x1xf32>
  %std = onnx.Sqrt %shifted : (tensor<4x1xf32>) -> tensor<4x1xf32>
  %y = onnx.Div %centered, %std : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  func.return %y : tensor<4x8xf32>
}

// The variance reduces another axis than the mean.
// CHECK-LABEL: func.func @variance_over_other_axis(
// CHECK-NOT:   onnx.LayerNormalization
// CHECK-NOT:   onnx.Gelu
// CHECK:       onnx.ReduceMean %square, axes %first
// CHECK-NOT:   onnx.LayerNormalization
// CHECK-NOT:   onnx.Gelu
// CHECK:       onnx.Div %centered, %std
func.func @variance_over_other_axis(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %last = onnx.Constant dense<-1> : tensor<1xi64>
  %first = onnx.Constant dense<0> : tensor<1xi64>
  %mean = onnx.ReduceMean %x, axes %last : (tensor<4x8xf32>, tensor<1xi64>) -> tensor<4x1xf32>
  %centered = onnx.Sub %x, %mean : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  %two = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %square = onnx.Pow %centered, %two : (tensor<4x8xf32>, tensor<f32>) -> tensor<4x8xf32>
  %variance = onnx.ReduceMean %square, axes %first : (tensor<4x8xf32>, tensor<1xi64>) -> tensor<1x8xf32>
  %eps = onnx.Constant dense<1.000000e-05> : tensor<f32>
  %shifted = onnx.Add %variance, %eps : (tensor<1x8xf32>, tensor<f32>) -> tensor<1x8xf32>
  %std = onnx.Sqrt %shifted : (tensor<1x8xf32>) -> tensor<1x8xf32>
  %y = onnx.Div %centered, %std : (tensor<4x8xf32>, tensor<1x8xf32>) -> tensor<4x8xf32>
  func.return %y : tensor<4x8xf32>
}

// x / 2 instead of x / sqrt(2).
// CHECK-LABEL: func.func @erf_wrong_constant(
// CHECK-NOT:   onnx.LayerNormalization
// CHECK-NOT:   onnx.Gelu
// CHECK:       onnx.Erf %scaled
// CHECK-NOT:   onnx.LayerNormalization
// CHECK-NOT:   onnx.Gelu
// CHECK:       %y = onnx.Mul %xi, %half
func.func @erf_wrong_constant(%x: tensor<2x16xf32>) -> tensor<2x16xf32> {
  %two = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %scaled = onnx.Div %x, %two : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
  %erf = onnx.Erf %scaled : (tensor<2x16xf32>) -> tensor<2x16xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inner = onnx.Add %erf, %one : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
  %xi = onnx.Mul %x, %inner : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
  %half = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %y = onnx.Mul %xi, %half : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
  func.return %y : tensor<2x16xf32>
}

// 0.5 * g * (1 + erf(x / sqrt(2))) with g not x.
// CHECK-LABEL: func.func @erf_gated_by_other_input(
// CHECK-NOT:   onnx.LayerNormalization
// CHECK-NOT:   onnx.Gelu
// CHECK:       onnx.Erf %scaled
// CHECK-NOT:   onnx.LayerNormalization
// CHECK-NOT:   onnx.Gelu
// CHECK:       %y = onnx.Mul %gi, %half
func.func @erf_gated_by_other_input(%x: tensor<2x16xf32>, %g: tensor<2x16xf32>) -> tensor<2x16xf32> {
  %sqrt2 = onnx.Constant dense<1.41421354> : tensor<f32>
  %scaled = onnx.Div %x, %sqrt2 : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
  %erf = onnx.Erf %scaled : (tensor<2x16xf32>) -> tensor<2x16xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inner = onnx.Add %erf, %one : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
  %gi = onnx.Mul %g, %inner : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
  %half = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %y = onnx.Mul %gi, %half : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
  func.return %y : tensor<2x16xf32>
}

// 0.05 * x^3 instead of 0.044715 * x^3.
// CHECK-LABEL: func.func @tanh_wrong_coefficient(
// CHECK-NOT:   onnx.LayerNormalization
// CHECK-NOT:   onnx.Gelu
// CHECK:       onnx.Tanh %arg
// CHECK-NOT:   onnx.LayerNormalization
// CHECK-NOT:   onnx.Gelu
// CHECK:       %y = onnx.Mul %hx, %inner
func.func @tanh_wrong_coefficient(%x: tensor<2x16xf32>) -> tensor<2x16xf32> {
  %three = onnx.Constant dense<3.000000e+00> : tensor<f32>
  %cube = onnx.Pow %x, %three : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
  %c = onnx.Constant dense<5.000000e-02> : tensor<f32>
  %cubic = onnx.Mul %c, %cube : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
  %sum = onnx.Add %x, %cubic : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
  %k = onnx.Constant dense<0.797884583> : tensor<f32>
  %arg = onnx.Mul %k, %sum : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
  %tanh = onnx.Tanh %arg : (tensor<2x16xf32>) -> tensor<2x16xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inner = onnx.Add %one, %tanh : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
  %half = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %hx = onnx.Mul %half, %x : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
  %y = onnx.Mul %hx, %inner : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
  func.return %y : tensor<2x16xf32>
}

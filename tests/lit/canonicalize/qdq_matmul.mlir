// RUN: ctac-opt %s -p onnx-canonicalize | filecheck %s

// A MatMul of dequantized operands ((x - zx) * sx @ w * sw, sx a scalar, sw one scale per column)
// becomes the integers' MatMul scaled after by sx * sw, which the lowering runs in the int8 mode.

// CHECK-LABEL: func.func @per_column(%xq: tensor<4x2xui8>, %wq: tensor<2x3xi8>) -> tensor<4x3xf32> {
// CHECK:         %xc = onnx.Sub %xf, %xz
// CHECK:         %wf = onnx.Cast %wq {to = f32}
// CHECK-NEXT:    %[[P:[0-9]+]] = onnx.MatMul %xc, %wf : (tensor<4x2xf32>, tensor<2x3xf32>) -> tensor<4x3xf32>
// CHECK-NEXT:    %[[S:[0-9]+]] = onnx.Constant dense<[1.500000e-02, 7.500000e-03, 3.750000e-03]> : tensor<3xf32>
// CHECK-NEXT:    %y = onnx.Mul %[[P]], %[[S]] : (tensor<4x3xf32>, tensor<3xf32>) -> tensor<4x3xf32>
// CHECK-NEXT:    func.return %y : tensor<4x3xf32>
func.func @per_column(%xq: tensor<4x2xui8>, %wq: tensor<2x3xi8>) -> tensor<4x3xf32> {
  %xs = onnx.Constant dense<3.000000e-02> : tensor<f32>
  %xf = onnx.Cast %xq {to = f32} : (tensor<4x2xui8>) -> tensor<4x2xf32>
  %xz = onnx.Constant dense<1.280000e+02> : tensor<f32>
  %xc = onnx.Sub %xf, %xz : (tensor<4x2xf32>, tensor<f32>) -> tensor<4x2xf32>
  %xd = onnx.Mul %xc, %xs : (tensor<4x2xf32>, tensor<f32>) -> tensor<4x2xf32>
  %wf = onnx.Cast %wq {to = f32} : (tensor<2x3xi8>) -> tensor<2x3xf32>
  %ws = onnx.Constant dense<[5.000000e-01, 2.500000e-01, 1.250000e-01]> : tensor<3xf32>
  %wd = onnx.Mul %wf, %ws : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
  %y = onnx.MatMul %xd, %wd : (tensor<4x2xf32>, tensor<2x3xf32>) -> tensor<4x3xf32>
  func.return %y : tensor<4x3xf32>
}

// A float operand (not integers) leaves the MatMul as it is.
// CHECK-LABEL: func.func @float_left
// CHECK:         %y = onnx.MatMul %xd, %wd
func.func @float_left(%x: tensor<4x2xf32>, %wq: tensor<2x3xi8>) -> tensor<4x3xf32> {
  %xs = onnx.Constant dense<3.000000e-02> : tensor<f32>
  %xd = onnx.Mul %x, %xs : (tensor<4x2xf32>, tensor<f32>) -> tensor<4x2xf32>
  %wf = onnx.Cast %wq {to = f32} : (tensor<2x3xi8>) -> tensor<2x3xf32>
  %ws = onnx.Constant dense<2.500000e-01> : tensor<f32>
  %wd = onnx.Mul %wf, %ws : (tensor<2x3xf32>, tensor<f32>) -> tensor<2x3xf32>
  %y = onnx.MatMul %xd, %wd : (tensor<4x2xf32>, tensor<2x3xf32>) -> tensor<4x3xf32>
  func.return %y : tensor<4x3xf32>
}

// RUN: ctac-opt %s --split-input-file --verify-diagnostics | filecheck %s
// RUN: ctac-opt %s --split-input-file --verify-diagnostics | filecheck %s --check-prefix=ALLFAIL

// Each chunk breaks one ONNX rule that the dialect's verifier checks. A chunk that verifies
// would be printed in custom syntax (`builtin.module {`); failing ones print generically.
// ALLFAIL-NOT: builtin.module {

// CHECK: onnx.Transpose: perm [2, 1, 1] is not a permutation of 3 axes
func.func @main(%x: tensor<2x3x4xf32>) -> tensor<4x3x2xf32> {
  %y = onnx.Transpose %x {perm = array<i64: 2, 1, 1>} : (tensor<2x3x4xf32>) -> tensor<4x3x2xf32>
  func.return %y : tensor<4x3x2xf32>
}

// -----
// CHECK: onnx.Transpose: result shape (2, 3, 4) does not follow perm
func.func @main(%x: tensor<2x3x4xf32>) -> tensor<2x3x4xf32> {
  %y = onnx.Transpose %x {perm = array<i64: 0, 2, 1>} : (tensor<2x3x4xf32>) -> tensor<2x3x4xf32>
  func.return %y : tensor<2x3x4xf32>
}

// -----
// CHECK: onnx.Add: shapes (2, 3) and (4,) do not broadcast
func.func @main(%a: tensor<2x3xf32>, %b: tensor<4xf32>) -> tensor<2x3xf32> {
  %y = onnx.Add %a, %b : (tensor<2x3xf32>, tensor<4xf32>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}

// -----
// CHECK: onnx.Mul: result shape (2, 3) should be the broadcast (4, 2, 3)
func.func @main(%a: tensor<2x3xf32>, %b: tensor<4x1x3xf32>) -> tensor<2x3xf32> {
  %y = onnx.Mul %a, %b : (tensor<2x3xf32>, tensor<4x1x3xf32>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}

// -----
// CHECK: onnx.MatMul: shapes (2, 16, 64) and (32, 64) cannot be multiplied
func.func @main(%a: tensor<2x16x64xf32>, %b: tensor<32x64xf32>) -> tensor<2x16x64xf32> {
  %y = onnx.MatMul %a, %b : (tensor<2x16x64xf32>, tensor<32x64xf32>) -> tensor<2x16x64xf32>
  func.return %y : tensor<2x16x64xf32>
}

// -----
// CHECK: onnx.Gemm: inner dimensions differ (64 vs 192)
func.func @main(%a: tensor<32x64xf32>, %b: tensor<192x64xf32>) -> tensor<32x64xf32> {
  %y = onnx.Gemm %a, %b : (tensor<32x64xf32>, tensor<192x64xf32>) -> tensor<32x64xf32>
  func.return %y : tensor<32x64xf32>
}

// -----
// CHECK: onnx.Concat: input shapes [(2, 1, 64), (2, 16, 32)] differ outside axis 1
func.func @main(%a: tensor<2x1x64xf32>, %b: tensor<2x16x32xf32>) -> tensor<2x17x64xf32> {
  %y = onnx.Concat %a, %b {axis = 1 : i64} : (tensor<2x1x64xf32>, tensor<2x16x32xf32>) -> tensor<2x17x64xf32>
  func.return %y : tensor<2x17x64xf32>
}

// -----
// CHECK: onnx.Split: output sizes along the axis do not add up to the input
func.func @main(%x: tensor<2x16x192xf32>) -> tensor<2x16x64xf32> {
  %q, %k = onnx.Split %x {axis = 2 : i64, num_outputs = 2 : i64} : (tensor<2x16x192xf32>) -> (tensor<2x16x64xf32>, tensor<2x16x64xf32>)
  func.return %q : tensor<2x16x64xf32>
}

// -----
// CHECK: onnx.Reshape: cannot reshape (2, 16, 64) to (2, 16, 4, 8)
func.func @main(%x: tensor<2x16x64xf32>, %s: tensor<4xi64>) -> tensor<2x16x4x8xf32> {
  %y = onnx.Reshape %x, %s : (tensor<2x16x64xf32>, tensor<4xi64>) -> tensor<2x16x4x8xf32>
  func.return %y : tensor<2x16x4x8xf32>
}

// -----
// CHECK: onnx.Softmax: axis 3 is out of range for rank 3
func.func @main(%x: tensor<2x4x4xf32>) -> tensor<2x4x4xf32> {
  %y = onnx.Softmax %x {axis = 3 : i64} : (tensor<2x4x4xf32>) -> tensor<2x4x4xf32>
  func.return %y : tensor<2x4x4xf32>
}

// -----
// CHECK: onnx.Gelu: approximate must be 'none' or 'tanh'
func.func @main(%x: tensor<8xf32>) -> tensor<8xf32> {
  %y = onnx.Gelu %x {approximate = "erf"} : (tensor<8xf32>) -> tensor<8xf32>
  func.return %y : tensor<8xf32>
}

// -----
// CHECK: onnx.LayerNormalization: Scale shape (32,) does not fit (64,)
func.func @main(%x: tensor<2x16x64xf32>, %g: tensor<32xf32>) -> tensor<2x16x64xf32> {
  %y = onnx.LayerNormalization %x, %g {axis = -1 : i64} : (tensor<2x16x64xf32>, tensor<32xf32>) -> tensor<2x16x64xf32>
  func.return %y : tensor<2x16x64xf32>
}

// -----
// CHECK: onnx.Where: condition must be a bool tensor
func.func @main(%c: tensor<4xi64>, %a: tensor<4xf32>, %b: tensor<4xf32>) -> tensor<4xf32> {
  %y = onnx.Where %c, %a, %b : (tensor<4xi64>, tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %y : tensor<4xf32>
}

// -----
// CHECK: onnx.Cast: result element type f16 is not 'to' (f32)
func.func @main(%x: tensor<4xi64>) -> tensor<4xf16> {
  %y = onnx.Cast %x {to = f32} : (tensor<4xi64>) -> tensor<4xf16>
  func.return %y : tensor<4xf16>
}

// -----
// CHECK: onnx.Gather: result shape (2, 16) should be (2, 16, 64)
func.func @main(%t: tensor<256x64xf32>, %ids: tensor<2x16xi64>) -> tensor<2x16xf32> {
  %y = onnx.Gather %t, %ids : (tensor<256x64xf32>, tensor<2x16xi64>) -> tensor<2x16xf32>
  func.return %y : tensor<2x16xf32>
}

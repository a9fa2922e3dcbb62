// RUN: ctac-opt %s -p onnx-canonicalize,detect-attention | filecheck %s

// Softmax subgraphs that are not (expressible) attention: nothing is rewritten, the Softmax stays.

// Softmax over the query axis (2), not the key axis.
// CHECK-LABEL: func.func @softmax_not_last_axis(
// CHECK-NOT:     cta.attention
// CHECK:         onnx.Softmax %{{[^ ]+}} {axis = 2 : i64}
// CHECK-NOT:     cta.attention
// CHECK:         func.return
func.func @softmax_not_last_axis(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scores = onnx.Mul %qk, %s : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = 2 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

// K used as it is (no transpose): Q.K, shapes fit because K is square.
// CHECK-LABEL: func.func @k_not_transposed(
// CHECK-NOT:     cta.attention
// CHECK:         onnx.Softmax
// CHECK-NOT:     cta.attention
// CHECK:         func.return
func.func @k_not_transposed(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %qk = onnx.MatMul %q, %k : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scores = onnx.Mul %qk, %s : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

// K transposed the wrong way: Transpose[0,2,1,3] swaps heads and sequence, not S and D.
// CHECK-LABEL: func.func @k_wrong_transpose(
// CHECK-NOT:     cta.attention
// CHECK:         onnx.Softmax
// CHECK-NOT:     cta.attention
// CHECK:         func.return
func.func @k_wrong_transpose(%q: tensor<1x4x4x4xf32>, %k: tensor<1x4x4x4xf32>, %v: tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x4x4x4xf32>, tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32>
  %p = onnx.Softmax %qk {axis = -1 : i64} : (tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x4x4x4xf32>, tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32>
  func.return %o : tensor<1x4x4x4xf32>
}

// A bias added after the Softmax, to the probabilities.
// CHECK-LABEL: func.func @bias_after_softmax(
// CHECK-NOT:     cta.attention
// CHECK:         onnx.Softmax
// CHECK-NOT:     cta.attention
// CHECK:         func.return
func.func @bias_after_softmax(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>, %bias: tensor<1x1x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %qk {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %pb = onnx.Add %p, %bias : (tensor<1x2x4x4xf32>, tensor<1x1x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %pb, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

// A Where whose fill is not very negative (0): it zeroes scores rather than masking keys.
// CHECK-LABEL: func.func @where_fill_not_negative(
// CHECK-NOT:     cta.attention
// CHECK:         onnx.Softmax
// CHECK-NOT:     cta.attention
// CHECK:         func.return
func.func @where_fill_not_negative(%q: tensor<2x2x4x4xf32>, %k: tensor<2x2x4x4xf32>, %v: tensor<2x2x4x4xf32>, %m: tensor<2x4xi64>) -> tensor<2x2x4x4xf32> {
  %ax = onnx.Constant dense<[1, 2]> : tensor<2xi64>
  %m4 = onnx.Unsqueeze %m, %ax : (tensor<2x4xi64>, tensor<2xi64>) -> tensor<2x1x1x4xi64>
  %keep = onnx.Cast %m4 {to = i1} : (tensor<2x1x1x4xi64>) -> tensor<2x1x1x4xi1>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %zero = onnx.Constant dense<0.000000e+00> : tensor<f32>
  %scores = onnx.Where %keep, %qk, %zero : (tensor<2x1x1x4xi1>, tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %o : tensor<2x2x4x4xf32>
}

// The probabilities are also returned: they have a second consumer, so they cannot be fused away.
// CHECK-LABEL: func.func @probabilities_returned(
// CHECK-NOT:     cta.attention
// CHECK:         %p = onnx.Softmax
// CHECK-NOT:     cta.attention
// CHECK:         func.return %o, %p
func.func @probabilities_returned(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %qk {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o, %p : tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>
}

// Scores multiplied by a non-scalar tensor: not a scale.
// CHECK-LABEL: func.func @non_scalar_scale(
// CHECK-NOT:     cta.attention
// CHECK:         onnx.Softmax
// CHECK-NOT:     cta.attention
// CHECK:         func.return
func.func @non_scalar_scale(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %s = onnx.Constant dense<[5.000000e-01, 1.000000e+00, 2.000000e+00, 4.000000e+00]> : tensor<4xf32>
  %scores = onnx.Mul %qk, %s : (tensor<1x2x4x4xf32>, tensor<4xf32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

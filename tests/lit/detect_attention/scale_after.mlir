// RUN: ctac-opt %s -p onnx-canonicalize,detect-attention | filecheck %s

// Scale applied to the scores after Q.K^T: Div by sqrt(d), or Mul by 1/sqrt(d) with the constant
// on either side. q, k, v are (B, H, S, D) = (1, 2, 4, 4): scale = 1/sqrt(4) = 0.5.
// The attribute lists are matched whole: an attribute left out of a CHECK line is absent.

// CHECK-LABEL: func.func @div_sqrt_d(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %{{[^ ]+}} = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     cta.attention
// CHECK:         func.return
func.func @div_sqrt_d(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %sqrt_d = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %scores = onnx.Div %qk, %sqrt_d : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

// CHECK-LABEL: func.func @mul_scores_const(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %{{[^ ]+}} = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     cta.attention
// CHECK:         func.return
func.func @mul_scores_const(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %inv_sqrt_d = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scores = onnx.Mul %qk, %inv_sqrt_d : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

// The constant first, and a head dim of 8 (scale = 1/sqrt(8) = 0.35355...).
// CHECK-LABEL: func.func @mul_const_scores(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %{{[^ ]+}} = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 8 : i64, scale = {{(0\.353553|3\.53553)[0-9]*(e-01)?}} : f64, ctac.source
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     cta.attention
// CHECK:         func.return
func.func @mul_const_scores(%q: tensor<2x2x5x8xf32>, %k: tensor<2x2x5x8xf32>, %v: tensor<2x2x5x8xf32>) -> tensor<2x2x5x8xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x5x8xf32>) -> tensor<2x2x8x5xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x5x8xf32>, tensor<2x2x8x5xf32>) -> tensor<2x2x5x5xf32>
  %inv_sqrt_d = onnx.Constant dense<0.353553385> : tensor<f32>
  %scores = onnx.Mul %inv_sqrt_d, %qk : (tensor<f32>, tensor<2x2x5x5xf32>) -> tensor<2x2x5x5xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x5x5xf32>) -> tensor<2x2x5x5xf32>
  %o = onnx.MatMul %p, %v : (tensor<2x2x5x5xf32>, tensor<2x2x5x8xf32>) -> tensor<2x2x5x8xf32>
  func.return %o : tensor<2x2x5x8xf32>
}

// Div by a (1,)-shaped constant, as TorchScript exports it.
// CHECK-LABEL: func.func @div_rank1_const(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %{{[^ ]+}} = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     cta.attention
// CHECK:         func.return
func.func @div_rank1_const(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %sqrt_d = onnx.Constant dense<[2.000000e+00]> : tensor<1xf32>
  %scores = onnx.Div %qk, %sqrt_d : (tensor<1x2x4x4xf32>, tensor<1xf32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

// RUN: ctac-opt %s -p onnx-canonicalize,detect-attention | filecheck %s

// The forms of K^T. Sequence 6 and head dim 4 differ, so a wrong axis cannot match by accident.
// The attribute lists are matched whole: an attribute left out of a CHECK line is absent.

// One Transpose[0,2,3,1] of K in (B, S, H, D): the key operand becomes K in (B, H, S, D).
// CHECK-LABEL: func.func @transpose_0231(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %[[K:[^ ]+]] = onnx.Transpose %k {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x6x2x4xf32>) -> tensor<1x2x6x4xf32>
// CHECK-NEXT:    %o = cta.attention %q, %[[K]], %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source
// CHECK-NEXT:    func.return %o
func.func @transpose_0231(%q: tensor<1x2x6x4xf32>, %k: tensor<1x6x2x4xf32>, %v: tensor<1x2x6x4xf32>) -> tensor<1x2x6x4xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 2, 3, 1>} : (tensor<1x6x2x4xf32>) -> tensor<1x2x4x6xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x6x4xf32>, tensor<1x2x4x6xf32>) -> tensor<1x2x6x6xf32>
  %s = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %scores = onnx.Div %qk, %s : (tensor<1x2x6x6xf32>, tensor<f32>) -> tensor<1x2x6x6xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x6x6xf32>) -> tensor<1x2x6x6xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x6x6xf32>, tensor<1x2x6x4xf32>) -> tensor<1x2x6x4xf32>
  func.return %o : tensor<1x2x6x4xf32>
}

// Transpose[0,1,3,2] of K in (B, H, S, D): the key operand is K itself.
// CHECK-LABEL: func.func @transpose_0132(
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     onnx.Transpose
// CHECK:         %o = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source
// CHECK-NEXT:    func.return %o
func.func @transpose_0132(%q: tensor<1x2x6x4xf32>, %k: tensor<1x2x6x4xf32>, %v: tensor<1x2x6x4xf32>) -> tensor<1x2x6x4xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x6x4xf32>) -> tensor<1x2x4x6xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x6x4xf32>, tensor<1x2x4x6xf32>) -> tensor<1x2x6x6xf32>
  %s = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %scores = onnx.Div %qk, %s : (tensor<1x2x6x6xf32>, tensor<f32>) -> tensor<1x2x6x6xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x6x6xf32>) -> tensor<1x2x6x6xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x6x6xf32>, tensor<1x2x6x4xf32>) -> tensor<1x2x6x4xf32>
  func.return %o : tensor<1x2x6x4xf32>
}

// Two Transposes: (B, S, H, D) -> [0,2,1,3] -> (B, H, S, D) -> [0,1,3,2] -> K^T.
// CHECK-LABEL: func.func @two_transposes(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %[[K:[^ ]+]] = onnx.Transpose %k {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x6x2x4xf32>) -> tensor<1x2x6x4xf32>
// CHECK-NEXT:    %o = cta.attention %q, %[[K]], %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source
// CHECK-NEXT:    func.return %o
func.func @two_transposes(%q: tensor<1x2x6x4xf32>, %k: tensor<1x6x2x4xf32>, %v: tensor<1x2x6x4xf32>) -> tensor<1x2x6x4xf32> {
  %kh = onnx.Transpose %k {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x6x2x4xf32>) -> tensor<1x2x6x4xf32>
  %kt = onnx.Transpose %kh {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x6x4xf32>) -> tensor<1x2x4x6xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x6x4xf32>, tensor<1x2x4x6xf32>) -> tensor<1x2x6x6xf32>
  %s = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %scores = onnx.Div %qk, %s : (tensor<1x2x6x6xf32>, tensor<f32>) -> tensor<1x2x6x6xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x6x6xf32>) -> tensor<1x2x6x6xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x6x6xf32>, tensor<1x2x6x4xf32>) -> tensor<1x2x6x4xf32>
  func.return %o : tensor<1x2x6x4xf32>
}

// Reshape (B*H, S, D) -> Transpose[0,2,1] -> Reshape (B, H, D, S), batch 2.
// CHECK-LABEL: func.func @reshape_transpose_reshape(
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     onnx.Transpose
// CHECK-NOT:     onnx.Reshape
// CHECK:         %o = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source
// CHECK-NEXT:    func.return %o
func.func @reshape_transpose_reshape(%q: tensor<2x2x6x4xf32>, %k: tensor<2x2x6x4xf32>, %v: tensor<2x2x6x4xf32>) -> tensor<2x2x6x4xf32> {
  %flat_shape = onnx.Constant dense<[4, 6, 4]> : tensor<3xi64>
  %flat = onnx.Reshape %k, %flat_shape : (tensor<2x2x6x4xf32>, tensor<3xi64>) -> tensor<4x6x4xf32>
  %flat_t = onnx.Transpose %flat {perm = array<i64: 0, 2, 1>} : (tensor<4x6x4xf32>) -> tensor<4x4x6xf32>
  %kt_shape = onnx.Constant dense<[2, 2, 4, 6]> : tensor<4xi64>
  %kt = onnx.Reshape %flat_t, %kt_shape : (tensor<4x4x6xf32>, tensor<4xi64>) -> tensor<2x2x4x6xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x6x4xf32>, tensor<2x2x4x6xf32>) -> tensor<2x2x6x6xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scores = onnx.Mul %qk, %s : (tensor<2x2x6x6xf32>, tensor<f32>) -> tensor<2x2x6x6xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x6x6xf32>) -> tensor<2x2x6x6xf32>
  %o = onnx.MatMul %p, %v : (tensor<2x2x6x6xf32>, tensor<2x2x6x4xf32>) -> tensor<2x2x6x4xf32>
  func.return %o : tensor<2x2x6x4xf32>
}

// RUN: ctac-opt %s -p onnx-canonicalize,detect-attention | filecheck %s

// GQA/MQA: K and V heads repeated by Unsqueeze(axis 2) -> Expand -> Reshape, as transformers'
// repeat_kv exports. The attention reads the unrepeated K and V, with kv_heads < num_heads.
// The attribute lists are matched whole: an attribute left out of a CHECK line is absent.

// 4 query heads, 2 key/value heads (each repeated twice); causal.
// CHECK-LABEL: func.func @gqa(
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     onnx.Expand
// CHECK:         %o = cta.attention %q, %k, %v {num_heads = 4 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, causal = 1 : i64, ctac.source
// CHECK-SAME:    (tensor<1x4x4x4xf32>, tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x4x4x4xf32>
// CHECK-NEXT:    func.return %o
func.func @gqa(%q: tensor<1x4x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x4x4x4xf32> {
  %ax = onnx.Constant dense<[2]> : tensor<1xi64>
  %expanded_shape = onnx.Constant dense<[1, 2, 2, 4, 4]> : tensor<5xi64>
  %heads_shape = onnx.Constant dense<[1, 4, 4, 4]> : tensor<4xi64>
  %k5 = onnx.Unsqueeze %k, %ax : (tensor<1x2x4x4xf32>, tensor<1xi64>) -> tensor<1x2x1x4x4xf32>
  %ke = onnx.Expand %k5, %expanded_shape : (tensor<1x2x1x4x4xf32>, tensor<5xi64>) -> tensor<1x2x2x4x4xf32>
  %kr = onnx.Reshape %ke, %heads_shape : (tensor<1x2x2x4x4xf32>, tensor<4xi64>) -> tensor<1x4x4x4xf32>
  %v5 = onnx.Unsqueeze %v, %ax : (tensor<1x2x4x4xf32>, tensor<1xi64>) -> tensor<1x2x1x4x4xf32>
  %ve = onnx.Expand %v5, %expanded_shape : (tensor<1x2x1x4x4xf32>, tensor<5xi64>) -> tensor<1x2x2x4x4xf32>
  %vr = onnx.Reshape %ve, %heads_shape : (tensor<1x2x2x4x4xf32>, tensor<4xi64>) -> tensor<1x4x4x4xf32>
  %kt = onnx.Transpose %kr {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x4x4x4xf32>, tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scaled = onnx.Mul %qk, %s : (tensor<1x4x4x4xf32>, tensor<f32>) -> tensor<1x4x4x4xf32>
  %keep = onnx.Constant dense<[[true, false, false, false], [true, true, false, false], [true, true, true, false], [true, true, true, true]]> : tensor<4x4xi1>
  %min = onnx.Constant dense<-3.40282347E+38> : tensor<f32>
  %scores = onnx.Where %keep, %scaled, %min : (tensor<4x4xi1>, tensor<1x4x4x4xf32>, tensor<f32>) -> tensor<1x4x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32>
  %o = onnx.MatMul %p, %vr : (tensor<1x4x4x4xf32>, tensor<1x4x4x4xf32>) -> tensor<1x4x4x4xf32>
  func.return %o : tensor<1x4x4x4xf32>
}

// MQA: one key/value head shared by 4 query heads (axis written as -3); batch 2, seq 6, d 8.
// CHECK-LABEL: func.func @mqa(
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     onnx.Expand
// CHECK:         %o = cta.attention %q, %k, %v {num_heads = 4 : i64, kv_heads = 1 : i64, head_dim = 8 : i64, scale = {{(0\.353553|3\.53553)[0-9]*(e-01)?}} : f64, ctac.source
// CHECK-SAME:    (tensor<2x4x6x8xf32>, tensor<2x1x6x8xf32>, tensor<2x1x6x8xf32>) -> tensor<2x4x6x8xf32>
// CHECK-NEXT:    func.return %o
func.func @mqa(%q: tensor<2x4x6x8xf32>, %k: tensor<2x1x6x8xf32>, %v: tensor<2x1x6x8xf32>) -> tensor<2x4x6x8xf32> {
  %ax = onnx.Constant dense<[-3]> : tensor<1xi64>
  %expanded_shape = onnx.Constant dense<[2, 1, 4, 6, 8]> : tensor<5xi64>
  %heads_shape = onnx.Constant dense<[2, 4, 6, 8]> : tensor<4xi64>
  %k5 = onnx.Unsqueeze %k, %ax : (tensor<2x1x6x8xf32>, tensor<1xi64>) -> tensor<2x1x1x6x8xf32>
  %ke = onnx.Expand %k5, %expanded_shape : (tensor<2x1x1x6x8xf32>, tensor<5xi64>) -> tensor<2x1x4x6x8xf32>
  %kr = onnx.Reshape %ke, %heads_shape : (tensor<2x1x4x6x8xf32>, tensor<4xi64>) -> tensor<2x4x6x8xf32>
  %v5 = onnx.Unsqueeze %v, %ax : (tensor<2x1x6x8xf32>, tensor<1xi64>) -> tensor<2x1x1x6x8xf32>
  %ve = onnx.Expand %v5, %expanded_shape : (tensor<2x1x1x6x8xf32>, tensor<5xi64>) -> tensor<2x1x4x6x8xf32>
  %vr = onnx.Reshape %ve, %heads_shape : (tensor<2x1x4x6x8xf32>, tensor<4xi64>) -> tensor<2x4x6x8xf32>
  %kt = onnx.Transpose %kr {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x4x6x8xf32>) -> tensor<2x4x8x6xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x4x6x8xf32>, tensor<2x4x8x6xf32>) -> tensor<2x4x6x6xf32>
  %s = onnx.Constant dense<0.353553385> : tensor<f32>
  %scores = onnx.Mul %qk, %s : (tensor<2x4x6x6xf32>, tensor<f32>) -> tensor<2x4x6x6xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x4x6x6xf32>) -> tensor<2x4x6x6xf32>
  %o = onnx.MatMul %p, %vr : (tensor<2x4x6x6xf32>, tensor<2x4x6x8xf32>) -> tensor<2x4x6x8xf32>
  func.return %o : tensor<2x4x6x8xf32>
}

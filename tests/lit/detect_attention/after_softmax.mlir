// RUN: ctac-opt %s -p onnx-canonicalize,detect-attention | filecheck %s

// Ops between the Softmax and the P.V MatMul: the NaN guard, float Casts (softmax computed in f32
// for f16 attention), inference Dropout and Identity (removed by canonicalize first), and the
// fully-masked-row guard. The attribute lists are matched whole: an attribute left out of a
// CHECK line is absent. q, k, v are (B, H, S, D) = (1, 2, 4, 4).

// NaN guard: Where(IsNaN(p), 0, p).
// CHECK-LABEL: func.func @nan_guard(
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     onnx.IsNaN
// CHECK:         %o = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source
// CHECK-NEXT:    func.return %o
func.func @nan_guard(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scores = onnx.Mul %qk, %s : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %nan = onnx.IsNaN %p : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xi1>
  %zero = onnx.Constant dense<0.000000e+00> : tensor<f32>
  %guarded = onnx.Where %nan, %zero, %p : (tensor<1x2x4x4xi1>, tensor<f32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %guarded, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

// f16 attention with the softmax in f32: Cast(scores, f32) -> Softmax -> Cast(p, f16).
// CHECK-LABEL: func.func @cast_around_softmax(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source
// CHECK-SAME:    (tensor<1x2x4x4xf16>, tensor<1x2x4x4xf16>, tensor<1x2x4x4xf16>) -> tensor<1x2x4x4xf16>
// CHECK-NEXT:    func.return %o
func.func @cast_around_softmax(%q: tensor<1x2x4x4xf16>, %k: tensor<1x2x4x4xf16>, %v: tensor<1x2x4x4xf16>) -> tensor<1x2x4x4xf16> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf16>) -> tensor<1x2x4x4xf16>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf16>, tensor<1x2x4x4xf16>) -> tensor<1x2x4x4xf16>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f16>
  %scores = onnx.Mul %qk, %s : (tensor<1x2x4x4xf16>, tensor<f16>) -> tensor<1x2x4x4xf16>
  %scores32 = onnx.Cast %scores {to = f32} : (tensor<1x2x4x4xf16>) -> tensor<1x2x4x4xf32>
  %p32 = onnx.Softmax %scores32 {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Cast %p32 {to = f16} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf16>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf16>, tensor<1x2x4x4xf16>) -> tensor<1x2x4x4xf16>
  func.return %o : tensor<1x2x4x4xf16>
}

// Inference Dropout and Identity between the probabilities and the P.V MatMul.
// CHECK-LABEL: func.func @dropout_identity(
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     onnx.Dropout
// CHECK:         %o = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source
// CHECK-NEXT:    func.return %o
func.func @dropout_identity(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %s = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %scores = onnx.Div %qk, %s : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %ratio = onnx.Constant dense<1.000000e-01> : tensor<f32>
  %dropped = onnx.Dropout %p, ratio %ratio : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %same = onnx.Identity %dropped : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %same, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

// Fully-masked-row guard: Where(Equal(ReduceMax(bias, [-1]), -inf), 0, p) with an additive bias.
// CHECK-LABEL: func.func @masked_row_guard(
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     onnx.ReduceMax
// CHECK:         %o = cta.attention %q, %k, %v, mask %bias {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "additive", ctac.source
// CHECK-NEXT:    func.return %o
func.func @masked_row_guard(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>, %bias: tensor<1x1x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scaled = onnx.Mul %qk, %s : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %scores = onnx.Add %scaled, %bias : (tensor<1x2x4x4xf32>, tensor<1x1x4x4xf32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %axes = onnx.Constant dense<[-1]> : tensor<1xi64>
  %rowmax = onnx.ReduceMax %bias, axes %axes {keepdims = 1 : i64} : (tensor<1x1x4x4xf32>, tensor<1xi64>) -> tensor<1x1x4x1xf32>
  %ninf = onnx.Constant dense<"0x000080FF"> : tensor<f32>
  %empty = onnx.Equal %rowmax, %ninf : (tensor<1x1x4x1xf32>, tensor<f32>) -> tensor<1x1x4x1xi1>
  %zero = onnx.Constant dense<0.000000e+00> : tensor<f32>
  %guarded = onnx.Where %empty, %zero, %p : (tensor<1x1x4x1xi1>, tensor<f32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %guarded, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

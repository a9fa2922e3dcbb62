// RUN: ctac-opt %s -p onnx-canonicalize,detect-attention | filecheck %s

// An additive position bias (a float constant per head, as T5 / ALiBi / relative-position models
// add to the scores) is not a padding or causal pattern: the mask is additive, and its operand
// sums every term added to the scores. The attribute lists are matched whole: an attribute left
// out of a CHECK line is absent. q, k, v are (B, H, S, D) = (2, 2, 4, 4).

// Position bias plus an int64 padding mask: one onnx.Add of the two terms is the mask operand.
// CHECK-LABEL: func.func @position_bias_and_padding(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %[[PAD:[^ ]+]] = onnx.Mul
// CHECK:         %[[MASK:[^ ]+]] = onnx.Add %pos, %[[PAD]] : (tensor<1x2x4x4xf32>, tensor<2x1x1x4xf32>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    %o = cta.attention %q, %k, %v, mask %[[MASK]] {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 1.000000e+00 : f64, mask_kind = "additive", ctac.source
// CHECK-NEXT:    func.return %o
func.func @position_bias_and_padding(%q: tensor<2x2x4x4xf32>, %k: tensor<2x2x4x4xf32>, %v: tensor<2x2x4x4xf32>, %m: tensor<2x4xi64>) -> tensor<2x2x4x4xf32> {
  %pos = onnx.Constant dense<[[[[0.0, -0.5, -1.0, -1.5], [0.25, 0.0, -0.5, -1.0], [0.5, 0.25, 0.0, -0.5], [0.75, 0.5, 0.25, 0.0]], [[0.0, -0.25, -0.5, -0.75], [-0.25, 0.0, -0.25, -0.5], [-0.5, -0.25, 0.0, -0.25], [-0.75, -0.5, -0.25, 0.0]]]]> : tensor<1x2x4x4xf32>
  %ax = onnx.Constant dense<[1, 2]> : tensor<2xi64>
  %m4 = onnx.Unsqueeze %m, %ax : (tensor<2x4xi64>, tensor<2xi64>) -> tensor<2x1x1x4xi64>
  %mf = onnx.Cast %m4 {to = f32} : (tensor<2x1x1x4xi64>) -> tensor<2x1x1x4xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inv = onnx.Sub %one, %mf : (tensor<f32>, tensor<2x1x1x4xf32>) -> tensor<2x1x1x4xf32>
  %big = onnx.Constant dense<-1.000000e+04> : tensor<f32>
  %padding = onnx.Mul %inv, %big : (tensor<2x1x1x4xf32>, tensor<f32>) -> tensor<2x1x1x4xf32>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %biased = onnx.Add %qk, %pos : (tensor<2x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %scores = onnx.Add %biased, %padding : (tensor<2x2x4x4xf32>, tensor<2x1x1x4xf32>) -> tensor<2x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %o : tensor<2x2x4x4xf32>
}

// The position bias alone (scaled scores, bias added first): the constant is the mask operand.
// CHECK-LABEL: func.func @position_bias_only(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v, mask %pos {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "additive", ctac.source
// CHECK-SAME:    (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>, tensor<2x4x4xf32>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    func.return %o
func.func @position_bias_only(%q: tensor<2x2x4x4xf32>, %k: tensor<2x2x4x4xf32>, %v: tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32> {
  %pos = onnx.Constant dense<[[[0.0, -0.5, -1.0, -1.5], [0.25, 0.0, -0.5, -1.0], [0.5, 0.25, 0.0, -0.5], [0.75, 0.5, 0.25, 0.0]], [[0.0, -0.25, -0.5, -0.75], [-0.25, 0.0, -0.25, -0.5], [-0.5, -0.25, 0.0, -0.25], [-0.75, -0.5, -0.25, 0.0]]]> : tensor<2x4x4xf32>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scaled = onnx.Mul %qk, %s : (tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %scores = onnx.Add %pos, %scaled : (tensor<2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %o : tensor<2x2x4x4xf32>
}

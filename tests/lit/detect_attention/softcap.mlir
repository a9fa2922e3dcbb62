// RUN: ctac-opt %s -p onnx-canonicalize,detect-attention | filecheck %s

// Softcapping (Gemma 2): the scaled scores become c * tanh(s / c) before the mask is applied.
// The attribute lists are matched whole: an attribute left out of a CHECK line is absent.
// q, k, v are (B, H, S, D) = (2, 2, 4, 4).

// Gemma 2: Q scaled first, then c * tanh(s / c) with c = 50, then an int64 padding mask.
// CHECK-LABEL: func.func @softcap_div(
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     onnx.Tanh
// CHECK:         %o = cta.attention %q, %k, %v, mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, softcap = 5.000000e+01 : f64, mask_kind = "key_padding", ctac.source
// CHECK-NEXT:    func.return %o
func.func @softcap_div(%q: tensor<2x2x4x4xf32>, %k: tensor<2x2x4x4xf32>, %v: tensor<2x2x4x4xf32>, %m: tensor<2x4xi64>) -> tensor<2x2x4x4xf32> {
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %qs = onnx.Mul %q, %s : (tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %qk = onnx.MatMul %qs, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %cap = onnx.Constant dense<5.000000e+01> : tensor<f32>
  %div = onnx.Div %qk, %cap : (tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %tanh = onnx.Tanh %div : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %capped = onnx.Mul %cap, %tanh : (tensor<f32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %ax = onnx.Constant dense<[1, 2]> : tensor<2xi64>
  %m4 = onnx.Unsqueeze %m, %ax : (tensor<2x4xi64>, tensor<2xi64>) -> tensor<2x1x1x4xi64>
  %mf = onnx.Cast %m4 {to = f32} : (tensor<2x1x1x4xi64>) -> tensor<2x1x1x4xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inv = onnx.Sub %one, %mf : (tensor<f32>, tensor<2x1x1x4xf32>) -> tensor<2x1x1x4xf32>
  %big = onnx.Constant dense<-1.000000e+04> : tensor<f32>
  %padding = onnx.Mul %inv, %big : (tensor<2x1x1x4xf32>, tensor<f32>) -> tensor<2x1x1x4xf32>
  %scores = onnx.Add %capped, %padding : (tensor<2x2x4x4xf32>, tensor<2x1x1x4xf32>) -> tensor<2x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %o : tensor<2x2x4x4xf32>
}

// tanh(s * (1/c)) * c with c = 50, scale 1/sqrt(d) on Q, then a causal mask.
// Not covered: a scale applied after Q.K^T inside the tanh, Tanh(Div(Mul(qk, s), c)), which
// detect-attention does not match yet.
// CHECK-LABEL: func.func @softcap_mul_causal(
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     onnx.Tanh
// CHECK:         %o = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, softcap = 5.000000e+01 : f64, causal = 1 : i64, ctac.source
// CHECK-NEXT:    func.return %o
func.func @softcap_mul_causal(%q: tensor<2x2x4x4xf32>, %k: tensor<2x2x4x4xf32>, %v: tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32> {
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %qs = onnx.Mul %q, %s : (tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %qk = onnx.MatMul %qs, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %inv_cap = onnx.Constant dense<2.000000e-02> : tensor<f32>
  %cap = onnx.Constant dense<5.000000e+01> : tensor<f32>
  %div = onnx.Mul %qk, %inv_cap : (tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %tanh = onnx.Tanh %div : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %capped = onnx.Mul %tanh, %cap : (tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %keep = onnx.Constant dense<[[true, false, false, false], [true, true, false, false], [true, true, true, false], [true, true, true, true]]> : tensor<4x4xi1>
  %min = onnx.Constant dense<-3.40282347E+38> : tensor<f32>
  %scores = onnx.Where %keep, %capped, %min : (tensor<4x4xi1>, tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %o : tensor<2x2x4x4xf32>
}

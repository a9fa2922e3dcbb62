// RUN: ctac-opt %s -p onnx-canonicalize,detect-attention | filecheck %s
// RUN: ctac-opt %s -p 'onnx-canonicalize,detect-attention{verify=false}' | filecheck %s

// Regressions found by review. Each is fused, and fused right even without the numeric proof.

// A scale applied after the bias was added scales the bias too: the mask operand is bias * 0.5.
// CHECK-LABEL: func.func @scale_after_bias(
// CHECK:       %[[HALF:.*]] = onnx.Constant dense<5.000000e-01> : tensor<f32>
// CHECK:       %[[SCALED:.*]] = onnx.Mul %bias, %[[HALF]]
// CHECK:       cta.attention %q, %k, %v, mask %[[SCALED]] {{{.*}}scale = 5.000000e-01 : f64, mask_kind = "additive"
// CHECK-NOT:   onnx.Softmax
func.func @scale_after_bias(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>, %bias: tensor<1x1x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %b = onnx.Add %qk, %bias : (tensor<1x2x4x4xf32>, tensor<1x1x4x4xf32>) -> tensor<1x2x4x4xf32>
  %s = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %scores = onnx.Div %b, %s : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

// The scale sits inside the softcap's tanh: softcap = 50, scale = 0.5.
// CHECK-LABEL: func.func @softcap_scale_after_qk(
// CHECK:       cta.attention %q, %k, %v {{{.*}}scale = 5.000000e-01 : f64, softcap = 5.000000e+01 : f64
// CHECK-NOT:   onnx.Softmax
func.func @softcap_scale_after_qk(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scaled = onnx.Mul %qk, %s : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %cap = onnx.Constant dense<5.000000e+01> : tensor<f32>
  %div = onnx.Div %scaled, %cap : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %tanh = onnx.Tanh %div : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %capped = onnx.Mul %tanh, %cap : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %capped {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

// GQA over projections: K keeps its cta.project even though its heads are repeated.
// CHECK-LABEL: func.func @gqa_proj(
// CHECK-COUNT-3: cta.project %x
// CHECK:       cta.attention %{{.*}}, %{{.*}}, %{{.*}} {num_heads = 2 : i64, kv_heads = 1 : i64
// CHECK-NOT:   onnx.Softmax
func.func @gqa_proj(%x: tensor<1x4x8xf32>) -> tensor<1x2x4x4xf32> {
  %wq = onnx.Constant dense<[[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], [0.2, -0.1, 0.3, 0.5, -0.4, 0.6, 0.1, 0.8], [0.3, 0.2, -0.3, 0.4, 0.5, -0.6, 0.7, 0.8], [0.4, 0.2, 0.3, -0.4, 0.5, 0.6, -0.7, 0.8], [0.5, 0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8], [0.6, -0.2, 0.3, 0.4, 0.5, -0.6, 0.7, 0.8], [0.7, 0.2, -0.3, 0.4, 0.5, 0.6, -0.7, 0.8], [0.8, 0.2, 0.3, -0.4, 0.5, 0.6, 0.7, -0.8]]> : tensor<8x8xf32>
  %wk = onnx.Constant dense<[[0.1, 0.2, 0.3, 0.4], [0.2, -0.1, 0.3, 0.5], [0.3, 0.2, -0.3, 0.4], [0.4, 0.2, 0.3, -0.4], [0.5, 0.2, 0.3, 0.4], [0.6, -0.2, 0.3, 0.4], [0.7, 0.2, -0.3, 0.4], [0.8, 0.2, 0.3, -0.4]]> : tensor<8x4xf32>
  %wv = onnx.Constant dense<[[-0.1, 0.2, 0.3, 0.4], [0.2, 0.1, 0.3, 0.5], [0.3, 0.2, 0.3, 0.4], [0.4, 0.2, 0.3, 0.4], [0.5, -0.2, 0.3, 0.4], [0.6, 0.2, 0.3, 0.4], [0.7, 0.2, 0.3, 0.4], [0.8, 0.2, 0.3, 0.4]]> : tensor<8x4xf32>
  %qs = onnx.Constant dense<[1, 4, 2, 4]> : tensor<4xi64>
  %kvs = onnx.Constant dense<[1, 4, 1, 4]> : tensor<4xi64>
  %xq = onnx.MatMul %x, %wq : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %q4 = onnx.Reshape %xq, %qs : (tensor<1x4x8xf32>, tensor<4xi64>) -> tensor<1x4x2x4xf32>
  %q = onnx.Transpose %q4 {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x4x2x4xf32>) -> tensor<1x2x4x4xf32>
  %xk = onnx.MatMul %x, %wk : (tensor<1x4x8xf32>, tensor<8x4xf32>) -> tensor<1x4x4xf32>
  %k4 = onnx.Reshape %xk, %kvs : (tensor<1x4x4xf32>, tensor<4xi64>) -> tensor<1x4x1x4xf32>
  %k = onnx.Transpose %k4 {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x4x1x4xf32>) -> tensor<1x1x4x4xf32>
  %xv = onnx.MatMul %x, %wv : (tensor<1x4x8xf32>, tensor<8x4xf32>) -> tensor<1x4x4xf32>
  %v4 = onnx.Reshape %xv, %kvs : (tensor<1x4x4xf32>, tensor<4xi64>) -> tensor<1x4x1x4xf32>
  %v = onnx.Transpose %v4 {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x4x1x4xf32>) -> tensor<1x1x4x4xf32>
  %ax = onnx.Constant dense<[2]> : tensor<1xi64>
  %es = onnx.Constant dense<[1, 1, 2, 4, 4]> : tensor<5xi64>
  %hs = onnx.Constant dense<[1, 2, 4, 4]> : tensor<4xi64>
  %k5 = onnx.Unsqueeze %k, %ax : (tensor<1x1x4x4xf32>, tensor<1xi64>) -> tensor<1x1x1x4x4xf32>
  %ke = onnx.Expand %k5, %es : (tensor<1x1x1x4x4xf32>, tensor<5xi64>) -> tensor<1x1x2x4x4xf32>
  %kr = onnx.Reshape %ke, %hs : (tensor<1x1x2x4x4xf32>, tensor<4xi64>) -> tensor<1x2x4x4xf32>
  %v5 = onnx.Unsqueeze %v, %ax : (tensor<1x1x4x4xf32>, tensor<1xi64>) -> tensor<1x1x1x4x4xf32>
  %ve = onnx.Expand %v5, %es : (tensor<1x1x1x4x4xf32>, tensor<5xi64>) -> tensor<1x1x2x4x4xf32>
  %vr = onnx.Reshape %ve, %hs : (tensor<1x1x2x4x4xf32>, tensor<4xi64>) -> tensor<1x2x4x4xf32>
  %kt = onnx.Transpose %kr {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %qk {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %vr : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

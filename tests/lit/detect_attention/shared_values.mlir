// RUN: ctac-opt %s -p onnx-canonicalize,detect-attention | filecheck %s

// Values of the subgraph used elsewhere. Only the probabilities must have the P.V MatMul as their
// single reader; other intermediates that are read elsewhere stay next to the cta.attention.
// The attribute lists are matched whole: an attribute left out of a CHECK line is absent.

// The raw scores are also returned: they stay, the Softmax and P.V are replaced.
// CHECK-LABEL: func.func @scores_returned(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %qk = onnx.MatMul %q, %{{[^ ]+}} :
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 1.000000e+00 : f64, ctac.source
// CHECK-NEXT:    func.return %o, %qk
func.func @scores_returned(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %qk {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o, %qk : tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>
}

// Two attention layers reading the same K, V and padding mask: two cta.attention, one per Softmax.
// CHECK-LABEL: func.func @two_layers(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o1 = cta.attention %q1, %k, %v, mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "key_padding", ctac.source
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o2 = cta.attention %q2, %k, %v, mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "key_padding", ctac.source
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     cta.attention
// CHECK:         func.return
func.func @two_layers(%q1: tensor<2x2x4x4xf32>, %q2: tensor<2x2x4x4xf32>, %k: tensor<2x2x4x4xf32>, %v: tensor<2x2x4x4xf32>, %m: tensor<2x4xi64>) -> tensor<2x2x4x4xf32> {
  %ax = onnx.Constant dense<[1, 2]> : tensor<2xi64>
  %m4 = onnx.Unsqueeze %m, %ax : (tensor<2x4xi64>, tensor<2xi64>) -> tensor<2x1x1x4xi64>
  %mf = onnx.Cast %m4 {to = f32} : (tensor<2x1x1x4xi64>) -> tensor<2x1x1x4xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inv = onnx.Sub %one, %mf : (tensor<f32>, tensor<2x1x1x4xf32>) -> tensor<2x1x1x4xf32>
  %big = onnx.Constant dense<-1.000000e+04> : tensor<f32>
  %bias = onnx.Mul %inv, %big : (tensor<2x1x1x4xf32>, tensor<f32>) -> tensor<2x1x1x4xf32>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %qk1 = onnx.MatMul %q1, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %scaled1 = onnx.Mul %qk1, %s : (tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %scores1 = onnx.Add %scaled1, %bias : (tensor<2x2x4x4xf32>, tensor<2x1x1x4xf32>) -> tensor<2x2x4x4xf32>
  %p1 = onnx.Softmax %scores1 {axis = -1 : i64} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %o1 = onnx.MatMul %p1, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %qk2 = onnx.MatMul %q2, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %scaled2 = onnx.Mul %qk2, %s : (tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %scores2 = onnx.Add %scaled2, %bias : (tensor<2x2x4x4xf32>, tensor<2x1x1x4xf32>) -> tensor<2x2x4x4xf32>
  %p2 = onnx.Softmax %scores2 {axis = -1 : i64} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %o2 = onnx.MatMul %p2, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %y = onnx.Add %o1, %o2 : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %y : tensor<2x2x4x4xf32>
}

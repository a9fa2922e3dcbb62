// RUN: ctac-opt %s -p onnx-canonicalize,detect-attention | filecheck %s

// Cross-attention: Q projected from the decoder sequence x (B, 4, 8), K and V from the encoder
// output enc (B, 6, 8), which has a different length. The projections keep their own inputs.
// The attribute lists are matched whole: an attribute left out of a CHECK line is absent.

// CHECK-LABEL: func.func @cross_attention(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %[[Q:[^ ]+]] = cta.project %x, %wq, bias %bq {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<2x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    %[[K:[^ ]+]] = cta.project %enc, %wk, bias %bk {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<2x6x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<2x2x6x4xf32>
// CHECK-NEXT:    %[[V:[^ ]+]] = cta.project %enc, %wv, bias %bv {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<2x6x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<2x2x6x4xf32>
// CHECK-NEXT:    %ctx = cta.attention %[[Q]], %[[K]], %[[V]] {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source
// CHECK-SAME:    -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    func.return %ctx
func.func @cross_attention(%x: tensor<2x4x8xf32>, %enc: tensor<2x6x8xf32>) -> tensor<2x2x4x4xf32> {
  %wq = onnx.Constant dense<[[0.25, 0.79, 0.55, -0.55, -0.40, 0.75, -0.99, 0.64], [0.59, -0.06, -0.39, -0.44, -0.49, -0.11, 0.01, 0.11], [0.99, 0.59, 0.24, 0.98, -0.57, -0.68, 0.23, -0.91], [-0.93, 0.03, -0.07, 0.83, 0.26, 0.03, -0.01, -0.50], [-0.98, -0.62, 0.38, -0.60, -0.26, -0.99, 0.66, -0.69], [-0.46, 0.76, 0.02, 0.69, 0.28, 0.48, -0.82, 0.08], [0.02, 0.74, -0.28, 0.20, -0.88, -0.22, -0.35, -0.70], [0.63, -0.24, 0.96, 0.18, 0.21, 0.28, 0.35, -0.70]]> : tensor<8x8xf32>
  %wk = onnx.Constant dense<[[-0.12, -0.52, -0.20, -0.81, 0.94, -0.57, 0.34, -0.40], [0.75, 0.32, -0.74, 0.69, 0.89, 0.81, 0.14, -0.71], [-0.62, 0.86, 0.10, -0.64, 0.77, 0.28, 0.14, -0.25], [-0.18, -0.52, -0.92, 0.75, -0.06, 0.10, -0.36, 0.50], [-0.95, -0.26, -0.94, -0.75, 0.93, 0.32, -0.14, 0.05], [0.75, -0.31, 0.18, 0.37, -0.29, 0.04, 0.53, 0.82], [-0.70, 0.87, -0.99, 0.51, 0.62, -0.73, -0.16, 0.63], [-0.97, 0.26, 0.59, 0.03, 0.45, -0.55, -0.60, -0.27]]> : tensor<8x8xf32>
  %wv = onnx.Constant dense<[[-0.64, -0.31, 0.90, 0.15, -0.32, -0.46, 0.90, -0.11], [0.96, 0.03, 0.04, 0.79, 0.49, 0.16, -0.15, 0.76], [-0.18, 0.85, -0.86, -0.14, 0.04, 0.90, -0.50, 0.61], [0.35, 0.43, 0.26, 0.94, -0.33, -0.20, -0.59, -0.90], [-0.57, 0.83, 0.68, -0.78, 0.21, -0.04, 0.19, 0.32], [-0.39, 0.92, -0.07, 0.26, 0.27, -0.63, -0.88, -0.18], [0.53, 0.63, 0.46, -0.77, 0.83, 0.60, 0.76, 0.05], [0.83, -0.91, -0.94, -0.96, -0.49, -0.50, -0.62, 0.13]]> : tensor<8x8xf32>
  %bq = onnx.Constant dense<[-0.92, 0.18, -0.67, 0.36, -0.96, -0.38, 0.88, 0.08]> : tensor<8xf32>
  %bk = onnx.Constant dense<[0.62, 0.32, 0.22, -0.62, 0.15, -0.92, 0.60, 0.92]> : tensor<8xf32>
  %bv = onnx.Constant dense<[0.71, -0.90, -0.32, -0.36, -0.77, 0.25, 0.59, -0.37]> : tensor<8xf32>
  %q_shape = onnx.Constant dense<[2, 4, 2, 4]> : tensor<4xi64>
  %kv_shape = onnx.Constant dense<[2, 6, 2, 4]> : tensor<4xi64>
  %xq = onnx.MatMul %x, %wq : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %xqb = onnx.Add %xq, %bq : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %q4 = onnx.Reshape %xqb, %q_shape : (tensor<2x4x8xf32>, tensor<4xi64>) -> tensor<2x4x2x4xf32>
  %q = onnx.Transpose %q4 {perm = array<i64: 0, 2, 1, 3>} : (tensor<2x4x2x4xf32>) -> tensor<2x2x4x4xf32>
  %ek = onnx.MatMul %enc, %wk : (tensor<2x6x8xf32>, tensor<8x8xf32>) -> tensor<2x6x8xf32>
  %ekb = onnx.Add %ek, %bk : (tensor<2x6x8xf32>, tensor<8xf32>) -> tensor<2x6x8xf32>
  %k4 = onnx.Reshape %ekb, %kv_shape : (tensor<2x6x8xf32>, tensor<4xi64>) -> tensor<2x6x2x4xf32>
  %kt = onnx.Transpose %k4 {perm = array<i64: 0, 2, 3, 1>} : (tensor<2x6x2x4xf32>) -> tensor<2x2x4x6xf32>
  %ev = onnx.MatMul %enc, %wv : (tensor<2x6x8xf32>, tensor<8x8xf32>) -> tensor<2x6x8xf32>
  %evb = onnx.Add %ev, %bv : (tensor<2x6x8xf32>, tensor<8xf32>) -> tensor<2x6x8xf32>
  %v4 = onnx.Reshape %evb, %kv_shape : (tensor<2x6x8xf32>, tensor<4xi64>) -> tensor<2x6x2x4xf32>
  %v = onnx.Transpose %v4 {perm = array<i64: 0, 2, 1, 3>} : (tensor<2x6x2x4xf32>) -> tensor<2x2x6x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x6xf32>) -> tensor<2x2x4x6xf32>
  %sqrt_d = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %scores = onnx.Div %qk, %sqrt_d : (tensor<2x2x4x6xf32>, tensor<f32>) -> tensor<2x2x4x6xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x4x6xf32>) -> tensor<2x2x4x6xf32>
  %ctx = onnx.MatMul %p, %v : (tensor<2x2x4x6xf32>, tensor<2x2x6x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %ctx : tensor<2x2x4x4xf32>
}

// With the encoder's (B, 6) padding mask: a key_padding mask over the 6 keys.
// CHECK-LABEL: func.func @cross_attention_padding(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v, mask %enc_mask {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "key_padding", ctac.source
// CHECK-SAME:    (tensor<2x2x4x4xf32>, tensor<2x2x6x4xf32>, tensor<2x2x6x4xf32>, tensor<2x6xi64>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    func.return %o
func.func @cross_attention_padding(%q: tensor<2x2x4x4xf32>, %k: tensor<2x2x6x4xf32>, %v: tensor<2x2x6x4xf32>, %enc_mask: tensor<2x6xi64>) -> tensor<2x2x4x4xf32> {
  %ax = onnx.Constant dense<[1, 2]> : tensor<2xi64>
  %m4 = onnx.Unsqueeze %enc_mask, %ax : (tensor<2x6xi64>, tensor<2xi64>) -> tensor<2x1x1x6xi64>
  %mf = onnx.Cast %m4 {to = f32} : (tensor<2x1x1x6xi64>) -> tensor<2x1x1x6xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inv = onnx.Sub %one, %mf : (tensor<f32>, tensor<2x1x1x6xf32>) -> tensor<2x1x1x6xf32>
  %big = onnx.Constant dense<-1.000000e+04> : tensor<f32>
  %bias = onnx.Mul %inv, %big : (tensor<2x1x1x6xf32>, tensor<f32>) -> tensor<2x1x1x6xf32>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x6x4xf32>) -> tensor<2x2x4x6xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x6xf32>) -> tensor<2x2x4x6xf32>
  %sqrt_d = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %scaled = onnx.Div %qk, %sqrt_d : (tensor<2x2x4x6xf32>, tensor<f32>) -> tensor<2x2x4x6xf32>
  %scores = onnx.Add %scaled, %bias : (tensor<2x2x4x6xf32>, tensor<2x1x1x6xf32>) -> tensor<2x2x4x6xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x4x6xf32>) -> tensor<2x2x4x6xf32>
  %o = onnx.MatMul %p, %v : (tensor<2x2x4x6xf32>, tensor<2x2x6x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %o : tensor<2x2x4x4xf32>
}

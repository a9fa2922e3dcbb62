// RUN: ctac-opt %s -p onnx-canonicalize,detect-attention | filecheck %s

// Q, K and V as linear projections of one (B, S, E) = (2, 4, 8) input, reshaped to (B, S, H, D) =
// (2, 4, 2, 4) and transposed into heads, become three cta.project ops that keep the input and
// the weights as operands; `columns` selects each one's slice of the weight's columns.
// The attribute lists are matched whole: an attribute left out of a CHECK line is absent.

// BERT: separate MatMul + Add per projection (bias on either side), K^T by Transpose[0,2,3,1].
// CHECK-LABEL: func.func @separate_matmul_add(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %[[Q:[^ ]+]] = cta.project %x, %wq, bias %bq {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<2x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    %[[K:[^ ]+]] = cta.project %x, %wk, bias %bk {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<2x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    %[[V:[^ ]+]] = cta.project %x, %wv, bias %bv {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<2x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    %[[O:[^ ]+]] = cta.attention %[[Q]], %[[K]], %[[V]] {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     cta.attention
// CHECK:         onnx.Transpose %[[O]] {perm = array<i64: 0, 2, 1, 3>}
func.func @separate_matmul_add(%x: tensor<2x4x8xf32>) -> tensor<2x4x8xf32> {
  %wq = onnx.Constant dense<[[0.25, 0.79, 0.55, -0.55, -0.40, 0.75, -0.99, 0.64], [0.59, -0.06, -0.39, -0.44, -0.49, -0.11, 0.01, 0.11], [0.99, 0.59, 0.24, 0.98, -0.57, -0.68, 0.23, -0.91], [-0.93, 0.03, -0.07, 0.83, 0.26, 0.03, -0.01, -0.50], [-0.98, -0.62, 0.38, -0.60, -0.26, -0.99, 0.66, -0.69], [-0.46, 0.76, 0.02, 0.69, 0.28, 0.48, -0.82, 0.08], [0.02, 0.74, -0.28, 0.20, -0.88, -0.22, -0.35, -0.70], [0.63, -0.24, 0.96, 0.18, 0.21, 0.28, 0.35, -0.70]]> : tensor<8x8xf32>
  %wk = onnx.Constant dense<[[-0.12, -0.52, -0.20, -0.81, 0.94, -0.57, 0.34, -0.40], [0.75, 0.32, -0.74, 0.69, 0.89, 0.81, 0.14, -0.71], [-0.62, 0.86, 0.10, -0.64, 0.77, 0.28, 0.14, -0.25], [-0.18, -0.52, -0.92, 0.75, -0.06, 0.10, -0.36, 0.50], [-0.95, -0.26, -0.94, -0.75, 0.93, 0.32, -0.14, 0.05], [0.75, -0.31, 0.18, 0.37, -0.29, 0.04, 0.53, 0.82], [-0.70, 0.87, -0.99, 0.51, 0.62, -0.73, -0.16, 0.63], [-0.97, 0.26, 0.59, 0.03, 0.45, -0.55, -0.60, -0.27]]> : tensor<8x8xf32>
  %wv = onnx.Constant dense<[[-0.64, -0.31, 0.90, 0.15, -0.32, -0.46, 0.90, -0.11], [0.96, 0.03, 0.04, 0.79, 0.49, 0.16, -0.15, 0.76], [-0.18, 0.85, -0.86, -0.14, 0.04, 0.90, -0.50, 0.61], [0.35, 0.43, 0.26, 0.94, -0.33, -0.20, -0.59, -0.90], [-0.57, 0.83, 0.68, -0.78, 0.21, -0.04, 0.19, 0.32], [-0.39, 0.92, -0.07, 0.26, 0.27, -0.63, -0.88, -0.18], [0.53, 0.63, 0.46, -0.77, 0.83, 0.60, 0.76, 0.05], [0.83, -0.91, -0.94, -0.96, -0.49, -0.50, -0.62, 0.13]]> : tensor<8x8xf32>
  %bq = onnx.Constant dense<[-0.92, 0.18, -0.67, 0.36, -0.96, -0.38, 0.88, 0.08]> : tensor<8xf32>
  %bk = onnx.Constant dense<[0.62, 0.32, 0.22, -0.62, 0.15, -0.92, 0.60, 0.92]> : tensor<8xf32>
  %bv = onnx.Constant dense<[0.71, -0.90, -0.32, -0.36, -0.77, 0.25, 0.59, -0.37]> : tensor<8xf32>
  %heads = onnx.Constant dense<[2, 4, 2, 4]> : tensor<4xi64>
  %xq = onnx.MatMul %x, %wq : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %xqb = onnx.Add %bq, %xq : (tensor<8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %q4 = onnx.Reshape %xqb, %heads : (tensor<2x4x8xf32>, tensor<4xi64>) -> tensor<2x4x2x4xf32>
  %q = onnx.Transpose %q4 {perm = array<i64: 0, 2, 1, 3>} : (tensor<2x4x2x4xf32>) -> tensor<2x2x4x4xf32>
  %xk = onnx.MatMul %x, %wk : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %xkb = onnx.Add %xk, %bk : (tensor<2x4x8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %k4 = onnx.Reshape %xkb, %heads : (tensor<2x4x8xf32>, tensor<4xi64>) -> tensor<2x4x2x4xf32>
  %kt = onnx.Transpose %k4 {perm = array<i64: 0, 2, 3, 1>} : (tensor<2x4x2x4xf32>) -> tensor<2x2x4x4xf32>
  %xv = onnx.MatMul %x, %wv : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %xvb = onnx.Add %bv, %xv : (tensor<8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %v4 = onnx.Reshape %xvb, %heads : (tensor<2x4x8xf32>, tensor<4xi64>) -> tensor<2x4x2x4xf32>
  %v = onnx.Transpose %v4 {perm = array<i64: 0, 2, 1, 3>} : (tensor<2x4x2x4xf32>) -> tensor<2x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %sqrt_d = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %scores = onnx.Div %qk, %sqrt_d : (tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %ctx = onnx.MatMul %p, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %ctx_t = onnx.Transpose %ctx {perm = array<i64: 0, 2, 1, 3>} : (tensor<2x2x4x4xf32>) -> tensor<2x4x2x4xf32>
  %merged = onnx.Constant dense<[2, 4, 8]> : tensor<3xi64>
  %y = onnx.Reshape %ctx_t, %merged : (tensor<2x4x2x4xf32>, tensor<3xi64>) -> tensor<2x4x8xf32>
  func.return %y : tensor<2x4x8xf32>
}

// MatMul without bias; K^T by Transpose[0,1,3,2] after the head split; an int64 padding mask.
// CHECK-LABEL: func.func @separate_matmul_no_bias(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %[[Q:[^ ]+]] = cta.project %x, %wq {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    %[[K:[^ ]+]] = cta.project %x, %wk {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    %[[V:[^ ]+]] = cta.project %x, %wv {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    %ctx = cta.attention %[[Q]], %[[K]], %[[V]], mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "key_padding", ctac.source
// CHECK-NEXT:    func.return %ctx
func.func @separate_matmul_no_bias(%x: tensor<2x4x8xf32>, %m: tensor<2x4xi64>) -> tensor<2x2x4x4xf32> {
  %wq = onnx.Constant dense<[[0.25, 0.79, 0.55, -0.55, -0.40, 0.75, -0.99, 0.64], [0.59, -0.06, -0.39, -0.44, -0.49, -0.11, 0.01, 0.11], [0.99, 0.59, 0.24, 0.98, -0.57, -0.68, 0.23, -0.91], [-0.93, 0.03, -0.07, 0.83, 0.26, 0.03, -0.01, -0.50], [-0.98, -0.62, 0.38, -0.60, -0.26, -0.99, 0.66, -0.69], [-0.46, 0.76, 0.02, 0.69, 0.28, 0.48, -0.82, 0.08], [0.02, 0.74, -0.28, 0.20, -0.88, -0.22, -0.35, -0.70], [0.63, -0.24, 0.96, 0.18, 0.21, 0.28, 0.35, -0.70]]> : tensor<8x8xf32>
  %wk = onnx.Constant dense<[[-0.12, -0.52, -0.20, -0.81, 0.94, -0.57, 0.34, -0.40], [0.75, 0.32, -0.74, 0.69, 0.89, 0.81, 0.14, -0.71], [-0.62, 0.86, 0.10, -0.64, 0.77, 0.28, 0.14, -0.25], [-0.18, -0.52, -0.92, 0.75, -0.06, 0.10, -0.36, 0.50], [-0.95, -0.26, -0.94, -0.75, 0.93, 0.32, -0.14, 0.05], [0.75, -0.31, 0.18, 0.37, -0.29, 0.04, 0.53, 0.82], [-0.70, 0.87, -0.99, 0.51, 0.62, -0.73, -0.16, 0.63], [-0.97, 0.26, 0.59, 0.03, 0.45, -0.55, -0.60, -0.27]]> : tensor<8x8xf32>
  %wv = onnx.Constant dense<[[-0.64, -0.31, 0.90, 0.15, -0.32, -0.46, 0.90, -0.11], [0.96, 0.03, 0.04, 0.79, 0.49, 0.16, -0.15, 0.76], [-0.18, 0.85, -0.86, -0.14, 0.04, 0.90, -0.50, 0.61], [0.35, 0.43, 0.26, 0.94, -0.33, -0.20, -0.59, -0.90], [-0.57, 0.83, 0.68, -0.78, 0.21, -0.04, 0.19, 0.32], [-0.39, 0.92, -0.07, 0.26, 0.27, -0.63, -0.88, -0.18], [0.53, 0.63, 0.46, -0.77, 0.83, 0.60, 0.76, 0.05], [0.83, -0.91, -0.94, -0.96, -0.49, -0.50, -0.62, 0.13]]> : tensor<8x8xf32>
  %heads = onnx.Constant dense<[2, 4, 2, 4]> : tensor<4xi64>
  %xq = onnx.MatMul %x, %wq : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %q4 = onnx.Reshape %xq, %heads : (tensor<2x4x8xf32>, tensor<4xi64>) -> tensor<2x4x2x4xf32>
  %q = onnx.Transpose %q4 {perm = array<i64: 0, 2, 1, 3>} : (tensor<2x4x2x4xf32>) -> tensor<2x2x4x4xf32>
  %xk = onnx.MatMul %x, %wk : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %k4 = onnx.Reshape %xk, %heads : (tensor<2x4x8xf32>, tensor<4xi64>) -> tensor<2x4x2x4xf32>
  %k = onnx.Transpose %k4 {perm = array<i64: 0, 2, 1, 3>} : (tensor<2x4x2x4xf32>) -> tensor<2x2x4x4xf32>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %xv = onnx.MatMul %x, %wv : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %v4 = onnx.Reshape %xv, %heads : (tensor<2x4x8xf32>, tensor<4xi64>) -> tensor<2x4x2x4xf32>
  %v = onnx.Transpose %v4 {perm = array<i64: 0, 2, 1, 3>} : (tensor<2x4x2x4xf32>) -> tensor<2x2x4x4xf32>
  %ax = onnx.Constant dense<[1, 2]> : tensor<2xi64>
  %m4 = onnx.Unsqueeze %m, %ax : (tensor<2x4xi64>, tensor<2xi64>) -> tensor<2x1x1x4xi64>
  %mf = onnx.Cast %m4 {to = f32} : (tensor<2x1x1x4xi64>) -> tensor<2x1x1x4xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inv = onnx.Sub %one, %mf : (tensor<f32>, tensor<2x1x1x4xf32>) -> tensor<2x1x1x4xf32>
  %big = onnx.Constant dense<-1.000000e+04> : tensor<f32>
  %bias = onnx.Mul %inv, %big : (tensor<2x1x1x4xf32>, tensor<f32>) -> tensor<2x1x1x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %sqrt_d = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %scaled = onnx.Div %qk, %sqrt_d : (tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %scores = onnx.Add %scaled, %bias : (tensor<2x2x4x4xf32>, tensor<2x1x1x4xf32>) -> tensor<2x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %ctx = onnx.MatMul %p, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %ctx : tensor<2x2x4x4xf32>
}

// Packed MatMul + Add to (B, S, 3E), Split into q, k, v along the last axis.
// CHECK-LABEL: func.func @packed_matmul_split(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %[[Q:[^ ]+]] = cta.project %x, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<2x4x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    %[[K:[^ ]+]] = cta.project %x, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 8, 16>} : (tensor<2x4x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    %[[V:[^ ]+]] = cta.project %x, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 16, 24>} : (tensor<2x4x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    %ctx = cta.attention %[[Q]], %[[K]], %[[V]] {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source
// CHECK-NEXT:    func.return %ctx
func.func @packed_matmul_split(%x: tensor<2x4x8xf32>) -> tensor<2x2x4x4xf32> {
  %w = onnx.Constant dense<[[0.73, 0.59, -0.74, 0.53, 0.77, -0.61, 0.15, 0.28, 0.22, -0.81, 0.32, 0.26, 0.65, 0.61, -0.35, 0.44, 0.73, 0.79, -0.68, -0.95, 0.30, -0.57, 0.13, 0.89], [-0.24, -0.49, -0.09, 0.31, -0.80, -0.24, -0.73, 0.32, 0.66, -0.25, -0.26, 0.08, -0.57, -0.51, -0.34, -0.09, -0.84, 0.51, 0.16, -0.40, -0.84, 0.53, -0.74, -0.73], [-0.74, -0.84, 0.81, -0.46, -0.39, 0.67, 0.24, -0.63, -0.13, 0.77, -0.25, 0.42, -0.81, 0.45, 0.55, 0.65, 0.35, -0.26, -0.87, 0.04, 0.51, -0.62, -0.47, 0.07], [0.50, 0.79, -0.75, -0.63, 0.60, 0.29, 0.44, 0.99, 0.88, 0.69, 0.55, -0.21, 0.28, -0.63, 0.52, 0.52, 0.44, -0.11, -0.24, -0.16, -0.93, 0.69, 0.08, -0.22], [0.10, 0.44, -0.24, 0.66, 0.84, -0.23, -0.72, 0.52, 0.99, -0.70, 0.43, 0.65, 0.84, -0.75, -0.82, 0.98, -0.77, -0.65, 0.15, -0.11, 0.50, -0.62, 0.83, -0.57], [0.54, -0.86, -0.05, -0.93, -0.37, -0.38, 0.44, -0.09, -0.89, 0.99, 0.78, 0.83, -0.51, -0.21, -0.55, -0.75, -0.93, 0.01, -0.75, -0.65, 0.72, -0.03, -0.63, 0.34], [-0.47, 0.05, -0.43, 0.03, 0.26, 0.07, -0.21, 0.58, 0.75, -0.64, -0.73, -0.77, 0.96, 0.88, -0.54, 0.94, -0.58, 0.01, -0.01, 0.83, -0.92, -0.37, 0.20, -0.87], [-0.53, -0.07, 0.76, 0.52, 0.66, 0.52, 0.42, 0.70, 0.36, 0.47, -0.40, -0.66, 0.51, -0.67, 0.84, 0.19, -0.34, 0.87, -0.69, 0.03, -0.82, 0.93, 0.15, 0.61]]> : tensor<8x24xf32>
  %b = onnx.Constant dense<[-0.44, 0.60, 0.41, 0.29, 0.90, -0.13, -0.17, 0.38, 0.67, -0.33, 0.34, -0.58, 0.10, 0.54, -0.87, 0.46, -0.97, 0.92, -0.06, -0.18, 0.44, 0.05, 0.46, -0.83]> : tensor<24xf32>
  %xw = onnx.MatMul %x, %w : (tensor<2x4x8xf32>, tensor<8x24xf32>) -> tensor<2x4x24xf32>
  %qkv = onnx.Add %xw, %b : (tensor<2x4x24xf32>, tensor<24xf32>) -> tensor<2x4x24xf32>
  %sizes = onnx.Constant dense<8> : tensor<3xi64>
  %xq, %xk, %xv = onnx.Split %qkv, split %sizes {axis = 2 : i64} : (tensor<2x4x24xf32>, tensor<3xi64>) -> (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>)
  %heads = onnx.Constant dense<[2, 4, 2, 4]> : tensor<4xi64>
  %q4 = onnx.Reshape %xq, %heads : (tensor<2x4x8xf32>, tensor<4xi64>) -> tensor<2x4x2x4xf32>
  %q = onnx.Transpose %q4 {perm = array<i64: 0, 2, 1, 3>} : (tensor<2x4x2x4xf32>) -> tensor<2x2x4x4xf32>
  %k4 = onnx.Reshape %xk, %heads : (tensor<2x4x8xf32>, tensor<4xi64>) -> tensor<2x4x2x4xf32>
  %kt = onnx.Transpose %k4 {perm = array<i64: 0, 2, 3, 1>} : (tensor<2x4x2x4xf32>) -> tensor<2x2x4x4xf32>
  %v4 = onnx.Reshape %xv, %heads : (tensor<2x4x8xf32>, tensor<4xi64>) -> tensor<2x4x2x4xf32>
  %v = onnx.Transpose %v4 {perm = array<i64: 0, 2, 1, 3>} : (tensor<2x4x2x4xf32>) -> tensor<2x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scores = onnx.Mul %qk, %s : (tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %ctx = onnx.MatMul %p, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %ctx : tensor<2x2x4x4xf32>
}

// GPT-2 Conv1D: tokens flattened to (B*S, E), one Gemm with the bias as C, back to (B, S, 3E),
// Split with num_outputs; causal and padding masks as GPT-2 builds them.
// CHECK-LABEL: func.func @packed_gemm_split(
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     onnx.Gemm
// CHECK:         %[[Q:[^ ]+]] = cta.project %x, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<2x4x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    %[[K:[^ ]+]] = cta.project %x, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 8, 16>} : (tensor<2x4x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    %[[V:[^ ]+]] = cta.project %x, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 16, 24>} : (tensor<2x4x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    %ctx = cta.attention %[[Q]], %[[K]], %[[V]], mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, causal = 1 : i64, mask_kind = "key_padding", ctac.source
// CHECK-NEXT:    func.return %ctx
func.func @packed_gemm_split(%x: tensor<2x4x8xf32>, %m: tensor<2x4xi64>) -> tensor<2x2x4x4xf32> {
  %w = onnx.Constant dense<[[0.73, 0.59, -0.74, 0.53, 0.77, -0.61, 0.15, 0.28, 0.22, -0.81, 0.32, 0.26, 0.65, 0.61, -0.35, 0.44, 0.73, 0.79, -0.68, -0.95, 0.30, -0.57, 0.13, 0.89], [-0.24, -0.49, -0.09, 0.31, -0.80, -0.24, -0.73, 0.32, 0.66, -0.25, -0.26, 0.08, -0.57, -0.51, -0.34, -0.09, -0.84, 0.51, 0.16, -0.40, -0.84, 0.53, -0.74, -0.73], [-0.74, -0.84, 0.81, -0.46, -0.39, 0.67, 0.24, -0.63, -0.13, 0.77, -0.25, 0.42, -0.81, 0.45, 0.55, 0.65, 0.35, -0.26, -0.87, 0.04, 0.51, -0.62, -0.47, 0.07], [0.50, 0.79, -0.75, -0.63, 0.60, 0.29, 0.44, 0.99, 0.88, 0.69, 0.55, -0.21, 0.28, -0.63, 0.52, 0.52, 0.44, -0.11, -0.24, -0.16, -0.93, 0.69, 0.08, -0.22], [0.10, 0.44, -0.24, 0.66, 0.84, -0.23, -0.72, 0.52, 0.99, -0.70, 0.43, 0.65, 0.84, -0.75, -0.82, 0.98, -0.77, -0.65, 0.15, -0.11, 0.50, -0.62, 0.83, -0.57], [0.54, -0.86, -0.05, -0.93, -0.37, -0.38, 0.44, -0.09, -0.89, 0.99, 0.78, 0.83, -0.51, -0.21, -0.55, -0.75, -0.93, 0.01, -0.75, -0.65, 0.72, -0.03, -0.63, 0.34], [-0.47, 0.05, -0.43, 0.03, 0.26, 0.07, -0.21, 0.58, 0.75, -0.64, -0.73, -0.77, 0.96, 0.88, -0.54, 0.94, -0.58, 0.01, -0.01, 0.83, -0.92, -0.37, 0.20, -0.87], [-0.53, -0.07, 0.76, 0.52, 0.66, 0.52, 0.42, 0.70, 0.36, 0.47, -0.40, -0.66, 0.51, -0.67, 0.84, 0.19, -0.34, 0.87, -0.69, 0.03, -0.82, 0.93, 0.15, 0.61]]> : tensor<8x24xf32>
  %b = onnx.Constant dense<[-0.44, 0.60, 0.41, 0.29, 0.90, -0.13, -0.17, 0.38, 0.67, -0.33, 0.34, -0.58, 0.10, 0.54, -0.87, 0.46, -0.97, 0.92, -0.06, -0.18, 0.44, 0.05, 0.46, -0.83]> : tensor<24xf32>
  %flat_shape = onnx.Constant dense<[8, 8]> : tensor<2xi64>
  %flat = onnx.Reshape %x, %flat_shape : (tensor<2x4x8xf32>, tensor<2xi64>) -> tensor<8x8xf32>
  %g = onnx.Gemm %flat, %w, C %b {alpha = 1.000000e+00 : f32, beta = 1.000000e+00 : f32} : (tensor<8x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<8x24xf32>
  %qkv_shape = onnx.Constant dense<[2, 4, 24]> : tensor<3xi64>
  %qkv = onnx.Reshape %g, %qkv_shape : (tensor<8x24xf32>, tensor<3xi64>) -> tensor<2x4x24xf32>
  %xq, %xk, %xv = onnx.Split %qkv {axis = 2 : i64, num_outputs = 3 : i64} : (tensor<2x4x24xf32>) -> (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>)
  %heads = onnx.Constant dense<[2, 4, 2, 4]> : tensor<4xi64>
  %q4 = onnx.Reshape %xq, %heads : (tensor<2x4x8xf32>, tensor<4xi64>) -> tensor<2x4x2x4xf32>
  %q = onnx.Transpose %q4 {perm = array<i64: 0, 2, 1, 3>} : (tensor<2x4x2x4xf32>) -> tensor<2x2x4x4xf32>
  %k4 = onnx.Reshape %xk, %heads : (tensor<2x4x8xf32>, tensor<4xi64>) -> tensor<2x4x2x4xf32>
  %kt = onnx.Transpose %k4 {perm = array<i64: 0, 2, 3, 1>} : (tensor<2x4x2x4xf32>) -> tensor<2x2x4x4xf32>
  %v4 = onnx.Reshape %xv, %heads : (tensor<2x4x8xf32>, tensor<4xi64>) -> tensor<2x4x2x4xf32>
  %v = onnx.Transpose %v4 {perm = array<i64: 0, 2, 1, 3>} : (tensor<2x4x2x4xf32>) -> tensor<2x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scaled = onnx.Mul %qk, %s : (tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %keep = onnx.Constant dense<[[[[true, false, false, false], [true, true, false, false], [true, true, true, false], [true, true, true, true]]]]> : tensor<1x1x4x4xi1>
  %min = onnx.Constant dense<-3.40282347E+38> : tensor<f32>
  %causal = onnx.Where %keep, %scaled, %min : (tensor<1x1x4x4xi1>, tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %ax = onnx.Constant dense<[1, 2]> : tensor<2xi64>
  %m4 = onnx.Unsqueeze %m, %ax : (tensor<2x4xi64>, tensor<2xi64>) -> tensor<2x1x1x4xi64>
  %mf = onnx.Cast %m4 {to = f32} : (tensor<2x1x1x4xi64>) -> tensor<2x1x1x4xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inv = onnx.Sub %one, %mf : (tensor<f32>, tensor<2x1x1x4xf32>) -> tensor<2x1x1x4xf32>
  %padding = onnx.Mul %inv, %min : (tensor<2x1x1x4xf32>, tensor<f32>) -> tensor<2x1x1x4xf32>
  %scores = onnx.Add %causal, %padding : (tensor<2x2x4x4xf32>, tensor<2x1x1x4xf32>) -> tensor<2x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %ctx = onnx.MatMul %p, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %ctx : tensor<2x2x4x4xf32>
}

// RUN: ctac-opt %s -p onnx-canonicalize,detect-attention | filecheck %s

// Scale applied before Q.K^T. Split scales (as TorchScript SDPA exports): Q and K^T each
// multiplied by sqrt(1/sqrt(d)); with d = 4 that is sqrt(0.5), and the product is 0.5 (up to f32
// rounding of the constant). q, k, v are (B, H, S, D) = (1, 2, 4, 4).
// The attribute lists are matched whole: an attribute left out of a CHECK line is absent.

// CHECK-LABEL: func.func @split_scale_q_kt(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %{{[^ ]+}} = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = {{(0\.49999|0\.50000|5\.0+e-01)[0-9]*}} : f64, ctac.source
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     cta.attention
// CHECK:         func.return
func.func @split_scale_q_kt(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %s = onnx.Constant dense<0.707106769> : tensor<f32>
  %qs = onnx.Mul %q, %s : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %kts = onnx.Mul %kt, %s : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %scores = onnx.MatMul %qs, %kts : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

// The K factor applied before the transpose, constants on the left.
// CHECK-LABEL: func.func @split_scale_q_k(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %{{[^ ]+}} = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = {{(0\.49999|0\.50000|5\.0+e-01)[0-9]*}} : f64, ctac.source
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     cta.attention
// CHECK:         func.return
func.func @split_scale_q_k(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %s = onnx.Constant dense<0.707106769> : tensor<f32>
  %qs = onnx.Mul %s, %q : (tensor<f32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %ks = onnx.Mul %s, %k : (tensor<f32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %kt = onnx.Transpose %ks {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %scores = onnx.MatMul %qs, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

// The whole scale on Q: Mul(Q, 1/sqrt(d)) with d = 8.
// CHECK-LABEL: func.func @scale_on_q_mul(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %{{[^ ]+}} = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 8 : i64, scale = {{(0\.353553|3\.53553)[0-9]*(e-01)?}} : f64, ctac.source
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     cta.attention
// CHECK:         func.return
func.func @scale_on_q_mul(%q: tensor<1x2x6x8xf32>, %k: tensor<1x2x6x8xf32>, %v: tensor<1x2x6x8xf32>) -> tensor<1x2x6x8xf32> {
  %s = onnx.Constant dense<0.353553385> : tensor<f32>
  %qs = onnx.Mul %q, %s : (tensor<1x2x6x8xf32>, tensor<f32>) -> tensor<1x2x6x8xf32>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x6x8xf32>) -> tensor<1x2x8x6xf32>
  %scores = onnx.MatMul %qs, %kt : (tensor<1x2x6x8xf32>, tensor<1x2x8x6xf32>) -> tensor<1x2x6x6xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x6x6xf32>) -> tensor<1x2x6x6xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x6x6xf32>, tensor<1x2x6x8xf32>) -> tensor<1x2x6x8xf32>
  func.return %o : tensor<1x2x6x8xf32>
}

// The whole scale on Q: Div(Q, sqrt(d)) with d = 4.
// CHECK-LABEL: func.func @scale_on_q_div(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %{{[^ ]+}} = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     cta.attention
// CHECK:         func.return
func.func @scale_on_q_div(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %s = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %qs = onnx.Div %q, %s : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %scores = onnx.MatMul %qs, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

// The scale computed from the shape, as the SDPA export does: 1/sqrt(Cast(Shape(q)[-1])),
// split as sqrt of it over Q and K^T. canonicalize folds it to a constant first.
// CHECK-LABEL: func.func @split_scale_from_shape(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %{{[^ ]+}} = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = {{(0\.49999|0\.50000|5\.0+e-01)[0-9]*}} : f64, ctac.source
// CHECK-NOT:     onnx.Softmax
// CHECK-NOT:     cta.attention
// CHECK:         func.return
func.func @split_scale_from_shape(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %shape = onnx.Shape %q {start = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1xi64>
  %d = onnx.Cast %shape {to = f32} : (tensor<1xi64>) -> tensor<1xf32>
  %sqrt_d = onnx.Sqrt %d : (tensor<1xf32>) -> tensor<1xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inv = onnx.Div %one, %sqrt_d : (tensor<f32>, tensor<1xf32>) -> tensor<1xf32>
  %s = onnx.Sqrt %inv : (tensor<1xf32>) -> tensor<1xf32>
  %qs = onnx.Mul %q, %s : (tensor<1x2x4x4xf32>, tensor<1xf32>) -> tensor<1x2x4x4xf32>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %kts = onnx.Mul %kt, %s : (tensor<1x2x4x4xf32>, tensor<1xf32>) -> tensor<1x2x4x4xf32>
  %scores = onnx.MatMul %qs, %kts : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

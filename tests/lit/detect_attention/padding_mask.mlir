// RUN: ctac-opt %s -p onnx-canonicalize,detect-attention | filecheck %s

// Additive padding masks built from an int64 (batch, seq) attention_mask argument become a
// key_padding mask whose operand is the argument itself; a float bias argument stays additive.
// The attribute lists are matched whole: an attribute left out of a CHECK line is absent.
// q, k, v are (B, H, S, D) = (2, 2, 4, 4).

// BERT eager: (1 - Cast(Unsqueeze(Unsqueeze(m)))) * -10000 added to the scaled scores.
// CHECK-LABEL: func.func @extended_mask(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v, mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "key_padding", ctac.source
// CHECK-SAME:    (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>, tensor<2x4xi64>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    func.return %o
func.func @extended_mask(%q: tensor<2x2x4x4xf32>, %k: tensor<2x2x4x4xf32>, %v: tensor<2x2x4x4xf32>, %m: tensor<2x4xi64>) -> tensor<2x2x4x4xf32> {
  %ax1 = onnx.Constant dense<[1]> : tensor<1xi64>
  %ax2 = onnx.Constant dense<[2]> : tensor<1xi64>
  %m3 = onnx.Unsqueeze %m, %ax1 : (tensor<2x4xi64>, tensor<1xi64>) -> tensor<2x1x4xi64>
  %m4 = onnx.Unsqueeze %m3, %ax2 : (tensor<2x1x4xi64>, tensor<1xi64>) -> tensor<2x1x1x4xi64>
  %mf = onnx.Cast %m4 {to = f32} : (tensor<2x1x1x4xi64>) -> tensor<2x1x1x4xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inv = onnx.Sub %one, %mf : (tensor<f32>, tensor<2x1x1x4xf32>) -> tensor<2x1x1x4xf32>
  %big = onnx.Constant dense<-1.000000e+04> : tensor<f32>
  %bias = onnx.Mul %inv, %big : (tensor<2x1x1x4xf32>, tensor<f32>) -> tensor<2x1x1x4xf32>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %sqrt_d = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %scaled = onnx.Div %qk, %sqrt_d : (tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %scores = onnx.Add %scaled, %bias : (tensor<2x2x4x4xf32>, tensor<2x1x1x4xf32>) -> tensor<2x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %o : tensor<2x2x4x4xf32>
}

// The same with float min as the fill, the bias on the left of the Add.
// CHECK-LABEL: func.func @extended_mask_float_min(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v, mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "key_padding", ctac.source
// CHECK-NEXT:    func.return %o
func.func @extended_mask_float_min(%q: tensor<2x2x4x4xf32>, %k: tensor<2x2x4x4xf32>, %v: tensor<2x2x4x4xf32>, %m: tensor<2x4xi64>) -> tensor<2x2x4x4xf32> {
  %ax = onnx.Constant dense<[1, 2]> : tensor<2xi64>
  %m4 = onnx.Unsqueeze %m, %ax : (tensor<2x4xi64>, tensor<2xi64>) -> tensor<2x1x1x4xi64>
  %mf = onnx.Cast %m4 {to = f32} : (tensor<2x1x1x4xi64>) -> tensor<2x1x1x4xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inv = onnx.Sub %one, %mf : (tensor<f32>, tensor<2x1x1x4xf32>) -> tensor<2x1x1x4xf32>
  %min = onnx.Constant dense<-3.40282347E+38> : tensor<f32>
  %bias = onnx.Mul %inv, %min : (tensor<2x1x1x4xf32>, tensor<f32>) -> tensor<2x1x1x4xf32>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scaled = onnx.Mul %qk, %s : (tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %scores = onnx.Add %bias, %scaled : (tensor<2x1x1x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %o : tensor<2x2x4x4xf32>
}

// A bool mask made additive: Where(Cast(m, bool), 0, -inf), broadcast over heads and queries.
// CHECK-LABEL: func.func @where_bool_mask(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v, mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "key_padding", ctac.source
// CHECK-NEXT:    func.return %o
func.func @where_bool_mask(%q: tensor<2x2x4x4xf32>, %k: tensor<2x2x4x4xf32>, %v: tensor<2x2x4x4xf32>, %m: tensor<2x4xi64>) -> tensor<2x2x4x4xf32> {
  %ax = onnx.Constant dense<[1, 2]> : tensor<2xi64>
  %m4 = onnx.Unsqueeze %m, %ax : (tensor<2x4xi64>, tensor<2xi64>) -> tensor<2x1x1x4xi64>
  %keep = onnx.Cast %m4 {to = i1} : (tensor<2x1x1x4xi64>) -> tensor<2x1x1x4xi1>
  %zero = onnx.Constant dense<0.000000e+00> : tensor<f32>
  %ninf = onnx.Constant dense<"0x000080FF"> : tensor<f32>
  %bias = onnx.Where %keep, %zero, %ninf : (tensor<2x1x1x4xi1>, tensor<f32>, tensor<f32>) -> tensor<2x1x1x4xf32>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %sqrt_d = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %scaled = onnx.Div %qk, %sqrt_d : (tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %scores = onnx.Add %scaled, %bias : (tensor<2x2x4x4xf32>, tensor<2x1x1x4xf32>) -> tensor<2x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %o : tensor<2x2x4x4xf32>
}

// transformers-5 form: And with an all-true (1, 1, S, 1) block, Expand to (B, 1, S, S), then
// Where(mask, 0, float min).
// CHECK-LABEL: func.func @where_and_expand(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v, mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "key_padding", ctac.source
// CHECK-NEXT:    func.return %o
func.func @where_and_expand(%q: tensor<2x2x4x4xf32>, %k: tensor<2x2x4x4xf32>, %v: tensor<2x2x4x4xf32>, %m: tensor<2x4xi64>) -> tensor<2x2x4x4xf32> {
  %mb = onnx.Cast %m {to = i1} : (tensor<2x4xi64>) -> tensor<2x4xi1>
  %ax = onnx.Constant dense<[1, 2]> : tensor<2xi64>
  %m4 = onnx.Unsqueeze %mb, %ax : (tensor<2x4xi1>, tensor<2xi64>) -> tensor<2x1x1x4xi1>
  %all = onnx.Constant dense<true> : tensor<1x1x4x1xi1>
  %both = onnx.And %all, %m4 : (tensor<1x1x4x1xi1>, tensor<2x1x1x4xi1>) -> tensor<2x1x4x4xi1>
  %shape = onnx.Constant dense<[2, 1, 4, 4]> : tensor<4xi64>
  %keep = onnx.Expand %both, %shape : (tensor<2x1x4x4xi1>, tensor<4xi64>) -> tensor<2x1x4x4xi1>
  %zero = onnx.Constant dense<0.000000e+00> : tensor<f32>
  %min = onnx.Constant dense<-3.40282347E+38> : tensor<f32>
  %bias = onnx.Where %keep, %zero, %min : (tensor<2x1x4x4xi1>, tensor<f32>, tensor<f32>) -> tensor<2x1x4x4xf32>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scaled = onnx.Mul %qk, %s : (tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %scores = onnx.Add %scaled, %bias : (tensor<2x2x4x4xf32>, tensor<2x1x4x4xf32>) -> tensor<2x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %o : tensor<2x2x4x4xf32>
}

// The mask applied by Where on the scores themselves: Where(m, scores, -inf).
// CHECK-LABEL: func.func @where_on_scores(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v, mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "key_padding", ctac.source
// CHECK-NEXT:    func.return %o
func.func @where_on_scores(%q: tensor<2x2x4x4xf32>, %k: tensor<2x2x4x4xf32>, %v: tensor<2x2x4x4xf32>, %m: tensor<2x4xi64>) -> tensor<2x2x4x4xf32> {
  %ax = onnx.Constant dense<[1, 2]> : tensor<2xi64>
  %m4 = onnx.Unsqueeze %m, %ax : (tensor<2x4xi64>, tensor<2xi64>) -> tensor<2x1x1x4xi64>
  %keep = onnx.Cast %m4 {to = i1} : (tensor<2x1x1x4xi64>) -> tensor<2x1x1x4xi1>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %sqrt_d = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %scaled = onnx.Div %qk, %sqrt_d : (tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %ninf = onnx.Constant dense<"0x000080FF"> : tensor<f32>
  %scores = onnx.Where %keep, %scaled, %ninf : (tensor<2x1x1x4xi1>, tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %o : tensor<2x2x4x4xf32>
}

// A float bias argument of shape (B, 1, S, S) is an additive mask, passed through as the operand.
// CHECK-LABEL: func.func @float_bias_argument(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v, mask %bias {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "additive", ctac.source
// CHECK-SAME:    (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>, tensor<2x1x4x4xf32>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    func.return %o
func.func @float_bias_argument(%q: tensor<2x2x4x4xf32>, %k: tensor<2x2x4x4xf32>, %v: tensor<2x2x4x4xf32>, %bias: tensor<2x1x4x4xf32>) -> tensor<2x2x4x4xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %sqrt_d = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %scaled = onnx.Div %qk, %sqrt_d : (tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
  %scores = onnx.Add %scaled, %bias : (tensor<2x2x4x4xf32>, tensor<2x1x4x4xf32>) -> tensor<2x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %o : tensor<2x2x4x4xf32>
}

// A bool (batch, seq) mask argument used directly: Where(m, 0, -inf).
// CHECK-LABEL: func.func @bool_mask_argument(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v, mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 1.000000e+00 : f64, mask_kind = "key_padding", ctac.source
// CHECK-SAME:    (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>, tensor<2x4xi1>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    func.return %o
func.func @bool_mask_argument(%q: tensor<2x2x4x4xf32>, %k: tensor<2x2x4x4xf32>, %v: tensor<2x2x4x4xf32>, %m: tensor<2x4xi1>) -> tensor<2x2x4x4xf32> {
  %ax = onnx.Constant dense<[1, 2]> : tensor<2xi64>
  %m4 = onnx.Unsqueeze %m, %ax : (tensor<2x4xi1>, tensor<2xi64>) -> tensor<2x1x1x4xi1>
  %zero = onnx.Constant dense<0.000000e+00> : tensor<f32>
  %ninf = onnx.Constant dense<"0x000080FF"> : tensor<f32>
  %bias = onnx.Where %m4, %zero, %ninf : (tensor<2x1x1x4xi1>, tensor<f32>, tensor<f32>) -> tensor<2x1x1x4xf32>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %scores = onnx.Add %qk, %bias : (tensor<2x2x4x4xf32>, tensor<2x1x1x4xf32>) -> tensor<2x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %o : tensor<2x2x4x4xf32>
}

// The padding positions selected instead of the kept ones: Where(Equal(m, 0), float min, scores).
// CHECK-LABEL: func.func @where_padding_selects_fill(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v, mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 1.000000e+00 : f64, mask_kind = "key_padding", ctac.source
// CHECK-NEXT:    func.return %o
func.func @where_padding_selects_fill(%q: tensor<2x2x4x4xf32>, %k: tensor<2x2x4x4xf32>, %v: tensor<2x2x4x4xf32>, %m: tensor<2x4xi64>) -> tensor<2x2x4x4xf32> {
  %ax = onnx.Constant dense<[1, 2]> : tensor<2xi64>
  %m4 = onnx.Unsqueeze %m, %ax : (tensor<2x4xi64>, tensor<2xi64>) -> tensor<2x1x1x4xi64>
  %z = onnx.Constant dense<0> : tensor<i64>
  %pad = onnx.Equal %m4, %z : (tensor<2x1x1x4xi64>, tensor<i64>) -> tensor<2x1x1x4xi1>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %min = onnx.Constant dense<-3.40282347E+38> : tensor<f32>
  %scores = onnx.Where %pad, %min, %qk : (tensor<2x1x1x4xi1>, tensor<f32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %o : tensor<2x2x4x4xf32>
}

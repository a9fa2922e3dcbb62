// RUN: ctac-opt %s -p onnx-canonicalize,detect-attention | filecheck %s

// Causal masks built from constants become `causal = 1` with no mask operand; together with a
// padding mask from an int64 argument, `causal = 1` and a key_padding mask.
// The attribute lists are matched whole, so an attribute left out of a CHECK line is absent.
// q, k, v are (B, H, S, D) = (1, 2, 4, 4) or (2, 2, 4, 4).

// GPT-2: Where(Slice(Slice(tril buffer)), scores, float min) on the scaled scores.
// CHECK-LABEL: func.func @gpt2_tril_buffer(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, causal = 1 : i64, ctac.source
// CHECK-NEXT:    func.return %o
func.func @gpt2_tril_buffer(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %buffer = onnx.Constant dense<[[[[true, false, false, false, false, false], [true, true, false, false, false, false], [true, true, true, false, false, false], [true, true, true, true, false, false], [true, true, true, true, true, false], [true, true, true, true, true, true]]]]> : tensor<1x1x6x6xi1>
  %start = onnx.Constant dense<[0]> : tensor<1xi64>
  %end = onnx.Constant dense<[4]> : tensor<1xi64>
  %ax2 = onnx.Constant dense<[2]> : tensor<1xi64>
  %ax3 = onnx.Constant dense<[3]> : tensor<1xi64>
  %rows = onnx.Slice %buffer, %start, %end, axes %ax2 : (tensor<1x1x6x6xi1>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x1x4x6xi1>
  %keep = onnx.Slice %rows, %start, %end, axes %ax3 : (tensor<1x1x4x6xi1>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x1x4x4xi1>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scaled = onnx.Mul %qk, %s : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %min = onnx.Constant dense<-3.40282347E+38> : tensor<f32>
  %scores = onnx.Where %keep, %scaled, %min : (tensor<1x1x4x4xi1>, tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

// SDPA is_causal: ConstantOfShape -> Trilu -> Equal(0) -> Where(-inf, 0) added to the scores.
// CHECK-LABEL: func.func @sdpa_trilu(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, causal = 1 : i64, ctac.source
// CHECK-NEXT:    func.return %o
func.func @sdpa_trilu(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %shape = onnx.Constant dense<[4, 4]> : tensor<2xi64>
  %ones = onnx.ConstantOfShape %shape {value = dense<1.0> : tensor<1xf32>} : (tensor<2xi64>) -> tensor<4x4xf32>
  %lower = onnx.Trilu %ones {upper = 0 : i64} : (tensor<4x4xf32>) -> tensor<4x4xf32>
  %zero = onnx.Constant dense<0.000000e+00> : tensor<f32>
  %above = onnx.Equal %lower, %zero : (tensor<4x4xf32>, tensor<f32>) -> tensor<4x4xi1>
  %ninf = onnx.Constant dense<"0x000080FF"> : tensor<f32>
  %bias = onnx.Where %above, %ninf, %zero : (tensor<4x4xi1>, tensor<f32>, tensor<f32>) -> tensor<4x4xf32>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scaled = onnx.Mul %qk, %s : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %scores = onnx.Add %scaled, %bias : (tensor<1x2x4x4xf32>, tensor<4x4xf32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

// transformers-5: Range / GreaterOrEqual of positions, then Where(keep, 0, float min).
// CHECK-LABEL: func.func @range_greater_or_equal(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, causal = 1 : i64, ctac.source
// CHECK-NEXT:    func.return %o
func.func @range_greater_or_equal(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %start = onnx.Constant dense<0> : tensor<i64>
  %limit = onnx.Constant dense<4> : tensor<i64>
  %delta = onnx.Constant dense<1> : tensor<i64>
  %pos = onnx.Range %start, %limit, %delta : (tensor<i64>, tensor<i64>, tensor<i64>) -> tensor<4xi64>
  %ax = onnx.Constant dense<[1]> : tensor<1xi64>
  %rows = onnx.Unsqueeze %pos, %ax : (tensor<4xi64>, tensor<1xi64>) -> tensor<4x1xi64>
  %keep = onnx.GreaterOrEqual %rows, %pos : (tensor<4x1xi64>, tensor<4xi64>) -> tensor<4x4xi1>
  %zero = onnx.Constant dense<0.000000e+00> : tensor<f32>
  %min = onnx.Constant dense<-3.40282347E+38> : tensor<f32>
  %bias = onnx.Where %keep, %zero, %min : (tensor<4x4xi1>, tensor<f32>, tensor<f32>) -> tensor<4x4xf32>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scaled = onnx.Mul %qk, %s : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %scores = onnx.Add %scaled, %bias : (tensor<1x2x4x4xf32>, tensor<4x4xf32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

// GPT-2 with a padding mask: the causal Where on the scores, then the extended padding mask added.
// CHECK-LABEL: func.func @causal_and_padding(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v, mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, causal = 1 : i64, mask_kind = "key_padding", ctac.source
// CHECK-SAME:    (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>, tensor<2x4xi64>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    func.return %o
func.func @causal_and_padding(%q: tensor<2x2x4x4xf32>, %k: tensor<2x2x4x4xf32>, %v: tensor<2x2x4x4xf32>, %m: tensor<2x4xi64>) -> tensor<2x2x4x4xf32> {
  %keep = onnx.Constant dense<[[[[true, false, false, false], [true, true, false, false], [true, true, true, false], [true, true, true, true]]]]> : tensor<1x1x4x4xi1>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scaled = onnx.Mul %qk, %s : (tensor<2x2x4x4xf32>, tensor<f32>) -> tensor<2x2x4x4xf32>
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
  %o = onnx.MatMul %p, %v : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>) -> tensor<2x2x4x4xf32>
  func.return %o : tensor<2x2x4x4xf32>
}

// One combined (B, 1, S, S) bias: causal and padding Where conditions And-ed, then Where(0, min).
// CHECK-LABEL: func.func @causal_and_padding_combined(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v, mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, causal = 1 : i64, mask_kind = "key_padding", ctac.source
// CHECK-NEXT:    func.return %o
func.func @causal_and_padding_combined(%q: tensor<2x2x4x4xf32>, %k: tensor<2x2x4x4xf32>, %v: tensor<2x2x4x4xf32>, %m: tensor<2x4xi64>) -> tensor<2x2x4x4xf32> {
  %lower = onnx.Constant dense<[[[[true, false, false, false], [true, true, false, false], [true, true, true, false], [true, true, true, true]]]]> : tensor<1x1x4x4xi1>
  %mb = onnx.Cast %m {to = i1} : (tensor<2x4xi64>) -> tensor<2x4xi1>
  %ax = onnx.Constant dense<[1, 2]> : tensor<2xi64>
  %m4 = onnx.Unsqueeze %mb, %ax : (tensor<2x4xi1>, tensor<2xi64>) -> tensor<2x1x1x4xi1>
  %keep = onnx.And %lower, %m4 : (tensor<1x1x4x4xi1>, tensor<2x1x1x4xi1>) -> tensor<2x1x4x4xi1>
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

// RUN: ctac-opt %s -p onnx-canonicalize,detect-attention | filecheck %s

// KV cache: Concat(past, new) along the sequence axis feeds K and V, so the key length is
// past + new (here 3 + 2 = 5 keys for 2 queries). The attribute lists are matched whole: an
// attribute left out of a CHECK line is absent.

// No mask.
// CHECK-LABEL: func.func @kv_cache(
// CHECK-NOT:     onnx.Softmax
// CHECK-DAG:     %[[K:[^ ]+]] = onnx.Concat %past_k, %k {axis = 2 : i64} : (tensor<1x2x3x4xf32>, tensor<1x2x2x4xf32>) -> tensor<1x2x5x4xf32>
// CHECK-DAG:     %[[V:[^ ]+]] = onnx.Concat %past_v, %v {axis = 2 : i64} : (tensor<1x2x3x4xf32>, tensor<1x2x2x4xf32>) -> tensor<1x2x5x4xf32>
// CHECK:         %o = cta.attention %q, %[[K]], %[[V]] {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source
// CHECK-SAME:    (tensor<1x2x2x4xf32>, tensor<1x2x5x4xf32>, tensor<1x2x5x4xf32>) -> tensor<1x2x2x4xf32>
// CHECK-NEXT:    func.return %o
func.func @kv_cache(%q: tensor<1x2x2x4xf32>, %k: tensor<1x2x2x4xf32>, %v: tensor<1x2x2x4xf32>, %past_k: tensor<1x2x3x4xf32>, %past_v: tensor<1x2x3x4xf32>) -> tensor<1x2x2x4xf32> {
  %kc = onnx.Concat %past_k, %k {axis = 2 : i64} : (tensor<1x2x3x4xf32>, tensor<1x2x2x4xf32>) -> tensor<1x2x5x4xf32>
  %vc = onnx.Concat %past_v, %v {axis = 2 : i64} : (tensor<1x2x3x4xf32>, tensor<1x2x2x4xf32>) -> tensor<1x2x5x4xf32>
  %kt = onnx.Transpose %kc {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x5x4xf32>) -> tensor<1x2x4x5xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x2x4xf32>, tensor<1x2x4x5xf32>) -> tensor<1x2x2x5xf32>
  %sqrt_d = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %scores = onnx.Div %qk, %sqrt_d : (tensor<1x2x2x5xf32>, tensor<f32>) -> tensor<1x2x2x5xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x2x5xf32>) -> tensor<1x2x2x5xf32>
  %o = onnx.MatMul %p, %vc : (tensor<1x2x2x5xf32>, tensor<1x2x5x4xf32>) -> tensor<1x2x2x4xf32>
  func.return %o : tensor<1x2x2x4xf32>
}

// Decoder with a cache: bottom-right causal mask (query i sees keys j <= i + 3, the default
// offset Sk - Sq, so no causal_offset) and a (B, past + new) padding mask; batch 2.
// CHECK-LABEL: func.func @kv_cache_causal_padding(
// CHECK-NOT:     onnx.Softmax
// CHECK-DAG:     %[[K:[^ ]+]] = onnx.Concat %past_k, %k {axis = 2 : i64}
// CHECK-DAG:     %[[V:[^ ]+]] = onnx.Concat %past_v, %v {axis = 2 : i64}
// CHECK:         %o = cta.attention %q, %[[K]], %[[V]], mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, causal = 1 : i64, mask_kind = "key_padding", ctac.source
// CHECK-SAME:    (tensor<2x2x2x4xf32>, tensor<2x2x5x4xf32>, tensor<2x2x5x4xf32>, tensor<2x5xi64>) -> tensor<2x2x2x4xf32>
// CHECK-NEXT:    func.return %o
func.func @kv_cache_causal_padding(%q: tensor<2x2x2x4xf32>, %k: tensor<2x2x2x4xf32>, %v: tensor<2x2x2x4xf32>, %past_k: tensor<2x2x3x4xf32>, %past_v: tensor<2x2x3x4xf32>, %m: tensor<2x5xi64>) -> tensor<2x2x2x4xf32> {
  %kc = onnx.Concat %past_k, %k {axis = 2 : i64} : (tensor<2x2x3x4xf32>, tensor<2x2x2x4xf32>) -> tensor<2x2x5x4xf32>
  %vc = onnx.Concat %past_v, %v {axis = 2 : i64} : (tensor<2x2x3x4xf32>, tensor<2x2x2x4xf32>) -> tensor<2x2x5x4xf32>
  %kt = onnx.Transpose %kc {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x5x4xf32>) -> tensor<2x2x4x5xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x2x4xf32>, tensor<2x2x4x5xf32>) -> tensor<2x2x2x5xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scaled = onnx.Mul %qk, %s : (tensor<2x2x2x5xf32>, tensor<f32>) -> tensor<2x2x2x5xf32>
  %keep = onnx.Constant dense<[[true, true, true, true, false], [true, true, true, true, true]]> : tensor<2x5xi1>
  %min = onnx.Constant dense<-3.40282347E+38> : tensor<f32>
  %causal = onnx.Where %keep, %scaled, %min : (tensor<2x5xi1>, tensor<2x2x2x5xf32>, tensor<f32>) -> tensor<2x2x2x5xf32>
  %ax = onnx.Constant dense<[1, 2]> : tensor<2xi64>
  %m4 = onnx.Unsqueeze %m, %ax : (tensor<2x5xi64>, tensor<2xi64>) -> tensor<2x1x1x5xi64>
  %mf = onnx.Cast %m4 {to = f32} : (tensor<2x1x1x5xi64>) -> tensor<2x1x1x5xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inv = onnx.Sub %one, %mf : (tensor<f32>, tensor<2x1x1x5xf32>) -> tensor<2x1x1x5xf32>
  %padding = onnx.Mul %inv, %min : (tensor<2x1x1x5xf32>, tensor<f32>) -> tensor<2x1x1x5xf32>
  %scores = onnx.Add %causal, %padding : (tensor<2x2x2x5xf32>, tensor<2x1x1x5xf32>) -> tensor<2x2x2x5xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x2x5xf32>) -> tensor<2x2x2x5xf32>
  %o = onnx.MatMul %p, %vc : (tensor<2x2x2x5xf32>, tensor<2x2x5x4xf32>) -> tensor<2x2x2x4xf32>
  func.return %o : tensor<2x2x2x4xf32>
}

// Top-left aligned causal with a cache (query i sees keys j <= i, as ONNX Attention without
// past does): causal_offset = 0 is spelled out since it differs from Sk - Sq = 3.
// CHECK-LABEL: func.func @kv_cache_causal_top_left(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %{{[^ ]+}}, %{{[^ ]+}} {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, causal = 1 : i64, causal_offset = 0 : i64, ctac.source
// CHECK-NEXT:    func.return %o
func.func @kv_cache_causal_top_left(%q: tensor<1x2x2x4xf32>, %k: tensor<1x2x2x4xf32>, %v: tensor<1x2x2x4xf32>, %past_k: tensor<1x2x3x4xf32>, %past_v: tensor<1x2x3x4xf32>) -> tensor<1x2x2x4xf32> {
  %kc = onnx.Concat %past_k, %k {axis = 2 : i64} : (tensor<1x2x3x4xf32>, tensor<1x2x2x4xf32>) -> tensor<1x2x5x4xf32>
  %vc = onnx.Concat %past_v, %v {axis = 2 : i64} : (tensor<1x2x3x4xf32>, tensor<1x2x2x4xf32>) -> tensor<1x2x5x4xf32>
  %kt = onnx.Transpose %kc {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x5x4xf32>) -> tensor<1x2x4x5xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x2x4xf32>, tensor<1x2x4x5xf32>) -> tensor<1x2x2x5xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scaled = onnx.Mul %qk, %s : (tensor<1x2x2x5xf32>, tensor<f32>) -> tensor<1x2x2x5xf32>
  %keep = onnx.Constant dense<[[true, false, false, false, false], [true, true, false, false, false]]> : tensor<2x5xi1>
  %zero = onnx.Constant dense<0.000000e+00> : tensor<f32>
  %ninf = onnx.Constant dense<"0x000080FF"> : tensor<f32>
  %bias = onnx.Where %keep, %zero, %ninf : (tensor<2x5xi1>, tensor<f32>, tensor<f32>) -> tensor<2x5xf32>
  %scores = onnx.Add %scaled, %bias : (tensor<1x2x2x5xf32>, tensor<2x5xf32>) -> tensor<1x2x2x5xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x2x5xf32>) -> tensor<1x2x2x5xf32>
  %o = onnx.MatMul %p, %vc : (tensor<1x2x2x5xf32>, tensor<1x2x5x4xf32>) -> tensor<1x2x2x4xf32>
  func.return %o : tensor<1x2x2x4xf32>
}

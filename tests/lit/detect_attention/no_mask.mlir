// RUN: ctac-opt %s -p onnx-canonicalize,detect-attention | filecheck %s

// No mask (ViT): nothing added to the scores, so no mask operand and no mask_kind.
// The attribute lists are matched whole: an attribute left out of a CHECK line is absent.

// CHECK-LABEL: func.func @no_mask(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source
// CHECK-NEXT:    func.return %o
func.func @no_mask(%q: tensor<2x2x6x4xf32>, %k: tensor<2x2x6x4xf32>, %v: tensor<2x2x6x4xf32>) -> tensor<2x2x6x4xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x2x6x4xf32>) -> tensor<2x2x4x6xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<2x2x6x4xf32>, tensor<2x2x4x6xf32>) -> tensor<2x2x6x6xf32>
  %sqrt_d = onnx.Constant dense<2.000000e+00> : tensor<f32>
  %scores = onnx.Div %qk, %sqrt_d : (tensor<2x2x6x6xf32>, tensor<f32>) -> tensor<2x2x6x6xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<2x2x6x6xf32>) -> tensor<2x2x6x6xf32>
  %o = onnx.MatMul %p, %v : (tensor<2x2x6x6xf32>, tensor<2x2x6x4xf32>) -> tensor<2x2x6x4xf32>
  func.return %o : tensor<2x2x6x4xf32>
}

// No scaling at all: scale = 1. Softmax written with a positive axis.
// CHECK-LABEL: func.func @no_scale(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 1.000000e+00 : f64, ctac.source
// CHECK-NEXT:    func.return %o
func.func @no_scale(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %scores = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = 3 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

// A zero bias (a constant 0 added to the scores) is no mask either.
// CHECK-LABEL: func.func @zero_bias(
// CHECK-NOT:     onnx.Softmax
// CHECK:         %o = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 1.000000e+00 : f64, ctac.source
// CHECK-NEXT:    func.return %o
func.func @zero_bias(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %zero = onnx.Constant dense<0.000000e+00> : tensor<1x1x4x4xf32>
  %scores = onnx.Add %qk, %zero : (tensor<1x2x4x4xf32>, tensor<1x1x4x4xf32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

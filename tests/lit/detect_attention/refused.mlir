// RUN: ctac-opt %s -p detect-attention -o %t 2>&1 | filecheck %s --check-prefix=WARN
// RUN: filecheck %s --input-file %t

// A refused match is reported, not dropped: ctac-opt prints the refusal on stderr as a
// `warning:` line (as `ctac compile` does) and leaves that subgraph unchanged, while other
// matches of the module are still rewritten.

// Q is a weight, and this module names no weight store (no ctac.weights attribute), so the
// numeric proof cannot evaluate the original subgraph: the match is refused.
// WARN:     warning: attention match refused at p: could not be verified: onnx.Weight needs a module with a ctac.weights attribute
// WARN-NOT: warning:
// CHECK-LABEL: func.func @unprovable(
// CHECK-NOT:     cta.attention
// CHECK:         onnx.Softmax
// CHECK-NOT:     cta.attention
// CHECK:         func.return
func.func @unprovable(%k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %q = onnx.Weight "q" : tensor<1x2x4x4xf32>
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scores = onnx.Mul %qk, %s : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

// The same attention over arguments is proven and rewritten (and prints no warning).
// CHECK-LABEL: func.func @provable(
// CHECK:         cta.attention %q, %k, %v {{{.*}}scale = 5.000000e-01 : f64
// CHECK-NOT:     onnx.Softmax
// CHECK:         func.return
func.func @provable(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %kt = onnx.Transpose %k {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %qk = onnx.MatMul %q, %kt : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %s = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %scores = onnx.Mul %qk, %s : (tensor<1x2x4x4xf32>, tensor<f32>) -> tensor<1x2x4x4xf32>
  %p = onnx.Softmax %scores {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

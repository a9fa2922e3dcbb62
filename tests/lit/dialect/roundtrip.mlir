// The custom syntax round-trips: printing is stable, and a second parse-print changes nothing.
// RUN: ctac-opt %s | ctac-opt | filecheck %s
// RUN: ctac-opt %s -o %t.once.mlir
// RUN: ctac-opt %t.once.mlir -o %t.twice.mlir
// RUN: diff %t.once.mlir %t.twice.mlir

// Module attribute, argument/result attributes, weights by name.
// CHECK:      builtin.module attributes {ctac.weights = "model.onnx"} {
// CHECK-NEXT:   func.func @main(%x: tensor<2x4x8xf32> {onnx.name = "x"}, %ids: tensor<2x4xi64> {onnx.name = "ids"}) -> (tensor<2x4x8xf32> {onnx.name = "y"}, tensor<2x4x4xf32> {onnx.name = "scores"}) {
// CHECK-NEXT:     %table = onnx.Weight "embeddings.weight" : tensor<16x8xf32>
// CHECK-NEXT:     %emb = onnx.Gather %table, %ids {axis = 0 : i64} : (tensor<16x8xf32>, tensor<2x4xi64>) -> tensor<2x4x8xf32>
// CHECK-NEXT:     %sum = onnx.Add %x, %emb : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
// Splat and non-splat dense constants; float properties.
// CHECK-NEXT:     %gamma = onnx.Constant dense<1.000000e+00> : tensor<8xf32>
// CHECK-NEXT:     %beta = onnx.Constant dense<[0.000000e+00, 5.000000e-01, 1.000000e+00, 1.500000e+00, 2.000000e+00, 2.500000e+00, 3.000000e+00, 3.500000e+00]> : tensor<8xf32>
// An optional operand is written with its name.
// CHECK-NEXT:     %ln = onnx.LayerNormalization %sum, %gamma, B %beta {axis = -1 : i64, epsilon = 1.000000e-05 : f32} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
// CHECK-NEXT:     %flat_shape = onnx.Constant dense<8> : tensor<2xi64>
// CHECK-NEXT:     %flat = onnx.Reshape %ln, %flat_shape : (tensor<2x4x8xf32>, tensor<2xi64>) -> tensor<8x8xf32>
// CHECK-NEXT:     %w = onnx.Weight "qkv.weight" : tensor<8x24xf32>
// CHECK-NEXT:     %b = onnx.Weight "qkv.bias" : tensor<24xf32>
// CHECK-NEXT:     %qkv = onnx.Gemm %flat, %w, C %b {alpha = 1.000000e+00 : f32, beta = 1.000000e+00 : f32} : (tensor<8x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<8x24xf32>
// CHECK-NEXT:     %qkv_shape = onnx.Constant dense<[2, 4, 24]> : tensor<3xi64>
// CHECK-NEXT:     %qkv3 = onnx.Reshape %qkv, %qkv_shape : (tensor<8x24xf32>, tensor<3xi64>) -> tensor<2x4x24xf32>
// Several results.
// CHECK-NEXT:     %sizes = onnx.Constant dense<8> : tensor<3xi64>
// CHECK-NEXT:     %q, %k, %v = onnx.Split %qkv3, split %sizes {axis = 2 : i64} : (tensor<2x4x24xf32>, tensor<3xi64>) -> (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>)
// CHECK-NEXT:     %kt = onnx.Transpose %k {perm = array<i64: 0, 2, 1>} : (tensor<2x4x8xf32>) -> tensor<2x8x4xf32>
// CHECK-NEXT:     %raw = onnx.MatMul %q, %kt : (tensor<2x4x8xf32>, tensor<2x8x4xf32>) -> tensor<2x4x4xf32>
// Bool constants, and -inf in hex form (raw little-endian bytes) kept bit for bit.
// CHECK-NEXT:     %keep = onnx.Constant dense<{{\[}}[true, false, false, false], [true, true, false, false], [true, true, true, false], [true, true, true, true]]> : tensor<4x4xi1>
// CHECK-NEXT:     %zero = onnx.Constant dense<0.000000e+00> : tensor<f32>
// CHECK-NEXT:     %ninf = onnx.Constant dense<"0x000080FF"> : tensor<f32>
// CHECK-NEXT:     %mask = onnx.Where %keep, %zero, %ninf : (tensor<4x4xi1>, tensor<f32>, tensor<f32>) -> tensor<4x4xf32>
// CHECK-NEXT:     %masked = onnx.Add %raw, %mask : (tensor<2x4x4xf32>, tensor<4x4xf32>) -> tensor<2x4x4xf32>
// CHECK-NEXT:     %probs = onnx.Softmax %masked {axis = -1 : i64} : (tensor<2x4x4xf32>) -> tensor<2x4x4xf32>
// CHECK-NEXT:     %ctx = onnx.MatMul %probs, %v : (tensor<2x4x4xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
// CHECK-NEXT:     %starts = onnx.Constant dense<0> : tensor<1xi64>
// CHECK-NEXT:     %ends = onnx.Constant dense<4> : tensor<1xi64>
// CHECK-NEXT:     %axes = onnx.Constant dense<2> : tensor<1xi64>
// CHECK-NEXT:     %steps = onnx.Constant dense<2> : tensor<1xi64>
// Two optional operands, and one present without the other.
// CHECK-NEXT:     %half = onnx.Slice %ctx, %starts, %ends, axes %axes, steps %steps : (tensor<2x4x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<2x4x2xf32>
// CHECK-NEXT:     %rest = onnx.Slice %ctx, %starts, %ends, steps %steps : (tensor<2x4x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x4x8xf32>
// Variadic operands.
// CHECK-NEXT:     %cat = onnx.Concat %half, %half, %half, %half {axis = 2 : i64} : (tensor<2x4x2xf32>, tensor<2x4x2xf32>, tensor<2x4x2xf32>, tensor<2x4x2xf32>) -> tensor<2x4x8xf32>
// CHECK-NEXT:     %act = onnx.Gelu %cat {approximate = "tanh"} : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
// CHECK-NEXT:     %out = onnx.Add %act, %rest : (tensor<2x4x8xf32>, tensor<1x4x8xf32>) -> tensor<2x4x8xf32>
// CHECK-NEXT:     func.return %out, %probs : tensor<2x4x8xf32>, tensor<2x4x4xf32>
// CHECK-NEXT:   }
// CHECK-NEXT: }

builtin.module attributes {ctac.weights = "model.onnx"} {
  func.func @main(%x: tensor<2x4x8xf32> {onnx.name = "x"}, %ids: tensor<2x4xi64> {onnx.name = "ids"}) -> (tensor<2x4x8xf32> {onnx.name = "y"}, tensor<2x4x4xf32> {onnx.name = "scores"}) {
    %table = onnx.Weight "embeddings.weight" : tensor<16x8xf32>
    %emb = onnx.Gather %table, %ids {axis = 0 : i64} : (tensor<16x8xf32>, tensor<2x4xi64>) -> tensor<2x4x8xf32>
    %sum = onnx.Add %x, %emb : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
    %gamma = onnx.Constant dense<1.000000e+00> : tensor<8xf32>
    %beta = onnx.Constant dense<[0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]> : tensor<8xf32>
    %ln = onnx.LayerNormalization %sum, %gamma, B %beta {axis = -1 : i64, epsilon = 9.99999974E-6 : f32} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
    %flat_shape = onnx.Constant dense<[8, 8]> : tensor<2xi64>
    %flat = onnx.Reshape %ln, %flat_shape : (tensor<2x4x8xf32>, tensor<2xi64>) -> tensor<8x8xf32>
    %w = onnx.Weight "qkv.weight" : tensor<8x24xf32>
    %b = onnx.Weight "qkv.bias" : tensor<24xf32>
    %qkv = onnx.Gemm %flat, %w, C %b {alpha = 1.000000e+00 : f32, beta = 1.000000e+00 : f32} : (tensor<8x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<8x24xf32>
    %qkv_shape = onnx.Constant dense<[2, 4, 24]> : tensor<3xi64>
    %qkv3 = onnx.Reshape %qkv, %qkv_shape : (tensor<8x24xf32>, tensor<3xi64>) -> tensor<2x4x24xf32>
    %sizes = onnx.Constant dense<8> : tensor<3xi64>
    %q, %k, %v = onnx.Split %qkv3, split %sizes {axis = 2 : i64} : (tensor<2x4x24xf32>, tensor<3xi64>) -> (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>)
    %kt = onnx.Transpose %k {perm = array<i64: 0, 2, 1>} : (tensor<2x4x8xf32>) -> tensor<2x8x4xf32>
    %raw = onnx.MatMul %q, %kt : (tensor<2x4x8xf32>, tensor<2x8x4xf32>) -> tensor<2x4x4xf32>
    %keep = onnx.Constant dense<[[true, false, false, false], [true, true, false, false], [true, true, true, false], [true, true, true, true]]> : tensor<4x4xi1>
    %zero = onnx.Constant dense<0.000000e+00> : tensor<f32>
    %ninf = onnx.Constant dense<"0x000080FF"> : tensor<f32>
    %mask = onnx.Where %keep, %zero, %ninf : (tensor<4x4xi1>, tensor<f32>, tensor<f32>) -> tensor<4x4xf32>
    %masked = onnx.Add %raw, %mask : (tensor<2x4x4xf32>, tensor<4x4xf32>) -> tensor<2x4x4xf32>
    %probs = onnx.Softmax %masked {axis = -1 : i64} : (tensor<2x4x4xf32>) -> tensor<2x4x4xf32>
    %ctx = onnx.MatMul %probs, %v : (tensor<2x4x4xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
    %starts = onnx.Constant dense<0> : tensor<1xi64>
    %ends = onnx.Constant dense<4> : tensor<1xi64>
    %axes = onnx.Constant dense<2> : tensor<1xi64>
    %steps = onnx.Constant dense<2> : tensor<1xi64>
    %half = onnx.Slice %ctx, %starts, %ends, axes %axes, steps %steps : (tensor<2x4x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<2x4x2xf32>
    %rest = onnx.Slice %ctx, %starts, %ends, steps %steps : (tensor<2x4x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x4x8xf32>
    %cat = onnx.Concat %half, %half, %half, %half {axis = 2 : i64} : (tensor<2x4x2xf32>, tensor<2x4x2xf32>, tensor<2x4x2xf32>, tensor<2x4x2xf32>) -> tensor<2x4x8xf32>
    %act = onnx.Gelu %cat {approximate = "tanh"} : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
    %out = onnx.Add %act, %rest : (tensor<2x4x8xf32>, tensor<1x4x8xf32>) -> tensor<2x4x8xf32>
    func.return %out, %probs : tensor<2x4x8xf32>, tensor<2x4x4xf32>
  }
}

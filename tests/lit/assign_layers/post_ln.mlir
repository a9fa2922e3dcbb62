// RUN: ctac-opt %s -p assign-layers | filecheck %s
// RUN: ctac-opt %s -p assign-layers | ctac-opt | filecheck %s
// RUN: ctac-opt %s -p lower-to-isa | filecheck %s --check-prefix=ISA

// A post-LN encoder (BERT): embeddings, then per block attention + residual Add + LayerNorm,
// FFN + residual Add + LayerNorm. Names are generic on purpose (as dynamo writes them): layers
// come from the residual structure. Block k begins after the value that feeds its attention and
// skips around it (%x0, %x1); the FFN and the output LayerNorm of block 0 stay in block 0.
// The weight transpose %wt1 is read only by block 1 but sits inside block 0: ops are never moved,
// so it is block 0's. (Weights and constants get layers too; their printed form omits them.)

// CHECK:      %gather = onnx.Gather {{.*}} {axis = 0 : i64, ctac.layer = #builtin.int<-1>}
// CHECK-NEXT: %x0 = onnx.LayerNormalization {{.*}}ctac.layer = #builtin.int<-1>}
// CHECK-NEXT: %q0 = cta.project {{.*}}ctac.layer = #builtin.int<0>}
// CHECK-NEXT: %k0 = cta.project {{.*}}ctac.layer = #builtin.int<0>}
// CHECK-NEXT: %v0 = cta.project {{.*}}ctac.layer = #builtin.int<0>}
// CHECK-NEXT: %a0 = cta.attention {{.*}}ctac.layer = #builtin.int<0>}
// CHECK:      %r0 = onnx.Add %o0, %x0 {ctac.layer = #builtin.int<0>}
// CHECK-NEXT: %n0 = onnx.LayerNormalization {{.*}}ctac.layer = #builtin.int<0>}
// CHECK:      %wt1 = onnx.Transpose {{.*}}ctac.layer = #builtin.int<0>}
// CHECK:      %s0 = onnx.Add %f0, %n0 {ctac.layer = #builtin.int<0>}
// CHECK-NEXT: %x1 = onnx.LayerNormalization {{.*}}ctac.layer = #builtin.int<0>}
// CHECK-NEXT: %q1 = cta.project {{.*}}ctac.layer = #builtin.int<1>}
// CHECK:      %a1 = cta.attention {{.*}}ctac.layer = #builtin.int<1>}
// CHECK:      %s1 = onnx.Add %f1, %n1 {ctac.layer = #builtin.int<1>}
// CHECK-NEXT: %out = onnx.LayerNormalization {{.*}}ctac.layer = #builtin.int<1>}
// CHECK-NEXT: func.return %out

// Lowered without the pass, the layers are computed on the fly and end every source string.
// ISA:     ctaisa.{{.*}} src "onnx.Gather:gather@L-1"
// ISA:     ctaisa.{{.*}} src "cta.project:q0@L0"
// ISA:     ctaisa.{{.*}} src "cta.attention:a0@L0"
// ISA:     ctaisa.{{.*}} src "onnx.MatMul:f0@L0"
// ISA:     ctaisa.{{.*}} src "cta.project:q1@L1"
// ISA:     ctaisa.{{.*}} src "onnx.LayerNormalization:out@L1"
// ISA-NOT: @L2
// ISA:     ctaisa.halt src "end"

func.func @main(%ids: tensor<1x4xi64> {onnx.name = "ids"}) -> (tensor<1x4x8xf32> {onnx.name = "out"}) {
  %table = onnx.Constant dense<0.5> : tensor<16x8xf32>
  %w = onnx.Constant dense<0.125> : tensor<8x8xf32>
  %b = onnx.Constant dense<0.0> : tensor<8xf32>
  %g = onnx.Constant dense<1.0> : tensor<8xf32>
  %shape = onnx.Constant dense<[1, 4, 8]> : tensor<3xi64>
  %gather = onnx.Gather %table, %ids {axis = 0 : i64} : (tensor<16x8xf32>, tensor<1x4xi64>) -> tensor<1x4x8xf32>
  %x0 = onnx.LayerNormalization %gather, %g, B %b {axis = -1 : i64, epsilon = 9.99999974e-06 : f32} : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %q0 = cta.project %x0, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %k0 = cta.project %x0, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %v0 = cta.project %x0, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %a0 = cta.attention %q0, %k0, %v0 {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64} : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %t0 = onnx.Transpose %a0 {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x2x4x4xf32>) -> tensor<1x4x2x4xf32>
  %m0 = onnx.Reshape %t0, %shape : (tensor<1x4x2x4xf32>, tensor<3xi64>) -> tensor<1x4x8xf32>
  %o0 = onnx.MatMul %m0, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %r0 = onnx.Add %o0, %x0 : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %n0 = onnx.LayerNormalization %r0, %g, B %b {axis = -1 : i64, epsilon = 9.99999974e-06 : f32} : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %e0 = onnx.MatMul %n0, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %h0 = onnx.Gelu %e0 : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %wt1 = onnx.Transpose %w {perm = array<i64: 1, 0>} : (tensor<8x8xf32>) -> tensor<8x8xf32>
  %f0 = onnx.MatMul %h0, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %s0 = onnx.Add %f0, %n0 : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %x1 = onnx.LayerNormalization %s0, %g, B %b {axis = -1 : i64, epsilon = 9.99999974e-06 : f32} : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %q1 = cta.project %x1, %wt1, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %k1 = cta.project %x1, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %v1 = cta.project %x1, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %a1 = cta.attention %q1, %k1, %v1 {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64} : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %t1 = onnx.Transpose %a1 {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x2x4x4xf32>) -> tensor<1x4x2x4xf32>
  %m1 = onnx.Reshape %t1, %shape : (tensor<1x4x2x4xf32>, tensor<3xi64>) -> tensor<1x4x8xf32>
  %o1 = onnx.MatMul %m1, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %r1 = onnx.Add %o1, %x1 : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %n1 = onnx.LayerNormalization %r1, %g, B %b {axis = -1 : i64, epsilon = 9.99999974e-06 : f32} : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %e1 = onnx.MatMul %n1, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %h1 = onnx.Gelu %e1 : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %f1 = onnx.MatMul %h1, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %s1 = onnx.Add %f1, %n1 : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %out = onnx.LayerNormalization %s1, %g, B %b {axis = -1 : i64, epsilon = 9.99999974e-06 : f32} : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  func.return %out : tensor<1x4x8xf32>
}

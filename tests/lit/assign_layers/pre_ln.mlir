// RUN: ctac-opt %s -p assign-layers | filecheck %s
// RUN: ctac-opt %s -p 'cta-compress,assign-layers' | filecheck %s --check-prefix=HEAD
// RUN: ctac-opt %s -p 'cta-compress{granularity=input tau-q=0.5 tau-kv=0.3},assign-layers' | filecheck %s --check-prefix=INPUT
// RUN: ctac-opt %s -p 'cta-compress,assign-layers,lower-to-isa' | filecheck %s --check-prefix=ISA

// A pre-LN encoder (ViT, GPT-2): the residual stream %x0, %x1, %x2 runs through the Adds; each
// block normalises a copy for its attention and its FFN. Block k begins after %xk (the value
// that feeds its attention and skips around it), so each block's LayerNorms are its own, and
// the final LayerNorm after the last FFN residual is the head's: layer 2 = number of blocks.
// The skip operand is on the left of the Adds here, the attention branch on the right.

// CHECK:      %x0 = onnx.Add %patches, %pos {{.*}}ctac.layer = #builtin.int<-1>}
// CHECK-NEXT: %l0 = onnx.LayerNormalization {{.*}}ctac.layer = #builtin.int<0>}
// CHECK:      %a0 = cta.attention {{.*}}ctac.layer = #builtin.int<0>}
// CHECK:      %x1 = onnx.Add %r0, %f0 {ctac.layer = #builtin.int<0>}
// CHECK-NEXT: %l1 = onnx.LayerNormalization {{.*}}ctac.layer = #builtin.int<1>}
// CHECK:      %x2 = onnx.Add %r1, %f1 {ctac.layer = #builtin.int<1>}
// CHECK-NEXT: %out = onnx.LayerNormalization {{.*}}ctac.layer = #builtin.int<2>}

// Compression per head: the clusterings, the pooling of values, the compressed attention and
// the recovery all belong to their attention's block.
// HEAD:      %l0 = onnx.LayerNormalization {{.*}}ctac.layer = #builtin.int<0>}
// HEAD:      cta.cluster %q0 {{.*}}ctac.role = "q", ctac.layer = #builtin.int<0>}
// HEAD-NEXT: cta.cluster %k0 {{.*}}ctac.role = "kv", ctac.layer = #builtin.int<0>}
// HEAD-NEXT: cta.pool %v0, {{.*}}ctac.layer = #builtin.int<0>}
// HEAD-NEXT: cta.compressed_attention {{.*}}ctac.layer = #builtin.int<0>}
// HEAD-NEXT: %a0 = cta.recover {{.*}}ctac.layer = #builtin.int<0>}
// HEAD:      cta.cluster %q1 {{.*}}ctac.layer = #builtin.int<1>}
// HEAD:      %a1 = cta.recover {{.*}}ctac.layer = #builtin.int<1>}
// HEAD:      %out = onnx.LayerNormalization {{.*}}ctac.layer = #builtin.int<2>}

// Compression of the block input: X is clustered, then projected on the centroid tables.
// INPUT:      %l0 = onnx.LayerNormalization {{.*}}ctac.layer = #builtin.int<0>}
// INPUT-NEXT: cta.cluster %l0 {{.*}}ctac.role = "q", ctac.layer = #builtin.int<0>}
// INPUT-NEXT: cta.cluster %l0 {{.*}}ctac.role = "kv", ctac.layer = #builtin.int<0>}
// INPUT-NEXT: %q0_c = cta.project {{.*}}ctac.layer = #builtin.int<0>}
// INPUT-NEXT: %k0_c = cta.project {{.*}}ctac.layer = #builtin.int<0>}
// INPUT-NEXT: %v0_c = cta.project {{.*}}ctac.layer = #builtin.int<0>}
// INPUT-NEXT: cta.compressed_attention {{.*}}ctac.layer = #builtin.int<0>}
// INPUT-NEXT: %a0 = cta.recover {{.*}}ctac.layer = #builtin.int<0>}
// INPUT:      %l1 = onnx.LayerNormalization {{.*}}ctac.layer = #builtin.int<1>}
// INPUT:      %out = onnx.LayerNormalization {{.*}}ctac.layer = #builtin.int<2>}

// The lowering reads the attributes: sources end with the layer.
// ISA:     ctaisa.{{.*}} src "onnx.MatMul:patches@L-1"
// ISA:     ctaisa.{{.*}} src "cta.cluster.q:attn0@L0"
// ISA:     ctaisa.{{.*}} src "cta.cluster.kv:attn0@L0"
// ISA:     ctaisa.{{.*}} src "cta.recover:a0@L0"
// ISA:     ctaisa.{{.*}} src "cta.cluster.q:attn1@L1"
// ISA-NOT: @L2
// ISA:     ctaisa.{{.*}} src "onnx.Add:x2@L1"
// ISA:     ctaisa.{{.*}} src "onnx.LayerNormalization:out@L2"

func.func @main(%pixels: tensor<1x4x8xf32> {onnx.name = "pixels"}) -> (tensor<1x4x8xf32> {onnx.name = "out"}) {
  %w = onnx.Constant dense<0.125> : tensor<8x8xf32>
  %b = onnx.Constant dense<0.0> : tensor<8xf32>
  %g = onnx.Constant dense<1.0> : tensor<8xf32>
  %pos = onnx.Constant dense<0.25> : tensor<1x4x8xf32>
  %shape = onnx.Constant dense<[1, 4, 8]> : tensor<3xi64>
  %patches = onnx.MatMul %pixels, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %x0 = onnx.Add %patches, %pos : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %l0 = onnx.LayerNormalization %x0, %g, B %b {axis = -1 : i64, epsilon = 9.99999974e-06 : f32} : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %q0 = cta.project %l0, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %k0 = cta.project %l0, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %v0 = cta.project %l0, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %a0 = cta.attention %q0, %k0, %v0 {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source = "attn0"} : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %t0 = onnx.Transpose %a0 {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x2x4x4xf32>) -> tensor<1x4x2x4xf32>
  %m0 = onnx.Reshape %t0, %shape : (tensor<1x4x2x4xf32>, tensor<3xi64>) -> tensor<1x4x8xf32>
  %o0 = onnx.MatMul %m0, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %r0 = onnx.Add %x0, %o0 : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %p0 = onnx.LayerNormalization %r0, %g, B %b {axis = -1 : i64, epsilon = 9.99999974e-06 : f32} : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %e0 = onnx.MatMul %p0, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %h0 = onnx.Gelu %e0 : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %f0 = onnx.MatMul %h0, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %x1 = onnx.Add %r0, %f0 : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %l1 = onnx.LayerNormalization %x1, %g, B %b {axis = -1 : i64, epsilon = 9.99999974e-06 : f32} : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %q1 = cta.project %l1, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %k1 = cta.project %l1, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %v1 = cta.project %l1, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %a1 = cta.attention %q1, %k1, %v1 {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source = "attn1"} : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %t1 = onnx.Transpose %a1 {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x2x4x4xf32>) -> tensor<1x4x2x4xf32>
  %m1 = onnx.Reshape %t1, %shape : (tensor<1x4x2x4xf32>, tensor<3xi64>) -> tensor<1x4x8xf32>
  %o1 = onnx.MatMul %m1, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %r1 = onnx.Add %x1, %o1 : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %p1 = onnx.LayerNormalization %r1, %g, B %b {axis = -1 : i64, epsilon = 9.99999974e-06 : f32} : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %e1 = onnx.MatMul %p1, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %h1 = onnx.Gelu %e1 : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %f1 = onnx.MatMul %h1, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %x2 = onnx.Add %r1, %f1 : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %out = onnx.LayerNormalization %x2, %g, B %b {axis = -1 : i64, epsilon = 9.99999974e-06 : f32} : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  func.return %out : tensor<1x4x8xf32>
}

// RUN: ctac-opt %s -p assign-layers | filecheck %s
// RUN: ctac-opt %s -p lower-to-isa | filecheck %s --check-prefix=ISA

// An encoder-decoder model (T5-like: pre-norm RMSNorm, ReLU FFN): one encoder block, then two
// decoder blocks of self-attention, cross-attention and FFN. A cross-attention (%ca0, %ca1: its
// query from the decoder stream, which the attention before it feeds; its keys and values from
// the encoder output %enc, which that attention does not feed) joins the self-attention's block,
// so the five attentions make three blocks: layer 0 (encoder), 1 and 2 (decoder); 3 is the head.
// The encoder's final norm %enc stays in the encoder's last block; the decoder's first block
// begins at the first op after it that feeds the decoder: its embedding lookup %y0.

// CHECK:      %x0 = onnx.Gather {{.*}}ctac.layer = #builtin.int<-1>}
// CHECK-NEXT: %l0 = onnx.RMSNormalization {{.*}}ctac.layer = #builtin.int<0>}
// CHECK:      %a0 = cta.attention {{.*}}ctac.layer = #builtin.int<0>}
// CHECK:      %x1 = onnx.Add %r0, %p0f {ctac.layer = #builtin.int<0>}
// CHECK-NEXT: %enc = onnx.RMSNormalization {{.*}}ctac.layer = #builtin.int<0>}
// CHECK-NEXT: %y0 = onnx.Gather {{.*}}ctac.layer = #builtin.int<1>}
// CHECK:      %da0 = cta.attention {{.*}}ctac.layer = #builtin.int<1>}
// CHECK:      %ck0 = cta.project %enc, {{.*}}ctac.layer = #builtin.int<1>}
// CHECK:      %ca0 = cta.attention {{.*}}ctac.layer = #builtin.int<1>}
// CHECK:      %y1 = onnx.Add %cr0, %dp0f {ctac.layer = #builtin.int<1>}
// CHECK-NEXT: %dl1 = onnx.RMSNormalization {{.*}}ctac.layer = #builtin.int<2>}
// CHECK:      %da1 = cta.attention {{.*}}ctac.layer = #builtin.int<2>}
// CHECK:      %ca1 = cta.attention {{.*}}ctac.layer = #builtin.int<2>}
// CHECK:      %y2 = onnx.Add %cr1, %dp1f {ctac.layer = #builtin.int<2>}
// CHECK-NEXT: %out = onnx.RMSNormalization {{.*}}ctac.layer = #builtin.int<3>}
// CHECK-NEXT: func.return %out

// Lowered without the pass, the same layers end the sources; the profile names layer 0
// "encoder layer 0" and layers 1, 2 "decoder layer 0, 1" (the blocks holding two attentions).
// ISA:     ctaisa.{{.*}} src "onnx.Gather:x0@L-1"
// ISA:     ctaisa.{{.*}} src "cta.attention:enc0@L0"
// ISA:     ctaisa.{{.*}} src "onnx.RMSNormalization:enc@L0"
// ISA:     ctaisa.{{.*}} src "onnx.Gather:y0@L1"
// ISA:     ctaisa.{{.*}} src "cta.attention:dec0.self@L1"
// ISA:     ctaisa.{{.*}} src "cta.attention:dec0.cross@L1"
// ISA:     ctaisa.{{.*}} src "cta.attention:dec1.self@L2"
// ISA:     ctaisa.{{.*}} src "cta.attention:dec1.cross@L2"
// ISA:     ctaisa.{{.*}} src "onnx.RMSNormalization:out@L3"
// ISA:     ctaisa.halt src "end"

func.func @main(%ids: tensor<1x6xi64> {onnx.name = "ids"}, %dids: tensor<1x4xi64> {onnx.name = "dids"}) -> (tensor<1x4x8xf32> {onnx.name = "out"}) {
  %table = onnx.Constant dense<0.5> : tensor<16x8xf32>
  %w = onnx.Constant dense<0.125> : tensor<8x8xf32>
  %b = onnx.Constant dense<0.0> : tensor<8xf32>
  %g = onnx.Constant dense<1.0> : tensor<8xf32>
  %s6 = onnx.Constant dense<[1, 6, 8]> : tensor<3xi64>
  %s4 = onnx.Constant dense<[1, 4, 8]> : tensor<3xi64>
  %x0 = onnx.Gather %table, %ids {axis = 0 : i64} : (tensor<16x8xf32>, tensor<1x6xi64>) -> tensor<1x6x8xf32>
  %l0 = onnx.RMSNormalization %x0, %g {axis = -1 : i64, epsilon = 9.99999997e-07 : f32} : (tensor<1x6x8xf32>, tensor<8xf32>) -> tensor<1x6x8xf32>
  %q0 = cta.project %l0, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x6x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x6x4xf32>
  %k0 = cta.project %l0, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x6x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x6x4xf32>
  %v0 = cta.project %l0, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x6x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x6x4xf32>
  %a0 = cta.attention %q0, %k0, %v0 {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source = "enc0"} : (tensor<1x2x6x4xf32>, tensor<1x2x6x4xf32>, tensor<1x2x6x4xf32>) -> tensor<1x2x6x4xf32>
  %a0t = onnx.Transpose %a0 {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x2x6x4xf32>) -> tensor<1x6x2x4xf32>
  %a0m = onnx.Reshape %a0t, %s6 : (tensor<1x6x2x4xf32>, tensor<3xi64>) -> tensor<1x6x8xf32>
  %a0o = onnx.MatMul %a0m, %w : (tensor<1x6x8xf32>, tensor<8x8xf32>) -> tensor<1x6x8xf32>
  %r0 = onnx.Add %x0, %a0o : (tensor<1x6x8xf32>, tensor<1x6x8xf32>) -> tensor<1x6x8xf32>
  %p0n = onnx.RMSNormalization %r0, %g {axis = -1 : i64, epsilon = 9.99999997e-07 : f32} : (tensor<1x6x8xf32>, tensor<8xf32>) -> tensor<1x6x8xf32>
  %p0e = onnx.MatMul %p0n, %w : (tensor<1x6x8xf32>, tensor<8x8xf32>) -> tensor<1x6x8xf32>
  %p0h = onnx.Relu %p0e : (tensor<1x6x8xf32>) -> tensor<1x6x8xf32>
  %p0f = onnx.MatMul %p0h, %w : (tensor<1x6x8xf32>, tensor<8x8xf32>) -> tensor<1x6x8xf32>
  %x1 = onnx.Add %r0, %p0f : (tensor<1x6x8xf32>, tensor<1x6x8xf32>) -> tensor<1x6x8xf32>
  %enc = onnx.RMSNormalization %x1, %g {axis = -1 : i64, epsilon = 9.99999997e-07 : f32} : (tensor<1x6x8xf32>, tensor<8xf32>) -> tensor<1x6x8xf32>
  %y0 = onnx.Gather %table, %dids {axis = 0 : i64} : (tensor<16x8xf32>, tensor<1x4xi64>) -> tensor<1x4x8xf32>
  %dl0 = onnx.RMSNormalization %y0, %g {axis = -1 : i64, epsilon = 9.99999997e-07 : f32} : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %dq0 = cta.project %dl0, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %dk0 = cta.project %dl0, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %dv0 = cta.project %dl0, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %da0 = cta.attention %dq0, %dk0, %dv0 {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source = "dec0.self"} : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %da0t = onnx.Transpose %da0 {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x2x4x4xf32>) -> tensor<1x4x2x4xf32>
  %da0m = onnx.Reshape %da0t, %s4 : (tensor<1x4x2x4xf32>, tensor<3xi64>) -> tensor<1x4x8xf32>
  %da0o = onnx.MatMul %da0m, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %dr0 = onnx.Add %y0, %da0o : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %cl0 = onnx.RMSNormalization %dr0, %g {axis = -1 : i64, epsilon = 9.99999997e-07 : f32} : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %cq0 = cta.project %cl0, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %ck0 = cta.project %enc, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x6x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x6x4xf32>
  %cv0 = cta.project %enc, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x6x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x6x4xf32>
  %ca0 = cta.attention %cq0, %ck0, %cv0 {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source = "dec0.cross"} : (tensor<1x2x4x4xf32>, tensor<1x2x6x4xf32>, tensor<1x2x6x4xf32>) -> tensor<1x2x4x4xf32>
  %ca0t = onnx.Transpose %ca0 {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x2x4x4xf32>) -> tensor<1x4x2x4xf32>
  %ca0m = onnx.Reshape %ca0t, %s4 : (tensor<1x4x2x4xf32>, tensor<3xi64>) -> tensor<1x4x8xf32>
  %ca0o = onnx.MatMul %ca0m, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %cr0 = onnx.Add %dr0, %ca0o : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %dp0n = onnx.RMSNormalization %cr0, %g {axis = -1 : i64, epsilon = 9.99999997e-07 : f32} : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %dp0e = onnx.MatMul %dp0n, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %dp0h = onnx.Relu %dp0e : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %dp0f = onnx.MatMul %dp0h, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %y1 = onnx.Add %cr0, %dp0f : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %dl1 = onnx.RMSNormalization %y1, %g {axis = -1 : i64, epsilon = 9.99999997e-07 : f32} : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %dq1 = cta.project %dl1, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %dk1 = cta.project %dl1, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %dv1 = cta.project %dl1, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %da1 = cta.attention %dq1, %dk1, %dv1 {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source = "dec1.self"} : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %da1t = onnx.Transpose %da1 {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x2x4x4xf32>) -> tensor<1x4x2x4xf32>
  %da1m = onnx.Reshape %da1t, %s4 : (tensor<1x4x2x4xf32>, tensor<3xi64>) -> tensor<1x4x8xf32>
  %da1o = onnx.MatMul %da1m, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %dr1 = onnx.Add %y1, %da1o : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %cl1 = onnx.RMSNormalization %dr1, %g {axis = -1 : i64, epsilon = 9.99999997e-07 : f32} : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %cq1 = cta.project %cl1, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  %ck1 = cta.project %enc, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x6x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x6x4xf32>
  %cv1 = cta.project %enc, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x6x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x2x6x4xf32>
  %ca1 = cta.attention %cq1, %ck1, %cv1 {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source = "dec1.cross"} : (tensor<1x2x4x4xf32>, tensor<1x2x6x4xf32>, tensor<1x2x6x4xf32>) -> tensor<1x2x4x4xf32>
  %ca1t = onnx.Transpose %ca1 {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x2x4x4xf32>) -> tensor<1x4x2x4xf32>
  %ca1m = onnx.Reshape %ca1t, %s4 : (tensor<1x4x2x4xf32>, tensor<3xi64>) -> tensor<1x4x8xf32>
  %ca1o = onnx.MatMul %ca1m, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %cr1 = onnx.Add %dr1, %ca1o : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %dp1n = onnx.RMSNormalization %cr1, %g {axis = -1 : i64, epsilon = 9.99999997e-07 : f32} : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %dp1e = onnx.MatMul %dp1n, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %dp1h = onnx.Relu %dp1e : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %dp1f = onnx.MatMul %dp1h, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  %y2 = onnx.Add %cr1, %dp1f : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %out = onnx.RMSNormalization %y2, %g {axis = -1 : i64, epsilon = 9.99999997e-07 : f32} : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  func.return %out : tensor<1x4x8xf32>
}

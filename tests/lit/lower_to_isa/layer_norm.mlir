// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// LayerNormalization over the last axis: gamma (and beta) rows go to vec's persistent area once
// (a splat beta is written there from the immediate), then per tile of rows: LOAD, LAYERNORM,
// STORE (the tile's load is issued ahead of the beta row's VEC copy, which it does not depend
// on). Without B, has_beta=0.

// CHECK:      ctaisa.load dst=vec dst_addr=114688 src=0 rows=1 cols=8 stride=8 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=16 rows=6 cols=8 stride=8 narrow=0
// CHECK-NEXT: ctaisa.vec op=copy dst=vec dst_addr=114696 a=act a_addr=0 b=act b_addr=0 rows=1 cols=8 bcast=imm imm=0.5
// CHECK-NEXT: ctaisa.layernorm dst=vec dst_addr=57344 src=act src_addr=65536 gamma=vec gamma_addr=114688 beta=vec beta_addr=114696 has_beta=1 rows=6 cols=8 eps=9.999999747378752e-06
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=64 rows=6 cols=8 stride=8 src_stride=0
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=114688 src=0 rows=1 cols=8 stride=8 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=16 rows=6 cols=8 stride=8 narrow=0
// CHECK-NEXT: ctaisa.layernorm dst=vec dst_addr=0 src=act src_addr=0 gamma=vec gamma_addr=114688 beta=vec beta_addr=0 has_beta=0 rows=6 cols=8 eps=0.0010000000474974513
// CHECK-NEXT: ctaisa.store src=vec src_addr=0 dst=112 rows=6 cols=8 stride=8 src_stride=0
// CHECK-NEXT: ctaisa.halt
func.func @main(%x: tensor<2x3x8xf32> {onnx.name = "x"}) -> (tensor<2x3x8xf32> {onnx.name = "y"}, tensor<2x3x8xf32> {onnx.name = "z"}) {
  %gamma = onnx.Constant dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]> : tensor<8xf32>
  %beta = onnx.Constant dense<5.000000e-01> : tensor<8xf32>
  %y = onnx.LayerNormalization %x, %gamma, B %beta {axis = -1 : i64, epsilon = 1.000000e-05 : f32} : (tensor<2x3x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x3x8xf32>
  %z = onnx.LayerNormalization %x, %gamma {axis = -1 : i64, epsilon = 1.000000e-03 : f32} : (tensor<2x3x8xf32>, tensor<8xf32>) -> tensor<2x3x8xf32>
  func.return %y, %z : tensor<2x3x8xf32>, tensor<2x3x8xf32>
}

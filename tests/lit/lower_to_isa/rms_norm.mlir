// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// RMSNormalization lowers like LayerNormalization (the gamma row to vec's persistent area once,
// then per tile of rows: LOAD, LAYERNORM, STORE), with LAYERNORM's rms flag set and no bias:
// one instruction per row tile, which the cost model charges two passes instead of three.

// CHECK:      ctaisa.load dst=vec dst_addr=114688 src=0 rows=1 cols=8 stride=8 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=8 rows=6 cols=8 stride=8 narrow=0
// CHECK-NEXT: ctaisa.layernorm dst=vec dst_addr=57344 src=act src_addr=65536 gamma=vec gamma_addr=114688 beta=vec beta_addr=0 has_beta=0 rows=6 cols=8 eps=9.999999974752427e-07 rms=1
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=56 rows=6 cols=8 stride=8
// CHECK-NEXT: ctaisa.halt
func.func @main(%x: tensor<2x3x8xf32> {onnx.name = "x"}) -> (tensor<2x3x8xf32> {onnx.name = "y"}) {
  %gamma = onnx.Constant dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]> : tensor<8xf32>
  %y = onnx.RMSNormalization %x, %gamma {axis = -1 : i64, epsilon = 1.000000e-06 : f32} : (tensor<2x3x8xf32>, tensor<8xf32>) -> tensor<2x3x8xf32>
  func.return %y : tensor<2x3x8xf32>
}

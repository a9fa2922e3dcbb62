// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// CumSum over the last axis: VEC cumsum scans each row of the tile.

// CHECK:      ctaisa.load dst=act dst_addr=65536 src=1 rows=2 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.vec op=cumsum dst=vec dst_addr=57344 a=act a_addr=65536 {{.*}} rows=2 cols=5
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=11 rows=2 cols=5 stride=5
// CHECK-NEXT: ctaisa.halt
func.func @main(%x: tensor<2x5xi64> {onnx.name = "x"}) -> (tensor<2x5xi64> {onnx.name = "c"}) {
  %axis = onnx.Constant dense<1> : tensor<i64>
  %c = onnx.CumSum %x, %axis : (tensor<2x5xi64>, tensor<i64>) -> tensor<2x5xi64>
  func.return %c : tensor<2x5xi64>
}

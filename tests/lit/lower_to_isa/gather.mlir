// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// Gather on axis 0 (an embedding lookup): the 6 token ids go to vec as a column, GATHER copies
// their rows of the 5 x 4 table (DRAM 0) into act, one STORE writes the (6 x 4) result.

// CHECK:      ctaisa.data at=0 size=20
// CHECK:      ctaisa.load dst=vec dst_addr=57344 src=20 rows=6 cols=1 stride=1 narrow=0
// CHECK-NEXT: ctaisa.gather dst=act dst_addr=65536 table=0 idx=vec idx_addr=57344 rows=6 cols=4 table_rows=5
// CHECK-NEXT: ctaisa.store src=act src_addr=65536 dst=26 rows=6 cols=4 stride=4
// CHECK-NEXT: ctaisa.halt
func.func @main(%ids: tensor<2x3xi64> {onnx.name = "ids"}) -> (tensor<2x3x4xf32> {onnx.name = "emb"}) {
  %table = onnx.Constant dense<[[0.0, 0.1, 0.2, 0.3], [1.0, 1.1, 1.2, 1.3], [2.0, 2.1, 2.2, 2.3], [3.0, 3.1, 3.2, 3.3], [4.0, 4.1, 4.2, 4.3]]> : tensor<5x4xf32>
  %emb = onnx.Gather %table, %ids {axis = 0 : i64} : (tensor<5x4xf32>, tensor<2x3xi64>) -> tensor<2x3x4xf32>
  func.return %emb : tensor<2x3x4xf32>
}

// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// ReduceMean over the last axis: REDUCE op=mean of rows of 5, one result per row stored as a
// column (cols=1).

// CHECK:      ctaisa.load dst=act dst_addr=65536 src=1 rows=6 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.reduce op=mean dst=vec dst_addr=57344 src=act src_addr=65536 rows=6 cols=5
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=31 rows=6 cols=1 stride=1
// CHECK-NEXT: ctaisa.halt
func.func @main(%x: tensor<2x3x5xf32> {onnx.name = "x"}) -> (tensor<2x3x1xf32> {onnx.name = "m"}) {
  %axes = onnx.Constant dense<-1> : tensor<1xi64>
  %m = onnx.ReduceMean %x, axes %axes : (tensor<2x3x5xf32>, tensor<1xi64>) -> tensor<2x3x1xf32>
  func.return %m : tensor<2x3x1xf32>
}

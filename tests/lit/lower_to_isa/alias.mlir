// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// Reshape is an alias: it emits no instruction. The Relu reads the argument x directly (DRAM 0)
// with the reshaped tiling (6 rows of 2), and the output "flat", a Reshape of y, is y's own DRAM
// region (both symbols at 12).

// CHECK:      ctaisa.symbol input "x" float32 [2, 6] at=0
// CHECK-NEXT: ctaisa.symbol output "y" float32 [2, 3, 2] at=12
// CHECK-NEXT: ctaisa.symbol output "flat" float32 [12] at=12
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=0 rows=6 cols=2 stride=2 narrow=0
// CHECK-NEXT: ctaisa.vec op=relu dst=vec dst_addr=57344 a=act a_addr=65536 {{.*}} rows=6 cols=2
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=12 rows=6 cols=2 stride=2
// CHECK-NEXT: ctaisa.halt
func.func @main(%x: tensor<2x6xf32> {onnx.name = "x"}) -> (tensor<2x3x2xf32> {onnx.name = "y"}, tensor<12xf32> {onnx.name = "flat"}) {
  %shape = onnx.Constant dense<[2, 3, 2]> : tensor<3xi64>
  %r = onnx.Reshape %x, %shape : (tensor<2x6xf32>, tensor<3xi64>) -> tensor<2x3x2xf32>
  %y = onnx.Relu %r : (tensor<2x3x2xf32>) -> tensor<2x3x2xf32>
  %flat_shape = onnx.Constant dense<[12]> : tensor<1xi64>
  %flat = onnx.Reshape %y, %flat_shape : (tensor<2x3x2xf32>, tensor<1xi64>) -> tensor<12xf32>
  func.return %y, %flat : tensor<2x3x2xf32>, tensor<12xf32>
}

// RUN: not ctac-opt %s 2>&1 | filecheck %s

// CHECK-NOT: Traceback
// CHECK:     error: onnx.Add: shapes (2, 16, 64) and (16, 32) do not broadcast
// CHECK-NOT: Traceback

func.func @main(%x: tensor<2x16x64xf32>, %b: tensor<16x32xf32>) -> tensor<2x16x64xf32> {
  %y = onnx.Add %x, %b : (tensor<2x16x64xf32>, tensor<16x32xf32>) -> tensor<2x16x64xf32>
  func.return %y : tensor<2x16x64xf32>
}

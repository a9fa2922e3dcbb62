// Syntax errors of the custom format: one `error:` line with file:line:column.
// RUN: not ctac-opt %s 2>&1 | filecheck %s

// CHECK-NOT: Traceback
// CHECK:     error: {{.*}}parse_error.mlir:12:{{[0-9]+}}: onnx.Slice: missing operand 'ends'
// CHECK-NOT: Traceback

func.func @main(%x: tensor<2x16xf32>) -> tensor<2x8xf32> {
  %starts = onnx.Constant dense<0> : tensor<1xi64>
  %axes = onnx.Constant dense<1> : tensor<1xi64>
  // `ends` is required and positional; only axes and steps are keyworded.
  %y = onnx.Slice %x, %starts, axes %axes : (tensor<2x16xf32>, tensor<1xi64>, tensor<1xi64>) -> tensor<2x8xf32>
  func.return %y : tensor<2x8xf32>
}

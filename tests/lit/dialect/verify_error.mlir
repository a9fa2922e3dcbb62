// A module that does not verify: one `error:` line naming the op and the rule, a failing exit
// status, no traceback, no output module.
// RUN: not ctac-opt %s 2>&1 | filecheck %s
// RUN: not ctac-opt %s -p onnx-canonicalize 2>&1 | filecheck %s

// CHECK-NOT:  Traceback
// CHECK-NOT:  builtin.module
// CHECK:      error: onnx.Transpose: perm [0, 2, 2] is not a permutation of 3 axes
// CHECK-NOT:  Traceback
// CHECK-NOT:  builtin.module

func.func @main(%x: tensor<2x16x64xf32>) -> tensor<2x64x16xf32> {
  %y = onnx.Transpose %x {perm = array<i64: 0, 2, 2>} : (tensor<2x16x64xf32>) -> tensor<2x64x16xf32>
  func.return %y : tensor<2x64x16xf32>
}

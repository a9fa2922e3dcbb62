// RUN: ctac-opt %s -p onnx-canonicalize | filecheck %s

// The dynamic-shape idiom of exported models: read the shape, pick dimensions, rebuild a target
// shape. With static shapes it all folds into the Reshape's constant operand.

// CHECK-LABEL: func.func @main(%x: tensor<2x16x64xf32>) -> tensor<2x16x4x16xf32> {
// CHECK-NEXT:    %[[SHAPE:[^ ]+]] = onnx.Constant dense<[2, 16, 4, 16]> : tensor<4xi64>
// CHECK-NEXT:    %y = onnx.Reshape %x, %[[SHAPE]] : (tensor<2x16x64xf32>, tensor<4xi64>) -> tensor<2x16x4x16xf32>
// CHECK-NEXT:    func.return %y : tensor<2x16x4x16xf32>
// CHECK-NEXT:  }
// CHECK-NOT:   onnx.Shape
// CHECK-NOT:   onnx.Gather
// CHECK-NOT:   onnx.Unsqueeze
// CHECK-NOT:   onnx.Concat
func.func @main(%x: tensor<2x16x64xf32>) -> tensor<2x16x4x16xf32> {
  %shape = onnx.Shape %x : (tensor<2x16x64xf32>) -> tensor<3xi64>
  %i0 = onnx.Constant dense<0> : tensor<i64>
  %i1 = onnx.Constant dense<1> : tensor<i64>
  %d0 = onnx.Gather %shape, %i0 {axis = 0 : i64} : (tensor<3xi64>, tensor<i64>) -> tensor<i64>
  %d1 = onnx.Gather %shape, %i1 {axis = 0 : i64} : (tensor<3xi64>, tensor<i64>) -> tensor<i64>
  %ax = onnx.Constant dense<0> : tensor<1xi64>
  %u0 = onnx.Unsqueeze %d0, %ax : (tensor<i64>, tensor<1xi64>) -> tensor<1xi64>
  %u1 = onnx.Unsqueeze %d1, %ax : (tensor<i64>, tensor<1xi64>) -> tensor<1xi64>
  %heads = onnx.Constant dense<[4, 16]> : tensor<2xi64>
  %new = onnx.Concat %u0, %u1, %heads {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>, tensor<2xi64>) -> tensor<4xi64>
  %y = onnx.Reshape %x, %new : (tensor<2x16x64xf32>, tensor<4xi64>) -> tensor<2x16x4x16xf32>
  func.return %y : tensor<2x16x4x16xf32>
}

// RUN: ctac-opt %s -p legalize-for-isa | filecheck %s

// A reduction over the sequence axis (a mean-pooling head) becomes a transpose that puts the
// reduced axis last, a reshape, the same reduction over the last axis, and a reshape back.
// CHECK-LABEL: func.func @pool(%x: tensor<2x5x8xf32>) -> tensor<2x8xf32> {
// CHECK-NEXT:    %[[T:.*]] = onnx.Transpose %x {perm = array<i64: 0, 2, 1>} : (tensor<2x5x8xf32>) -> tensor<2x8x5xf32>
// CHECK-NEXT:    %[[A:.*]] = onnx.Constant dense<-1> : tensor<1xi64>
// CHECK-NEXT:    %[[R:.*]] = onnx.ReduceSum %[[T]], axes %[[A]] {keepdims = 0 : i64} : (tensor<2x8x5xf32>, tensor<1xi64>) -> tensor<2x8xf32>
// CHECK-NEXT:    func.return %[[R]] : tensor<2x8xf32>
func.func @pool(%x: tensor<2x5x8xf32>) -> tensor<2x8xf32> {
  %axes = onnx.Constant dense<1> : tensor<1xi64>
  %y = onnx.ReduceSum %x, axes %axes {keepdims = 0 : i64} : (tensor<2x5x8xf32>, tensor<1xi64>) -> tensor<2x8xf32>
  func.return %y : tensor<2x8xf32>
}

// keepdims = 1 over two axes: the reduced result is reshaped back to keep them as ones.
// CHECK-LABEL: func.func @keep(
// CHECK:         onnx.Transpose %x {perm = array<i64: 1, 0, 2>}
// CHECK:         onnx.Reshape %{{.*}} : (tensor<5x2x8xf32>, tensor<2xi64>) -> tensor<5x16xf32>
// CHECK:         onnx.ReduceMean %{{.*}} : (tensor<5x16xf32>, tensor<1xi64>) -> tensor<5xf32>
// CHECK:         %[[K:.*]] = onnx.Reshape %{{.*}} : (tensor<5xf32>, tensor<3xi64>) -> tensor<1x5x1xf32>
// CHECK-NEXT:    func.return %[[K]]
func.func @keep(%x: tensor<2x5x8xf32>) -> tensor<1x5x1xf32> {
  %axes = onnx.Constant dense<[0, -1]> : tensor<2xi64>
  %y = onnx.ReduceMean %x, axes %axes : (tensor<2x5x8xf32>, tensor<2xi64>) -> tensor<1x5x1xf32>
  func.return %y : tensor<1x5x1xf32>
}

// A reduction over the last axis is what the vector unit does: unchanged.
// CHECK-LABEL: func.func @last(
// CHECK-NEXT:    %{{.*}} = onnx.Constant
// CHECK-NEXT:    %y = onnx.ReduceMax %x, axes
// CHECK-NEXT:    func.return %y
func.func @last(%x: tensor<2x5x8xf32>) -> tensor<2x5xf32> {
  %axes = onnx.Constant dense<-1> : tensor<1xi64>
  %y = onnx.ReduceMax %x, axes %axes {keepdims = 0 : i64} : (tensor<2x5x8xf32>, tensor<1xi64>) -> tensor<2x5xf32>
  func.return %y : tensor<2x5xf32>
}

// Clip(x, lo, hi) is Min(Max(x, lo), hi); a missing bound is left out.
// CHECK-LABEL: func.func @clip(
// CHECK-NEXT:    %{{.*}} = onnx.Constant
// CHECK-NEXT:    %{{.*}} = onnx.Constant
// CHECK-NEXT:    %[[M:.*]] = onnx.Max %x, %{{.*}} : (tensor<4x8xf32>, tensor<f32>) -> tensor<4x8xf32>
// CHECK-NEXT:    %{{.*}} = onnx.Min %[[M]], %{{.*}} : (tensor<4x8xf32>, tensor<f32>) -> tensor<4x8xf32>
// CHECK-LABEL: func.func @clip_low(
// CHECK-NEXT:    %{{.*}} = onnx.Constant
// CHECK-NEXT:    %[[L:.*]] = onnx.Max %x, %{{.*}}
// CHECK-NEXT:    func.return %[[L]]
func.func @clip(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %lo = onnx.Constant dense<-1.0> : tensor<f32>
  %hi = onnx.Constant dense<1.0> : tensor<f32>
  %y = onnx.Clip %x, min %lo, max %hi : (tensor<4x8xf32>, tensor<f32>, tensor<f32>) -> tensor<4x8xf32>
  func.return %y : tensor<4x8xf32>
}
func.func @clip_low(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %lo = onnx.Constant dense<1.0e-09> : tensor<f32>
  %y = onnx.Clip %x, min %lo : (tensor<4x8xf32>, tensor<f32>) -> tensor<4x8xf32>
  func.return %y : tensor<4x8xf32>
}

// A transpose moving the input's last axis to the front, (q, k, heads) -> (heads, q, k), is
// done in two: the last axis to second-to-last (a row swap), then the rest with rows kept.
// CHECK-LABEL: func.func @bias_layout(
// CHECK-NEXT:    %[[A:.*]] = onnx.Transpose %x {perm = array<i64: 0, 2, 1>} : (tensor<4x5x3xf32>) -> tensor<4x3x5xf32>
// CHECK-NEXT:    %[[B:.*]] = onnx.Transpose %[[A]] {perm = array<i64: 1, 0, 2>} : (tensor<4x3x5xf32>) -> tensor<3x4x5xf32>
// CHECK-NEXT:    func.return %[[B]]
func.func @bias_layout(%x: tensor<4x5x3xf32>) -> tensor<3x4x5xf32> {
  %y = onnx.Transpose %x {perm = array<i64: 2, 0, 1>} : (tensor<4x5x3xf32>) -> tensor<3x4x5xf32>
  func.return %y : tensor<3x4x5xf32>
}

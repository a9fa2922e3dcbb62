// RUN: ctac-opt %s -p onnx-canonicalize | filecheck %s

// Generators and elementwise ops over constants become one onnx.Constant; ops that read a
// function argument stay.

// CHECK-LABEL: func.func @constant_of_shape(
// CHECK-NEXT:    %ones = onnx.Constant dense<1.000000e+00> : tensor<2x3xf32>
// CHECK-NEXT:    %y = onnx.Add %x, %ones : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
// CHECK-NEXT:    func.return %y
func.func @constant_of_shape(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %shape = onnx.Constant dense<[2, 3]> : tensor<2xi64>
  %ones = onnx.ConstantOfShape %shape {value = dense<1.0> : tensor<1xf32>} : (tensor<2xi64>) -> tensor<2x3xf32>
  %y = onnx.Add %x, %ones : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}

// CHECK-LABEL: func.func @range(
// CHECK-NEXT:    %r = onnx.Constant dense<[0, 1, 2, 3]> : tensor<4xi64>
// CHECK-NEXT:    func.return %r : tensor<4xi64>
func.func @range() -> tensor<4xi64> {
  %start = onnx.Constant dense<0> : tensor<i64>
  %limit = onnx.Constant dense<4> : tensor<i64>
  %delta = onnx.Constant dense<1> : tensor<i64>
  %r = onnx.Range %start, %limit, %delta : (tensor<i64>, tensor<i64>, tensor<i64>) -> tensor<4xi64>
  func.return %r : tensor<4xi64>
}

// CHECK-LABEL: func.func @expand(
// CHECK-NEXT:    %rows = onnx.Constant dense<{{\[}}[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]]> : tensor<3x4xi64>
// CHECK-NEXT:    %y = onnx.Add %x, %rows
func.func @expand(%x: tensor<3x4xi64>) -> tensor<3x4xi64> {
  %row = onnx.Constant dense<[[0, 1, 2, 3]]> : tensor<1x4xi64>
  %shape = onnx.Constant dense<[3, 4]> : tensor<2xi64>
  %rows = onnx.Expand %row, %shape : (tensor<1x4xi64>, tensor<2xi64>) -> tensor<3x4xi64>
  %y = onnx.Add %x, %rows : (tensor<3x4xi64>, tensor<3x4xi64>) -> tensor<3x4xi64>
  func.return %y : tensor<3x4xi64>
}

// A causal mask the way exporters build it: ConstantOfShape -> Trilu -> Cast -> Where.
// CHECK-LABEL: func.func @causal_mask(
// CHECK-NEXT:    %mask = onnx.Constant dense<{{\[}}[0.000000e+00, -1.000000e+04, -1.000000e+04], [0.000000e+00, 0.000000e+00, -1.000000e+04], [0.000000e+00, 0.000000e+00, 0.000000e+00]]> : tensor<3x3xf32>
// CHECK-NEXT:    %y = onnx.Add %scores, %mask : (tensor<2x3x3xf32>, tensor<3x3xf32>) -> tensor<2x3x3xf32>
// CHECK-NEXT:    func.return %y
func.func @causal_mask(%scores: tensor<2x3x3xf32>) -> tensor<2x3x3xf32> {
  %shape = onnx.Constant dense<[3, 3]> : tensor<2xi64>
  %ones = onnx.ConstantOfShape %shape {value = dense<1> : tensor<1xi64>} : (tensor<2xi64>) -> tensor<3x3xi64>
  %lower = onnx.Trilu %ones {upper = 0 : i64} : (tensor<3x3xi64>) -> tensor<3x3xi64>
  %keep = onnx.Cast %lower {to = i1} : (tensor<3x3xi64>) -> tensor<3x3xi1>
  %zero = onnx.Constant dense<0.0> : tensor<f32>
  %neg = onnx.Constant dense<-1.0e+04> : tensor<f32>
  %mask = onnx.Where %keep, %zero, %neg : (tensor<3x3xi1>, tensor<f32>, tensor<f32>) -> tensor<3x3xf32>
  %y = onnx.Add %scores, %mask : (tensor<2x3x3xf32>, tensor<3x3xf32>) -> tensor<2x3x3xf32>
  func.return %y : tensor<2x3x3xf32>
}

// An extended attention mask: Cast of an int mask to float, (1 - m) * -10000.
// CHECK-LABEL: func.func @cast(
// CHECK-NEXT:    %bias = onnx.Constant dense<[-0.000000e+00, -0.000000e+00, -1.000000e+04]> : tensor<3xf32>
// CHECK-NEXT:    %y = onnx.Add %x, %bias
// CHECK-NEXT:    func.return %y
func.func @cast(%x: tensor<3xf32>) -> tensor<3xf32> {
  %mask = onnx.Constant dense<[1, 1, 0]> : tensor<3xi64>
  %m = onnx.Cast %mask {to = f32} : (tensor<3xi64>) -> tensor<3xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inv = onnx.Sub %one, %m : (tensor<f32>, tensor<3xf32>) -> tensor<3xf32>
  %big = onnx.Constant dense<-1.000000e+04> : tensor<f32>
  %bias = onnx.Mul %inv, %big : (tensor<3xf32>, tensor<f32>) -> tensor<3xf32>
  %y = onnx.Add %x, %bias : (tensor<3xf32>, tensor<3xf32>) -> tensor<3xf32>
  func.return %y : tensor<3xf32>
}

// Infinities fold too, and print as a hex string that parses back to the same bits.
// CHECK-LABEL: func.func @infinities(
// CHECK-NEXT:    %y = onnx.Constant dense<"0x000080FF0000807F"> : tensor<2xf32>
// CHECK-NEXT:    func.return %y
func.func @infinities() -> tensor<2xf32> {
  %a = onnx.Constant dense<[-1.0, 1.0]> : tensor<2xf32>
  %z = onnx.Constant dense<0.0> : tensor<f32>
  %y = onnx.Div %a, %z : (tensor<2xf32>, tensor<f32>) -> tensor<2xf32>
  func.return %y : tensor<2xf32>
}

// Nothing to fold: every op reads the argument.
// CHECK-LABEL: func.func @not_constant(
// CHECK-NEXT:    %m = onnx.Cast %x {to = f32} : (tensor<3xi64>) -> tensor<3xf32>
// CHECK-NEXT:    func.return %m
func.func @not_constant(%x: tensor<3xi64>) -> tensor<3xf32> {
  %m = onnx.Cast %x {to = f32} : (tensor<3xi64>) -> tensor<3xf32>
  func.return %m : tensor<3xf32>
}

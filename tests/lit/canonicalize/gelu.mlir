// RUN: ctac-opt %s -p onnx-canonicalize | filecheck %s

// The erf form 0.5 * x * (1 + erf(x / sqrt(2))) becomes onnx.Gelu without attributes.
// CHECK-LABEL: func.func @erf_form(%x: tensor<2x16xf32>) -> tensor<2x16xf32> {
// CHECK-NEXT:    %y = onnx.Gelu %x : (tensor<2x16xf32>) -> tensor<2x16xf32>
// CHECK-NEXT:    func.return %y : tensor<2x16xf32>
// CHECK-NEXT:  }
func.func @erf_form(%x: tensor<2x16xf32>) -> tensor<2x16xf32> {
  %sqrt2 = onnx.Constant dense<1.41421354> : tensor<f32>
  %scaled = onnx.Div %x, %sqrt2 : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
  %erf = onnx.Erf %scaled : (tensor<2x16xf32>) -> tensor<2x16xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inner = onnx.Add %erf, %one : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
  %xi = onnx.Mul %x, %inner : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
  %half = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %y = onnx.Mul %xi, %half : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
  func.return %y : tensor<2x16xf32>
}

// Also with x * (1/sqrt(2)) and the 0.5 applied to x first.
// CHECK-LABEL: func.func @erf_form_mul(
// CHECK-NEXT:    %y = onnx.Gelu %x : (tensor<8xf32>) -> tensor<8xf32>
// CHECK-NEXT:    func.return %y
func.func @erf_form_mul(%x: tensor<8xf32>) -> tensor<8xf32> {
  %rsqrt2 = onnx.Constant dense<0.707106769> : tensor<f32>
  %scaled = onnx.Mul %rsqrt2, %x : (tensor<f32>, tensor<8xf32>) -> tensor<8xf32>
  %erf = onnx.Erf %scaled : (tensor<8xf32>) -> tensor<8xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inner = onnx.Add %one, %erf : (tensor<f32>, tensor<8xf32>) -> tensor<8xf32>
  %half = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %hx = onnx.Mul %x, %half : (tensor<8xf32>, tensor<f32>) -> tensor<8xf32>
  %y = onnx.Mul %hx, %inner : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
  func.return %y : tensor<8xf32>
}

// The tanh form 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))) becomes
// onnx.Gelu {approximate = "tanh"}.
// CHECK-LABEL: func.func @tanh_form(%x: tensor<2x16xf32>) -> tensor<2x16xf32> {
// CHECK-NEXT:    %y = onnx.Gelu %x {approximate = "tanh"} : (tensor<2x16xf32>) -> tensor<2x16xf32>
// CHECK-NEXT:    func.return %y : tensor<2x16xf32>
// CHECK-NEXT:  }
func.func @tanh_form(%x: tensor<2x16xf32>) -> tensor<2x16xf32> {
  %three = onnx.Constant dense<3.000000e+00> : tensor<f32>
  %cube = onnx.Pow %x, %three : (tensor<2x16xf32>, tensor<f32>) -> tensor<2x16xf32>
  %c = onnx.Constant dense<4.471500e-02> : tensor<f32>
  %cubic = onnx.Mul %c, %cube : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
  %sum = onnx.Add %x, %cubic : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
  %k = onnx.Constant dense<0.797884583> : tensor<f32>
  %arg = onnx.Mul %k, %sum : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
  %tanh = onnx.Tanh %arg : (tensor<2x16xf32>) -> tensor<2x16xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inner = onnx.Add %one, %tanh : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
  %half = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %hx = onnx.Mul %half, %x : (tensor<f32>, tensor<2x16xf32>) -> tensor<2x16xf32>
  %y = onnx.Mul %hx, %inner : (tensor<2x16xf32>, tensor<2x16xf32>) -> tensor<2x16xf32>
  func.return %y : tensor<2x16xf32>
}

// GPT-2's cube as x * x * x.
// CHECK-LABEL: func.func @tanh_form_mul_cube(
// CHECK-NEXT:    %y = onnx.Gelu %x {approximate = "tanh"} : (tensor<8xf32>) -> tensor<8xf32>
// CHECK-NEXT:    func.return %y
func.func @tanh_form_mul_cube(%x: tensor<8xf32>) -> tensor<8xf32> {
  %sq = onnx.Mul %x, %x : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
  %cube = onnx.Mul %sq, %x : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
  %c = onnx.Constant dense<4.471500e-02> : tensor<f32>
  %cubic = onnx.Mul %cube, %c : (tensor<8xf32>, tensor<f32>) -> tensor<8xf32>
  %sum = onnx.Add %cubic, %x : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
  %k = onnx.Constant dense<0.797884583> : tensor<f32>
  %arg = onnx.Mul %sum, %k : (tensor<8xf32>, tensor<f32>) -> tensor<8xf32>
  %tanh = onnx.Tanh %arg : (tensor<8xf32>) -> tensor<8xf32>
  %one = onnx.Constant dense<1.000000e+00> : tensor<f32>
  %inner = onnx.Add %tanh, %one : (tensor<8xf32>, tensor<f32>) -> tensor<8xf32>
  %xi = onnx.Mul %x, %inner : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
  %half = onnx.Constant dense<5.000000e-01> : tensor<f32>
  %y = onnx.Mul %half, %xi : (tensor<f32>, tensor<8xf32>) -> tensor<8xf32>
  func.return %y : tensor<8xf32>
}

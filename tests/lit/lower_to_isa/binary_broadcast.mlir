// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// Elementwise binary ops, one per broadcast form of operand b. The output is tiled as
// (rows x last axis) = (6 x 4); a full operand is loaded into its own buffer (a: act, b: wgt),
// a row (bias) or scalar operand is loaded once into vec's persistent area (114688), a column
// operand is loaded one element per row, and a splat constant becomes the immediate.

// Full: both operands loaded as (6 x 4) tiles.
// CHECK:      ctaisa.load dst=act dst_addr=65536 src=4 rows=6 cols=4 stride=4 narrow=0 src "{{[^"]*}}full"
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=65536 src=28 rows=6 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.vec op=sub dst=vec dst_addr=57344 a=act a_addr=65536 b=wgt b_addr=65536 rows=6 cols=4 bcast=full
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=63 rows=6 cols=4 stride=4

// Row vector (a bias over the last axis).
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=114688 src=52 rows=1 cols=4 stride=4 narrow=0 src "{{[^"]*}}bias"
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=4 rows=6 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.vec op=add dst=vec dst_addr=0 a=act a_addr=0 b=vec b_addr=114688 rows=6 cols=4 bcast=row
// CHECK-NEXT: ctaisa.store src=vec src_addr=0 dst=87 rows=6 cols=4 stride=4

// Column (2, 3, 1): one element per output row.
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=4 rows=6 cols=4 stride=4 narrow=0 src "{{[^"]*}}column"
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=65536 src=56 rows=6 cols=1 stride=1 narrow=0
// CHECK-NEXT: ctaisa.vec op=div dst=vec dst_addr=57344 a=act a_addr=65536 b=wgt b_addr=65536 rows=6 cols=4 bcast=col
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=111 rows=6 cols=4 stride=4

// Scalar function argument.
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=114688 src=62 rows=1 cols=1 stride=1 narrow=0 src "{{[^"]*}}scalar"
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=4 rows=6 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.vec op=mul dst=vec dst_addr=0 a=act a_addr=0 b=vec b_addr=114688 rows=6 cols=4 bcast=scalar
// CHECK-NEXT: ctaisa.store src=vec src_addr=0 dst=135 rows=6 cols=4 stride=4

// Splat constant: no load, the value is the immediate.
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=4 rows=6 cols=4 stride=4 narrow=0 src "{{[^"]*}}splat"
// CHECK-NEXT: ctaisa.vec op=pow dst=vec dst_addr=57344 a=act a_addr=65536 {{.*}} rows=6 cols=4 bcast=imm imm=3.0
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=159 rows=6 cols=4 stride=4

// A commutative op with the broadcast operand first swaps its operands.
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=114688 src=52 rows=1 cols=4 stride=4 narrow=0 src "{{[^"]*}}swapped"
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=4 rows=6 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.vec op=max dst=vec dst_addr=0 a=act a_addr=0 b=vec b_addr=114688 rows=6 cols=4 bcast=row
// CHECK-NEXT: ctaisa.store src=vec src_addr=0 dst=183 rows=6 cols=4 stride=4

// s < a becomes a > s.
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=114688 src=62 rows=1 cols=1 stride=1 narrow=0 src "{{[^"]*}}flipped"
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=4 rows=6 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.vec op=gt dst=vec dst_addr=57344 a=act a_addr=65536 b=vec b_addr=114688 rows=6 cols=4 bcast=scalar
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=207 rows=6 cols=4 stride=4

// A non-commutative op with a broadcast first operand: the row is copied out to a full tile.
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=114688 src=52 rows=1 cols=4 stride=4 narrow=0 src "{{[^"]*}}materialized"
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=0 src=28 rows=6 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.vec op=copy dst=vec dst_addr=0 {{.*}} b=vec b_addr=114688 rows=6 cols=4 bcast=row
// CHECK-NEXT: ctaisa.vec op=sub dst=vec dst_addr=0 a=vec a_addr=0 b=wgt b_addr=0 rows=6 cols=4 bcast=full
// CHECK-NEXT: ctaisa.store src=vec src_addr=0 dst=231 rows=6 cols=4 stride=4
// CHECK-NEXT: ctaisa.halt
func.func @main(%a: tensor<2x3x4xf32> {onnx.name = "a"}, %b: tensor<2x3x4xf32> {onnx.name = "b"}, %row: tensor<4xf32> {onnx.name = "row"}, %col: tensor<2x3x1xf32> {onnx.name = "col"}, %s: tensor<f32> {onnx.name = "s"}) -> (tensor<2x3x4xf32> {onnx.name = "full"}, tensor<2x3x4xf32> {onnx.name = "bias"}, tensor<2x3x4xf32> {onnx.name = "column"}, tensor<2x3x4xf32> {onnx.name = "scalar"}, tensor<2x3x4xf32> {onnx.name = "splat"}, tensor<2x3x4xf32> {onnx.name = "swapped"}, tensor<2x3x4xi1> {onnx.name = "flipped"}, tensor<2x3x4xf32> {onnx.name = "materialized"}) {
  %full = onnx.Sub %a, %b : (tensor<2x3x4xf32>, tensor<2x3x4xf32>) -> tensor<2x3x4xf32>
  %bias = onnx.Add %a, %row : (tensor<2x3x4xf32>, tensor<4xf32>) -> tensor<2x3x4xf32>
  %column = onnx.Div %a, %col : (tensor<2x3x4xf32>, tensor<2x3x1xf32>) -> tensor<2x3x4xf32>
  %scalar = onnx.Mul %a, %s : (tensor<2x3x4xf32>, tensor<f32>) -> tensor<2x3x4xf32>
  %three = onnx.Constant dense<3.000000e+00> : tensor<1x4xf32>
  %splat = onnx.Pow %a, %three : (tensor<2x3x4xf32>, tensor<1x4xf32>) -> tensor<2x3x4xf32>
  %swapped = onnx.Max %row, %a : (tensor<4xf32>, tensor<2x3x4xf32>) -> tensor<2x3x4xf32>
  %flipped = onnx.Less %s, %a : (tensor<f32>, tensor<2x3x4xf32>) -> tensor<2x3x4xi1>
  %materialized = onnx.Sub %row, %b : (tensor<4xf32>, tensor<2x3x4xf32>) -> tensor<2x3x4xf32>
  func.return %full, %bias, %column, %scalar, %splat, %swapped, %flipped, %materialized : tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x3x4xi1>, tensor<2x3x4xf32>
}

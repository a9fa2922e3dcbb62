// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// Transpose by strided DMA, three ways, each block's store issued after the next block's load:
// - heads: [0, 2, 1, 3] on (B, S, H, D) = (2, 3, 4, 5) with S < H: each input (H x D) block is
//   loaded densely and stored with the output's row stride (S * D = 15); 6 blocks.
// - merged: [0, 2, 1, 3] on (2, 4, 3, 5): each output (H x D) = (4 x 5) block is loaded with the
//   input's row stride (15) and stored densely; 6 blocks.
// - kt: [0, 1, 3, 2] swaps the last two axes: each (4 x 5) input block is loaded densely and
//   turned by a VEC transpose into the (5 x 4) output block.

// CHECK:      ctaisa.load dst=act dst_addr=65536 src=0 rows=4 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=20 rows=4 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=65536 dst=240 rows=4 cols=5 stride=15 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=40 rows=4 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=0 dst=245 rows=4 cols=5 stride=15 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=60 rows=4 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=65536 dst=250 rows=4 cols=5 stride=15 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=80 rows=4 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=0 dst=300 rows=4 cols=5 stride=15 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=100 rows=4 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=65536 dst=305 rows=4 cols=5 stride=15 src_stride=0
// CHECK-NEXT: ctaisa.store src=act src_addr=0 dst=310 rows=4 cols=5 stride=15 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=120 rows=4 cols=5 stride=15 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=125 rows=4 cols=5 stride=15 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=65536 dst=360 rows=4 cols=5 stride=5 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=130 rows=4 cols=5 stride=15 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=0 dst=380 rows=4 cols=5 stride=5 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=180 rows=4 cols=5 stride=15 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=65536 dst=400 rows=4 cols=5 stride=5 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=185 rows=4 cols=5 stride=15 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=0 dst=420 rows=4 cols=5 stride=5 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=190 rows=4 cols=5 stride=15 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=65536 dst=440 rows=4 cols=5 stride=5 src_stride=0
// CHECK-NEXT: ctaisa.store src=act src_addr=0 dst=460 rows=4 cols=5 stride=5 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=0 rows=4 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=20 rows=4 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.vec op=transpose dst=vec dst_addr=57344 a=act a_addr=65536 b=act b_addr=0 rows=4 cols=5 bcast=imm imm=0.0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=40 rows=4 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.vec op=transpose dst=vec dst_addr=0 a=act a_addr=0 b=act b_addr=0 rows=4 cols=5 bcast=imm imm=0.0
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=480 rows=5 cols=4 stride=4 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=60 rows=4 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.vec op=transpose dst=vec dst_addr=57344 a=act a_addr=65536 b=act b_addr=0 rows=4 cols=5 bcast=imm imm=0.0
// CHECK-NEXT: ctaisa.store src=vec src_addr=0 dst=500 rows=5 cols=4 stride=4 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=80 rows=4 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.vec op=transpose dst=vec dst_addr=0 a=act a_addr=0 b=act b_addr=0 rows=4 cols=5 bcast=imm imm=0.0
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=520 rows=5 cols=4 stride=4 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=100 rows=4 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.vec op=transpose dst=vec dst_addr=57344 a=act a_addr=65536 b=act b_addr=0 rows=4 cols=5 bcast=imm imm=0.0
// CHECK-NEXT: ctaisa.store src=vec src_addr=0 dst=540 rows=5 cols=4 stride=4 src_stride=0
// CHECK-NEXT: ctaisa.vec op=transpose dst=vec dst_addr=0 a=act a_addr=0 b=act b_addr=0 rows=4 cols=5 bcast=imm imm=0.0
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=560 rows=5 cols=4 stride=4 src_stride=0
// CHECK-NEXT: ctaisa.store src=vec src_addr=0 dst=580 rows=5 cols=4 stride=4 src_stride=0
// CHECK-NEXT: ctaisa.halt
func.func @main(%x: tensor<2x3x4x5xf32> {onnx.name = "x"}, %y: tensor<2x4x3x5xf32> {onnx.name = "y"}) -> (tensor<2x4x3x5xf32> {onnx.name = "heads"}, tensor<2x3x4x5xf32> {onnx.name = "merged"}, tensor<2x3x5x4xf32> {onnx.name = "kt"}) {
  %heads = onnx.Transpose %x {perm = array<i64: 0, 2, 1, 3>} : (tensor<2x3x4x5xf32>) -> tensor<2x4x3x5xf32>
  %merged = onnx.Transpose %y {perm = array<i64: 0, 2, 1, 3>} : (tensor<2x4x3x5xf32>) -> tensor<2x3x4x5xf32>
  %kt = onnx.Transpose %x {perm = array<i64: 0, 1, 3, 2>} : (tensor<2x3x4x5xf32>) -> tensor<2x3x5x4xf32>
  func.return %heads, %merged, %kt : tensor<2x4x3x5xf32>, tensor<2x3x4x5xf32>, tensor<2x3x5x4xf32>
}

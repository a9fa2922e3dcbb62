// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// A patchify Conv (kernel 2x2 == stride 2x2, no padding) of a (1, 2, 4, 4) image into 3
// channels with a bias: A = [W | b] (3 x 9) is copied into DRAM scratch (71) first, and the
// patch matrix (4 x 8, at 98) gets a ninth column of ones, so the GEMM adds the bias (no pass
// over the output). Strided DMA copies gather the 4 patches, one copy per (channel, kernel
// row, patch row), each copy's store issued after the next copy's load; then one GEMM
// out = A (3 x 9) @ patches^T (transpose_b=1).

// CHECK:      ctaisa.symbol input "img" float32 [1, 2, 4, 4] at=27
// CHECK-NEXT: ctaisa.symbol output "patches" float32 [1, 3, 2, 2] at=59
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=0 rows=3 cols=8 stride=8 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=24 rows=3 cols=1 stride=1 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=65536 dst=71 rows=3 cols=8 stride=9 src_stride=0
// CHECK-NEXT: ctaisa.store src=act src_addr=0 dst=79 rows=3 cols=1 stride=9 src_stride=0
// CHECK-NEXT: ctaisa.vec op=copy dst=act dst_addr=65536 a=act a_addr=0 b=act b_addr=0 rows=4 cols=1 bcast=imm imm=1.0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=27 rows=2 cols=2 stride=2 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=65536 dst=106 rows=4 cols=1 stride=9 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=35 rows=2 cols=2 stride=2 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=0 dst=98 rows=2 cols=2 stride=9 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=31 rows=2 cols=2 stride=2 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=65536 dst=116 rows=2 cols=2 stride=9 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=39 rows=2 cols=2 stride=2 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=0 dst=100 rows=2 cols=2 stride=9 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=43 rows=2 cols=2 stride=2 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=65536 dst=118 rows=2 cols=2 stride=9 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=51 rows=2 cols=2 stride=2 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=0 dst=102 rows=2 cols=2 stride=9 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=47 rows=2 cols=2 stride=2 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=65536 dst=120 rows=2 cols=2 stride=9 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=55 rows=2 cols=2 stride=2 narrow=0
// CHECK-NEXT: ctaisa.store src=act src_addr=0 dst=104 rows=2 cols=2 stride=9 src_stride=0
// CHECK-NEXT: ctaisa.store src=act src_addr=65536 dst=122 rows=2 cols=2 stride=9 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=71 rows=3 cols=9 stride=9 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=0 src=98 rows=4 cols=9 stride=9 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=0 m=3 k=9 n=4 accumulate=0 transpose_b=1 has_bias=0 bias=vec bias_addr=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=0 dst=59 rows=3 cols=4 stride=4 src_stride=0
// CHECK-NEXT: ctaisa.halt
func.func @main(%img: tensor<1x2x4x4xf32> {onnx.name = "img"}) -> (tensor<1x3x2x2xf32> {onnx.name = "patches"}) {
  %w = onnx.Constant dense<[[[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]], [[[0.5, 0.5], [0.5, 0.5]], [[-1.0, 1.0], [1.0, -1.0]]], [[[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]]]> : tensor<3x2x2x2xf32>
  %b = onnx.Constant dense<[1.0, 2.0, 3.0]> : tensor<3xf32>
  %patches = onnx.Conv %img, %w, B %b {kernel_shape = array<i64: 2, 2>, strides = array<i64: 2, 2>} : (tensor<1x2x4x4xf32>, tensor<3x2x2x2xf32>, tensor<3xf32>) -> tensor<1x3x2x2xf32>
  func.return %patches : tensor<1x3x2x2xf32>
}

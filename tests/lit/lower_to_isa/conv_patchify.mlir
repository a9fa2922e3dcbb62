// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// A patchify Conv (kernel 2x2 == stride 2x2, no padding) of a (1, 2, 4, 4) image into 3
// channels: strided DMA copies gather the 4 patches into a (patches x C*kh*kw) = (4 x 8) matrix
// in a DRAM scratch area (71), one copy per (channel, kernel row, patch row), each copy's store
// issued after the next copy's load; then one GEMM out = W (3 x 8) @ patches^T (transpose_b=1),
// and the bias added per output channel (bcast=col) into a vec slot (not in place, so the loop
// stays pipelined).

// CHECK:      ctaisa.symbol input "img" float32 [1, 2, 4, 4] at=27
// CHECK-NEXT: ctaisa.symbol output "patches" float32 [1, 3, 2, 2] at=59
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=27 rows=2 cols=2 stride=2
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=35 rows=2 cols=2 stride=2
// CHECK-NEXT: ctaisa.store src=act src_addr=65536 dst=71 rows=2 cols=2 stride=8 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=31 rows=2 cols=2 stride=2
// CHECK-NEXT: ctaisa.store src=act src_addr=0 dst=87 rows=2 cols=2 stride=8 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=39 rows=2 cols=2 stride=2
// CHECK-NEXT: ctaisa.store src=act src_addr=65536 dst=73 rows=2 cols=2 stride=8 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=43 rows=2 cols=2 stride=2
// CHECK-NEXT: ctaisa.store src=act src_addr=0 dst=89 rows=2 cols=2 stride=8 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=51 rows=2 cols=2 stride=2
// CHECK-NEXT: ctaisa.store src=act src_addr=65536 dst=75 rows=2 cols=2 stride=8 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=47 rows=2 cols=2 stride=2
// CHECK-NEXT: ctaisa.store src=act src_addr=0 dst=91 rows=2 cols=2 stride=8 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=55 rows=2 cols=2 stride=2
// CHECK-NEXT: ctaisa.store src=act src_addr=65536 dst=77 rows=2 cols=2 stride=8 src_stride=0
// CHECK-NEXT: ctaisa.store src=act src_addr=0 dst=93 rows=2 cols=2 stride=8 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=0 rows=3 cols=8 stride=8
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=0 src=71 rows=4 cols=8 stride=8
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=0 m=3 k=8 n=4 accumulate=0 transpose_b=1 has_bias=0 bias=vec bias_addr=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=0 dst=59 rows=3 cols=4 stride=4 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=59 rows=3 cols=4 stride=4
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=0 src=24 rows=3 cols=1 stride=1
// CHECK-NEXT: ctaisa.vec op=add dst=vec dst_addr=0 a=act a_addr=0 b=wgt b_addr=0 rows=3 cols=4 bcast=col imm=0.0
// CHECK-NEXT: ctaisa.store src=vec src_addr=0 dst=59 rows=3 cols=4 stride=4 src_stride=0
// CHECK-NEXT: ctaisa.halt
func.func @main(%img: tensor<1x2x4x4xf32> {onnx.name = "img"}) -> (tensor<1x3x2x2xf32> {onnx.name = "patches"}) {
  %w = onnx.Constant dense<[[[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]], [[[0.5, 0.5], [0.5, 0.5]], [[-1.0, 1.0], [1.0, -1.0]]], [[[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]]]> : tensor<3x2x2x2xf32>
  %b = onnx.Constant dense<[1.0, 2.0, 3.0]> : tensor<3xf32>
  %patches = onnx.Conv %img, %w, B %b {kernel_shape = array<i64: 2, 2>, strides = array<i64: 2, 2>} : (tensor<1x2x4x4xf32>, tensor<3x2x2x2xf32>, tensor<3xf32>) -> tensor<1x3x2x2xf32>
  func.return %patches : tensor<1x3x2x2xf32>
}

// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// Batched MatMul with a broadcast batch: a (2, 2, 3, 4) @ b (2, 4, 5). One GEMM per batch entry
// (2 x 2 = 4); b's batch axis lines up with a's second axis, so the b blocks go 0, 1, 0, 1
// (DRAM 48 and 68) while a and y advance by one block each time. The batch is one software
// pipeline: tile i+1's loads come before tile i's GEMM and tile i-1's store after it, with A, B
// and C in two alternating slots each (64-element aligned: act 0/64, wgt 0/64, acc 0/64).

// CHECK:      ctaisa.symbol input "a" float32 [2, 2, 3, 4] at=0
// CHECK-NEXT: ctaisa.symbol input "b" float32 [2, 4, 5] at=48
// CHECK-NEXT: ctaisa.symbol output "y" float32 [2, 2, 3, 5] at=88
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=0 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=0 src=48 rows=4 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=64 src=12 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=64 src=68 rows=4 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=0 m=3 k=4 n=5 accumulate=0 transpose_b=0 has_bias=0 bias=vec bias_addr=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=24 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=0 src=48 rows=4 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=64 a=act a_addr=64 b=wgt b_addr=64 m=3 k=4 n=5 accumulate=0 transpose_b=0 has_bias=0 bias=vec bias_addr=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=0 dst=88 rows=3 cols=5 stride=5 src_stride=0
// CHECK-NEXT: ctaisa.load dst=act dst_addr=64 src=36 rows=3 cols=4 stride=4 narrow=0
// CHECK-NEXT: ctaisa.load dst=wgt dst_addr=64 src=68 rows=4 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=0 a=act a_addr=0 b=wgt b_addr=0 m=3 k=4 n=5 accumulate=0 transpose_b=0 has_bias=0 bias=vec bias_addr=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=64 dst=103 rows=3 cols=5 stride=5 src_stride=0
// CHECK-NEXT: ctaisa.gemm dst=acc dst_addr=64 a=act a_addr=64 b=wgt b_addr=64 m=3 k=4 n=5 accumulate=0 transpose_b=0 has_bias=0 bias=vec bias_addr=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=0 dst=118 rows=3 cols=5 stride=5 src_stride=0
// CHECK-NEXT: ctaisa.store src=acc src_addr=64 dst=133 rows=3 cols=5 stride=5 src_stride=0
// CHECK-NEXT: ctaisa.halt
func.func @main(%a: tensor<2x2x3x4xf32> {onnx.name = "a"}, %b: tensor<2x4x5xf32> {onnx.name = "b"}) -> (tensor<2x2x3x5xf32> {onnx.name = "y"}) {
  %y = onnx.MatMul %a, %b : (tensor<2x2x3x4xf32>, tensor<2x4x5xf32>) -> tensor<2x2x3x5xf32>
  func.return %y : tensor<2x2x3x5xf32>
}

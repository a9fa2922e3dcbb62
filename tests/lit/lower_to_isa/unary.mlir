// RUN: ctac-opt %s -p lower-to-isa | filecheck %s

// Unary ops: LOAD, one VEC with the op (operand b unused: bcast=imm), STORE; consecutive ops
// alternate buffer halves (act 65536 / 0, vec 57344 / 0).

// CHECK:      ctaisa.load dst=act dst_addr=65536 src=0 rows=3 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.vec op=exp dst=vec dst_addr=57344 a=act a_addr=65536 {{.*}} rows=3 cols=5 bcast=imm
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=30 rows=3 cols=5 stride=5
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=0 rows=3 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.vec op=relu dst=vec dst_addr=0 a=act a_addr=0 {{.*}} rows=3 cols=5 bcast=imm
// CHECK-NEXT: ctaisa.store src=vec src_addr=0 dst=45 rows=3 cols=5 stride=5
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=0 rows=3 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.vec op=tanh dst=vec dst_addr=57344 a=act a_addr=65536 {{.*}} rows=3 cols=5 bcast=imm
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=60 rows=3 cols=5 stride=5
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=0 rows=3 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.vec op=sigmoid dst=vec dst_addr=0 a=act a_addr=0 {{.*}} rows=3 cols=5 bcast=imm
// CHECK-NEXT: ctaisa.store src=vec src_addr=0 dst=75 rows=3 cols=5 stride=5
// CHECK-NEXT: ctaisa.load dst=act dst_addr=65536 src=0 rows=3 cols=5 stride=5 narrow=0
// CHECK-NEXT: ctaisa.vec op=neg dst=vec dst_addr=57344 a=act a_addr=65536 {{.*}} rows=3 cols=5 bcast=imm
// CHECK-NEXT: ctaisa.store src=vec src_addr=57344 dst=90 rows=3 cols=5 stride=5
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=15 rows=3 cols=5 stride=5 narrow=1
// CHECK-NEXT: ctaisa.vec op=not dst=vec dst_addr=0 a=act a_addr=0 {{.*}} rows=3 cols=5 bcast=imm
// CHECK-NEXT: ctaisa.store src=vec src_addr=0 dst=105 rows=3 cols=5 stride=5
// CHECK-NEXT: ctaisa.halt
func.func @main(%x: tensor<3x5xf32> {onnx.name = "x"}, %c: tensor<3x5xi1> {onnx.name = "c"}) -> (tensor<3x5xf32> {onnx.name = "e"}, tensor<3x5xf32> {onnx.name = "r"}, tensor<3x5xf32> {onnx.name = "t"}, tensor<3x5xf32> {onnx.name = "s"}, tensor<3x5xf32> {onnx.name = "n"}, tensor<3x5xi1> {onnx.name = "nc"}) {
  %e = onnx.Exp %x : (tensor<3x5xf32>) -> tensor<3x5xf32>
  %r = onnx.Relu %x : (tensor<3x5xf32>) -> tensor<3x5xf32>
  %t = onnx.Tanh %x : (tensor<3x5xf32>) -> tensor<3x5xf32>
  %s = onnx.Sigmoid %x : (tensor<3x5xf32>) -> tensor<3x5xf32>
  %n = onnx.Neg %x : (tensor<3x5xf32>) -> tensor<3x5xf32>
  %nc = onnx.Not %c : (tensor<3x5xi1>) -> tensor<3x5xi1>
  func.return %e, %r, %t, %s, %n, %nc : tensor<3x5xf32>, tensor<3x5xf32>, tensor<3x5xf32>, tensor<3x5xf32>, tensor<3x5xf32>, tensor<3x5xi1>
}

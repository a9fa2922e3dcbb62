// Tiled clustering with small buffers and a small cluster table, derived from the default config:
// act and wgt 0.5 KiB (halves of 128 elements: tiles of 32 tokens of 4 features), the cluster
// unit's table 0.5 KiB (18 rows of 4 features: cols + 3 fp32 values, 28 bytes each).
// RUN: sed -e '/name = "act"/,/size_kib/s/value = [0-9.]*/value = 0.5/' \
// RUN:     -e '/name = "wgt"/,/size_kib/s/value = [0-9.]*/value = 0.5/' \
// RUN:     -e 's/table_kib = { value = [0-9.]*/table_kib = { value = 0.5/' \
// RUN:     %S/../../../ctac/data/default_hw.toml > %t.toml
// RUN: ctac-opt %s -p 'lower-to-isa{hw="%t.toml"}' | filecheck %s

// 40 masked tokens, two tiles (32 + 8), software-pipelined: both tiles' tokens and mask rows
// load first (act 0/128, vec 32/96), then per tile HASH (codes in vec 0/64) and CLUSTER against
// the unit's table, the first with first=1 (an empty table), the second continuing it
// (first=0). Rows from 18 on live in DRAM at 448 (22 rows of 14 elements, the arena scratch).
// Dynamic sizes: each CLUSTER's `scan` is its own measured comparisons per token, the second's
// `table_rows` the clusters the table ends with (instruction 10, the first CLUSTER_READ). The
// table is read out in tiles of 32 rows (wgt 0/128, counts to vec), each sized by the clusters
// less its first row ({"rows": [10, 32]}: nothing to do if 32 or fewer clusters formed), and stored
// with the ids and counts.

// CHECK:      ctaisa.load dst=vec dst_addr=114688 src=0 rows=4 cols=2 stride=2 narrow=0 src "cta.cluster:c"
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=8 rows=32 cols=4 stride=4 narrow=0 src "cta.cluster:c"
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=32 src=168 rows=32 cols=1 stride=1 narrow=0 src "cta.cluster:c"
// CHECK-NEXT: ctaisa.load dst=act dst_addr=128 src=136 rows=8 cols=4 stride=4 narrow=0 src "cta.cluster:c"
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=96 src=200 rows=8 cols=1 stride=1 narrow=0 src "cta.cluster:c"
// CHECK-NEXT: ctaisa.hash dst=vec dst_addr=0 src=act src_addr=0 proj=vec proj_addr=114688 rows=32 cols=4 bits=2 src "cta.cluster:c"
// CHECK-NEXT: ctaisa.cluster src_addr=0 codes_addr=0 valid_addr=32 has_valid=1 ids_addr=128 rows=32 cols=4 threshold=0.25 first=1 spill=448 resident=18 table_rows=0 scan=31 window=0 src "cta.cluster:c" dynamic {"scan": 6}
// CHECK-NEXT: ctaisa.hash dst=vec dst_addr=64 src=act src_addr=128 proj=vec proj_addr=114688 rows=8 cols=4 bits=2 src "cta.cluster:c"
// CHECK-NEXT: ctaisa.cluster src_addr=128 codes_addr=64 valid_addr=96 has_valid=1 ids_addr=192 rows=8 cols=4 threshold=0.25 first=0 spill=448 resident=18 table_rows=32 scan=39 window=0 src "cta.cluster:c" dynamic {"scan": 8, "table_rows": 10}
// CHECK-NEXT: ctaisa.store src=vec src_addr=128 dst=408 rows=32 cols=1 stride=1 src_stride=0 exact=1 narrow=0 src "cta.cluster:c"
// CHECK-NEXT: ctaisa.cluster_read dst=wgt dst_addr=0 counts_addr=160 row0=0 rows=32 cols=4 spill=448 resident=18 src "cta.cluster:c" dynamic {"rows": 10}
// CHECK-NEXT: ctaisa.store src=vec src_addr=192 dst=440 rows=8 cols=1 stride=1 src_stride=0 exact=1 narrow=0 src "cta.cluster:c"
// CHECK-NEXT: ctaisa.cluster_read dst=wgt dst_addr=128 counts_addr=224 row0=32 rows=8 cols=4 spill=448 resident=18 src "cta.cluster:c" dynamic {"rows": [10, 32]}
// CHECK-NEXT: ctaisa.store src=wgt src_addr=0 dst=208 rows=32 cols=4 stride=4 src_stride=0 exact=0 narrow=0 src "cta.cluster:c" dynamic {"rows": 10}
// CHECK-NEXT: ctaisa.store src=vec src_addr=160 dst=368 rows=1 cols=32 stride=32 src_stride=0 exact=1 narrow=0 src "cta.cluster:c"
// CHECK-NEXT: ctaisa.store src=wgt src_addr=128 dst=336 rows=8 cols=4 stride=4 src_stride=0 exact=0 narrow=0 src "cta.cluster:c" dynamic {"rows": [10, 32]}
// CHECK-NEXT: ctaisa.store src=vec src_addr=224 dst=400 rows=1 cols=8 stride=8 src_stride=0 exact=1 narrow=0 src "cta.cluster:c"
// CHECK-NEXT: ctaisa.halt src "end"
func.func @main(%x: tensor<1x40x4xf32> {onnx.name = "x"}, %m: tensor<1x40xi64> {onnx.name = "m"}) -> (tensor<1x40x4xf32> {onnx.name = "c"}, tensor<1x40xf32> {onnx.name = "n"}, tensor<1x40xi64> {onnx.name = "i"}) {
  %c, %n, %i = cta.cluster %x, mask %m {method = "hash-leader", tau = 2.500000e-01 : f64, hash_bits = 2 : i64, seed = 0 : i64} : (tensor<1x40x4xf32>, tensor<1x40xi64>) -> (tensor<1x40x4xf32>, tensor<1x40xf32>, tensor<1x40xi64>)
  func.return %c, %n, %i : tensor<1x40x4xf32>, tensor<1x40xf32>, tensor<1x40xi64>
}

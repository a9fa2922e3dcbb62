// Pooling and recovery through windows of table rows, with small buffers derived from the default
// config: act, wgt and acc 0.25 KiB (halves of 64 elements: windows and token tiles of 16 rows of
// 4 features).
// RUN: sed -e '/name = "act"/,/size_kib/s/value = [0-9.]*/value = 0.25/' \
// RUN:     -e '/name = "wgt"/,/size_kib/s/value = [0-9.]*/value = 0.25/' \
// RUN:     -e '/name = "acc"/,/size_kib/s/value = [0-9.]*/value = 0.25/' \
// RUN:     %S/../../../ctac/data/default_hw.toml > %t.toml
// RUN: ctac-opt %s -p 'lower-to-isa{hw="%t.toml"}' | filecheck %s

// 24 tokens clustered (the cluster's own instructions are skipped here: CHECK lines start at
// pool), the values pooled over the clusters and the pooled rows recovered.
// Pool: per window of 16 output rows, the token tiles (16 + 8) are SCATTER_ADDed with window=1
// (only ids in [base, base + 16) count) into sums (acc) and member counts (vec), which alternate
// per window; then max(members, 1), the division and a STORE. Rows are numbered by first token,
// so the members of rows >= 16 sit at positions >= 16: the second window reads the second
// token tile only. Everything on table rows is sized by the clusters formed, less the window's
// first row ("rows=7@16", 7 the first CLUSTER_READ): a window past the last cluster is skipped.
// Recover: per tile of tokens, its ids, then per window of the table a LOAD and a GATHER_BUF
// with window=1 (a row keeps its value unless its id is in the window), one STORE per tile. A
// token's row is never after its position, so the first tile needs the first window only.

// CHECK:      ctaisa.load dst=act dst_addr=0 src=96 rows=16 cols=4 stride=4 narrow=0 src "cta.pool:p"
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=128 src=312 rows=16 cols=1 stride=1 narrow=0 src "cta.pool:p"
// CHECK-NEXT: ctaisa.load dst=act dst_addr=64 src=160 rows=8 cols=4 stride=4 narrow=0 src "cta.pool:p"
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=192 src=328 rows=8 cols=1 stride=1 narrow=0 src "cta.pool:p"
// CHECK-NEXT: ctaisa.vec op=copy dst=vec dst_addr=256 a=act a_addr=0 b=act b_addr=0 rows=16 cols=1 bcast=imm imm=1.0 src "cta.pool:p"
// CHECK-NEXT: ctaisa.vec op=copy dst=acc dst_addr=0 a=act a_addr=0 b=act b_addr=0 rows=16 cols=4 bcast=imm imm=0.0 src "cta.pool:p" dynamic {"rows": 7}
// CHECK-NEXT: ctaisa.vec op=copy dst=vec dst_addr=0 a=act a_addr=0 b=act b_addr=0 rows=16 cols=1 bcast=imm imm=0.0 src "cta.pool:p" dynamic {"rows": 7}
// CHECK-NEXT: ctaisa.scatter_add dst=acc dst_addr=0 src=act src_addr=0 idx=vec idx_addr=128 rows=16 cols=4 dst_rows=16 window=1 base=0 src "cta.pool:p" dynamic {"dst_rows": 7}
// CHECK-NEXT: ctaisa.scatter_add dst=vec dst_addr=0 src=vec src_addr=256 idx=vec idx_addr=128 rows=16 cols=1 dst_rows=16 window=1 base=0 src "cta.pool:p" dynamic {"dst_rows": 7}
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=160 rows=8 cols=4 stride=4 narrow=0 src "cta.pool:p"
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=128 src=328 rows=8 cols=1 stride=1 narrow=0 src "cta.pool:p"
// CHECK-NEXT: ctaisa.scatter_add dst=acc dst_addr=0 src=act src_addr=64 idx=vec idx_addr=192 rows=8 cols=4 dst_rows=16 window=1 base=0 src "cta.pool:p" dynamic {"dst_rows": 7}
// CHECK-NEXT: ctaisa.scatter_add dst=vec dst_addr=0 src=vec src_addr=256 idx=vec idx_addr=192 rows=8 cols=1 dst_rows=16 window=1 base=0 src "cta.pool:p" dynamic {"dst_rows": 7}
// CHECK-NEXT: ctaisa.vec op=max dst=vec dst_addr=0 a=vec a_addr=0 b=act b_addr=0 rows=16 cols=1 bcast=imm imm=1.0 src "cta.pool:p" dynamic {"rows": 7}
// CHECK-NEXT: ctaisa.vec op=div dst=acc dst_addr=0 a=acc a_addr=0 b=vec b_addr=0 rows=16 cols=4 bcast=col imm=0.0 src "cta.pool:p" dynamic {"rows": 7}
// CHECK-NEXT: ctaisa.vec op=copy dst=acc dst_addr=64 a=act a_addr=0 b=act b_addr=0 rows=8 cols=4 bcast=imm imm=0.0 src "cta.pool:p" dynamic {"rows": [7, 16]}
// CHECK-NEXT: ctaisa.vec op=copy dst=vec dst_addr=64 a=act a_addr=0 b=act b_addr=0 rows=8 cols=1 bcast=imm imm=0.0 src "cta.pool:p" dynamic {"rows": [7, 16]}
// CHECK-NEXT: ctaisa.scatter_add dst=acc dst_addr=64 src=act src_addr=0 idx=vec idx_addr=128 rows=8 cols=4 dst_rows=8 window=1 base=16 src "cta.pool:p" dynamic {"dst_rows": [7, 16]}
// CHECK-NEXT: ctaisa.scatter_add dst=vec dst_addr=64 src=vec src_addr=256 idx=vec idx_addr=128 rows=8 cols=1 dst_rows=8 window=1 base=16 src "cta.pool:p" dynamic {"dst_rows": [7, 16]}
// CHECK-NEXT: ctaisa.vec op=max dst=vec dst_addr=64 a=vec a_addr=64 b=act b_addr=0 rows=8 cols=1 bcast=imm imm=1.0 src "cta.pool:p" dynamic {"rows": [7, 16]}
// CHECK-NEXT: ctaisa.vec op=div dst=acc dst_addr=64 a=acc a_addr=64 b=vec b_addr=64 rows=8 cols=4 bcast=col imm=0.0 src "cta.pool:p" dynamic {"rows": [7, 16]}
// CHECK-NEXT: ctaisa.store src=acc src_addr=0 dst=336 rows=16 cols=4 stride=4 src_stride=0 exact=0 narrow=0 src "cta.pool:p" dynamic {"rows": 7}
// CHECK-NEXT: ctaisa.store src=acc src_addr=64 dst=400 rows=8 cols=4 stride=4 src_stride=0 exact=0 narrow=0 src "cta.pool:p" dynamic {"rows": [7, 16]}
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=0 src=312 rows=16 cols=1 stride=1 narrow=0 src "cta.recover:r"
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=336 rows=16 cols=4 stride=4 narrow=0 src "cta.recover:r" dynamic {"rows": 7}
// CHECK-NEXT: ctaisa.load dst=vec dst_addr=64 src=328 rows=8 cols=1 stride=1 narrow=0 src "cta.recover:r"
// CHECK-NEXT: ctaisa.load dst=act dst_addr=64 src=336 rows=16 cols=4 stride=4 narrow=0 src "cta.recover:r" dynamic {"rows": 7}
// CHECK-NEXT: ctaisa.gather_buf dst=wgt dst_addr=0 src=act src_addr=0 idx=vec idx_addr=0 rows=16 cols=4 src_rows=16 window=1 base=0 src "cta.recover:r" dynamic {"src_rows": 7}
// CHECK-NEXT: ctaisa.load dst=act dst_addr=0 src=400 rows=8 cols=4 stride=4 narrow=0 src "cta.recover:r" dynamic {"rows": [7, 16]}
// CHECK-NEXT: ctaisa.gather_buf dst=wgt dst_addr=64 src=act src_addr=64 idx=vec idx_addr=64 rows=8 cols=4 src_rows=16 window=1 base=0 src "cta.recover:r" dynamic {"src_rows": 7}
// CHECK-NEXT: ctaisa.store src=wgt src_addr=0 dst=432 rows=16 cols=4 stride=4 src_stride=0 exact=0 narrow=0 src "cta.recover:r"
// CHECK-NEXT: ctaisa.gather_buf dst=wgt dst_addr=64 src=act src_addr=0 idx=vec idx_addr=64 rows=8 cols=4 src_rows=8 window=1 base=16 src "cta.recover:r" dynamic {"src_rows": [7, 16]}
// CHECK-NEXT: ctaisa.store src=wgt src_addr=64 dst=496 rows=8 cols=4 stride=4 src_stride=0 exact=0 narrow=0 src "cta.recover:r"
// CHECK-NEXT: ctaisa.halt src "end"
func.func @main(%x: tensor<1x24x4xf32> {onnx.name = "x"}, %v: tensor<1x24x4xf32> {onnx.name = "v"}) -> (tensor<1x24x4xf32> {onnx.name = "r"}) {
  %c, %n, %i = cta.cluster %x {method = "leader", tau = 2.500000e-01 : f64, hash_bits = 0 : i64, seed = 0 : i64} : (tensor<1x24x4xf32>) -> (tensor<1x24x4xf32>, tensor<1x24xf32>, tensor<1x24xi64>)
  %p = cta.pool %v, %i : (tensor<1x24x4xf32>, tensor<1x24xi64>) -> tensor<1x24x4xf32>
  %r = cta.recover %p, %i : (tensor<1x24x4xf32>, tensor<1x24xi64>) -> tensor<1x24x4xf32>
  func.return %r : tensor<1x24x4xf32>
}

// RUN: ctac-opt %s -p 'cta-compress{tau-q=0.5 tau-kv=0.6 keep-top=2}' | filecheck %s
// RUN: ctac-opt %s -p 'cta-compress{keep-top=2}' | ctac-opt | filecheck %s --check-prefix=ROUNDTRIP
// RUN: ctac-opt %s -p 'cta-compress{tau-q=0.5 tau-kv=0.6}' | filecheck %s --check-prefix=OFF

// keep-top=2 (head placement): cta.keep_top ranks each (sequence, head)'s keys by mean query .
// key (over the unpadded queries and keys) and its ranks (2, 3, 4) i64 are the `alone` operand
// of the keys' cta.cluster: the two top keys of every head each form a cluster of their own.
// The queries' clustering and everything after the keys' clustering are unchanged.
// CHECK-LABEL: func.func @keys(
// CHECK-NOT:     cta.attention
// CHECK:         %[[QC:[^ ]+]], %{{[^ ]+}}, %[[QID:[^ ]+]] = cta.cluster %q, mask %m {{.*}}ctac.role = "q"} : (tensor<2x3x4x2xf32>, tensor<2x4xi64>)
// CHECK-NEXT:    %[[R:[^ ]+]] = cta.keep_top %q, %k, mask %m {k = 2 : i64} : (tensor<2x3x4x2xf32>, tensor<2x3x4x2xf32>, tensor<2x4xi64>) -> tensor<2x3x4xi64>
// CHECK-NEXT:    %[[KC:[^ ]+]], %[[KN:[^ ]+]], %[[KID:[^ ]+]] = cta.cluster %k, mask %m, alone %[[R]] {method = "hash-leader", tau = 6.000000e-01 : f64{{.*}}ctac.role = "kv"} : (tensor<2x3x4x2xf32>, tensor<2x4xi64>, tensor<2x3x4xi64>) -> (tensor<2x3x4x2xf32>, tensor<2x3x4xf32>, tensor<2x3x4xi64>)
// CHECK-NEXT:    %[[V:[^ ]+]] = cta.pool %v, %[[KID]]
// CHECK-NEXT:    %[[OC:[^ ]+]] = cta.compressed_attention %[[QC]], %[[KC]], %[[V]], %[[KN]]
// CHECK-NEXT:    %o = cta.recover %[[OC]], %[[QID]]
// ROUNDTRIP-LABEL: func.func @keys(
// ROUNDTRIP:     cta.keep_top %q, %k, mask %m {k = 2 : i64}
// ROUNDTRIP:     cta.cluster %k, mask %m, alone %{{[^ ]+}} {{.*}}ctac.role = "kv"
// OFF-LABEL: func.func @keys(
// OFF-NOT:       cta.keep_top
// OFF-NOT:       alone
func.func @keys(%q: tensor<2x3x4x2xf32>, %k: tensor<2x3x4x2xf32>, %v: tensor<2x3x4x5xf32>, %m: tensor<2x4xi64>) -> tensor<2x3x4x5xf32> {
  %o = cta.attention %q, %k, %v, mask %m {num_heads = 3 : i64, kv_heads = 3 : i64, head_dim = 2 : i64, scale = 5.000000e-01 : f64, mask_kind = "key_padding", ctac.source = "self"} : (tensor<2x3x4x2xf32>, tensor<2x3x4x2xf32>, tensor<2x3x4x5xf32>, tensor<2x4xi64>) -> tensor<2x3x4x5xf32>
  func.return %o : tensor<2x3x4x5xf32>
}

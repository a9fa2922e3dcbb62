// RUN: ctac-opt %s -p 'cta-compress{granularity=input tau-q=0.1 tau-kv=0.1}' | filecheck %s
// RUN: ctac-opt %s -p 'cta-compress{granularity=input tau-q=0.1 tau-kv=0.3 method=leader}' | filecheck %s --check-prefix=TWO

// Input placement: Q, K and V project one X, so X (B, S, E) = (2, 4, 8) is clustered once per
// sequence (mask included) and the three projections run on the centroid table (exact by
// linearity); counts and ids are per sequence, (B, S), shared by the heads.
// CHECK-LABEL: func.func @projections(
// CHECK-NOT:     cta.attention
// CHECK:         %[[XC:[^ ]+]], %[[XN:[^ ]+]], %[[XID:[^ ]+]] = cta.cluster %x, mask %m {method = "hash-leader", tau = 1.000000e-01 : f64, hash_bits = 4 : i64, seed = 0 : i64, ctac.source = "self", ctac.role = "qkv"} : (tensor<2x4x8xf32>, tensor<2x4xi64>) -> (tensor<2x4x8xf32>, tensor<2x4xf32>, tensor<2x4xi64>)
// CHECK-NEXT:    %[[Q:[^ ]+]] = cta.project %[[XC]], %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<2x4x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    %[[K:[^ ]+]] = cta.project %[[XC]], %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 8, 16>}
// CHECK-NEXT:    %[[V:[^ ]+]] = cta.project %[[XC]], %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 16, 24>}
// CHECK-NEXT:    %[[OC:[^ ]+]] = cta.compressed_attention %[[Q]], %[[K]], %[[V]], %[[XN]] {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source = "self"} : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>, tensor<2x4xf32>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    %o = cta.recover %[[OC]], %[[XID]] : (tensor<2x2x4x4xf32>, tensor<2x4xi64>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    func.return %o

// Different thresholds for queries and keys/values: two clusterings of X, Q projected on the
// first table, K and V on the second, the result recovered with the queries' ids.
// TWO-LABEL: func.func @projections(
// TWO:         %[[XC:[^ ]+]], %{{[^ ]+}}, %[[XID:[^ ]+]] = cta.cluster %x, mask %m {method = "leader", tau = 1.000000e-01 : f64, {{.*}}ctac.role = "q"}
// TWO-NEXT:    %[[YC:[^ ]+]], %[[YN:[^ ]+]], %{{[^ ]+}} = cta.cluster %x, mask %m {method = "leader", tau = 3.000000e-01 : f64, {{.*}}ctac.role = "kv"}
// TWO-NEXT:    %[[Q:[^ ]+]] = cta.project %[[XC]], %w, bias %b
// TWO-NEXT:    %[[K:[^ ]+]] = cta.project %[[YC]], %w, bias %b
// TWO-NEXT:    %[[V:[^ ]+]] = cta.project %[[YC]], %w, bias %b
// TWO-NEXT:    %[[OC:[^ ]+]] = cta.compressed_attention %[[Q]], %[[K]], %[[V]], %[[YN]]
// TWO-NEXT:    %o = cta.recover %[[OC]], %[[XID]]
func.func @projections(%x: tensor<2x4x8xf32>, %m: tensor<2x4xi64>, %w: tensor<8x24xf32>, %b: tensor<24xf32>) -> tensor<2x2x4x4xf32> {
  %q = cta.project %x, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<2x4x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<2x2x4x4xf32>
  %k = cta.project %x, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 8, 16>} : (tensor<2x4x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<2x2x4x4xf32>
  %v = cta.project %x, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 16, 24>} : (tensor<2x4x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<2x2x4x4xf32>
  %o = cta.attention %q, %k, %v, mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "key_padding", ctac.source = "self"} : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>, tensor<2x4xi64>) -> tensor<2x2x4x4xf32>
  func.return %o : tensor<2x2x4x4xf32>
}

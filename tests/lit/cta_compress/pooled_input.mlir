// RUN: ctac-opt %s -p 'cta-compress{tau-q=0.5 tau-kv=0.3 values=pooled-input}' | filecheck %s
// RUN: ctac-opt %s -p 'cta-compress{tau-q=0.0 tau-kv=0.0 values=pooled-input}' | ctac-opt | filecheck %s --check-prefix=ROUNDTRIP

// values=pooled-input (head placement): V = cta.project(X), so instead of pooling the projected
// V over the keys' clusters, X (B, n, E) = (2, 4, 8) is pooled over each head's key ids
// (B, H, n) into one table per (batch, head), (2, 2, 4, 8), and projected per head with that
// head's weight columns: the same value table by linearity, with the V projection on m_k rows.
// CHECK-LABEL: func.func @projections(
// CHECK-NOT:     cta.attention
// CHECK:         %[[QC:[^ ]+]], %{{[^ ]+}}, %[[QID:[^ ]+]] = cta.cluster %q, mask %m {{.*}}ctac.role = "q"}
// CHECK-NEXT:    %[[KC:[^ ]+]], %[[KN:[^ ]+]], %[[KID:[^ ]+]] = cta.cluster %k, mask %m {{.*}}ctac.role = "kv"} : (tensor<2x2x4x4xf32>, tensor<2x4xi64>) -> (tensor<2x2x4x4xf32>, tensor<2x2x4xf32>, tensor<2x2x4xi64>)
// CHECK-NEXT:    %[[XP:[^ ]+]] = cta.pool %x, %[[KID]] : (tensor<2x4x8xf32>, tensor<2x2x4xi64>) -> tensor<2x2x4x8xf32>
// CHECK-NEXT:    %[[V:[^ ]+]] = cta.project %[[XP]], %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 16, 24>} : (tensor<2x2x4x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<2x2x4x4xf32>
// CHECK-NEXT:    %[[OC:[^ ]+]] = cta.compressed_attention %[[QC]], %[[KC]], %[[V]], %[[KN]]
// CHECK-NEXT:    %o = cta.recover %[[OC]], %[[QID]]
// CHECK-NEXT:    func.return %o
// ROUNDTRIP-LABEL: func.func @projections(
// ROUNDTRIP:     cta.pool %x, %{{[^ ]+}} : (tensor<2x4x8xf32>, tensor<2x2x4xi64>) -> tensor<2x2x4x8xf32>
// ROUNDTRIP:     cta.project %{{[^ ]+}}, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 16, 24>} : (tensor<2x2x4x8xf32>
func.func @projections(%x: tensor<2x4x8xf32>, %m: tensor<2x4xi64>, %w: tensor<8x24xf32>, %b: tensor<24xf32>) -> tensor<2x2x4x4xf32> {
  %q = cta.project %x, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<2x4x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<2x2x4x4xf32>
  %k = cta.project %x, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 8, 16>} : (tensor<2x4x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<2x2x4x4xf32>
  %v = cta.project %x, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 16, 24>} : (tensor<2x4x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<2x2x4x4xf32>
  %o = cta.attention %q, %k, %v, mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "key_padding", ctac.source = "self"} : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>, tensor<2x4xi64>) -> tensor<2x2x4x4xf32>
  func.return %o : tensor<2x2x4x4xf32>
}

// V is not a projection (a function argument): values fall back to pooling V itself.
// CHECK-LABEL: func.func @plain_values(
// CHECK:         %{{[^ ]+}}, %{{[^ ]+}}, %[[KID:[^ ]+]] = cta.cluster %k
// CHECK-NEXT:    cta.pool %v, %[[KID]] : (tensor<1x2x4x4xf32>, tensor<1x2x4xi64>) -> tensor<1x2x4x4xf32>
func.func @plain_values(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %o = cta.attention %q, %k, %v {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64} : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

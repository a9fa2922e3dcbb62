// RUN: ctac-opt %s -p 'cta-compress{tau-q=0.5 tau-kv=0.6 keys=shared}' | filecheck %s
// RUN: ctac-opt %s -p 'cta-compress{tau-q=0.5 tau-kv=0.6 keys=shared values=pooled-input}' | filecheck %s --check-prefix=POOLED
// RUN: ctac-opt %s -p 'cta-compress{keys=shared}' | ctac-opt | filecheck %s --check-prefix=ROUNDTRIP

// keys=shared (head placement): K (B, H, n, d) = (2, 3, 4, 2) becomes (B, n, H*d) = (2, 4, 6)
// by a transpose and a reshape, and is clustered once per sequence (tau-kv relative to the
// concatenated norm): counts and ids (B, n), shared by the heads. The (2, 4, 6) centroids are
// split back into per-head centroids (2, 3, 4, 2); V is pooled over the shared ids. Queries keep
// their per-head clustering.
// CHECK-LABEL: func.func @keys(
// CHECK-NOT:     cta.attention
// CHECK:         %[[QC:[^ ]+]], %{{[^ ]+}}, %[[QID:[^ ]+]] = cta.cluster %q, mask %m {{.*}}ctac.role = "q"} : (tensor<2x3x4x2xf32>, tensor<2x4xi64>)
// CHECK-NEXT:    %[[KT:[^ ]+]] = onnx.Transpose %k {perm = array<i64: 0, 2, 1, 3>} : (tensor<2x3x4x2xf32>) -> tensor<2x4x3x2xf32>
// CHECK-NEXT:    %[[S1:[^ ]+]] = onnx.Constant dense<[2, 4, 6]> : tensor<3xi64>
// CHECK-NEXT:    %[[KF:[^ ]+]] = onnx.Reshape %[[KT]], %[[S1]] : (tensor<2x4x3x2xf32>, tensor<3xi64>) -> tensor<2x4x6xf32>
// CHECK-NEXT:    %[[KC:[^ ]+]], %[[KN:[^ ]+]], %[[KID:[^ ]+]] = cta.cluster %[[KF]], mask %m {method = "hash-leader", tau = 6.000000e-01 : f64{{.*}}ctac.role = "kv"} : (tensor<2x4x6xf32>, tensor<2x4xi64>) -> (tensor<2x4x6xf32>, tensor<2x4xf32>, tensor<2x4xi64>)
// CHECK-NEXT:    %[[S2:[^ ]+]] = onnx.Constant dense<[2, 4, 3, 2]> : tensor<4xi64>
// CHECK-NEXT:    %[[KS:[^ ]+]] = onnx.Reshape %[[KC]], %[[S2]] : (tensor<2x4x6xf32>, tensor<4xi64>) -> tensor<2x4x3x2xf32>
// CHECK-NEXT:    %[[KH:[^ ]+]] = onnx.Transpose %[[KS]] {perm = array<i64: 0, 2, 1, 3>} : (tensor<2x4x3x2xf32>) -> tensor<2x3x4x2xf32>
// CHECK-NEXT:    %[[V:[^ ]+]] = cta.pool %v, %[[KID]] : (tensor<2x3x4x5xf32>, tensor<2x4xi64>) -> tensor<2x3x4x5xf32>
// CHECK-NEXT:    %[[OC:[^ ]+]] = cta.compressed_attention %[[QC]], %[[KH]], %[[V]], %[[KN]] {{.*}} : (tensor<2x3x4x2xf32>, tensor<2x3x4x2xf32>, tensor<2x3x4x5xf32>, tensor<2x4xf32>) -> tensor<2x3x4x5xf32>
// CHECK-NEXT:    %o = cta.recover %[[OC]], %[[QID]] : (tensor<2x3x4x5xf32>, tensor<2x3x4xi64>) -> tensor<2x3x4x5xf32>
// CHECK-NEXT:    func.return %o
// ROUNDTRIP-LABEL: func.func @keys(
// ROUNDTRIP:     cta.cluster %{{[^ ]+}}, mask %m {{.*}} : (tensor<2x4x6xf32>, tensor<2x4xi64>) -> (tensor<2x4x6xf32>, tensor<2x4xf32>, tensor<2x4xi64>)
func.func @keys(%q: tensor<2x3x4x2xf32>, %k: tensor<2x3x4x2xf32>, %v: tensor<2x3x4x5xf32>, %m: tensor<2x4xi64>) -> tensor<2x3x4x5xf32> {
  %o = cta.attention %q, %k, %v, mask %m {num_heads = 3 : i64, kv_heads = 3 : i64, head_dim = 2 : i64, scale = 5.000000e-01 : f64, mask_kind = "key_padding", ctac.source = "self"} : (tensor<2x3x4x2xf32>, tensor<2x3x4x2xf32>, tensor<2x3x4x5xf32>, tensor<2x4xi64>) -> tensor<2x3x4x5xf32>
  func.return %o : tensor<2x3x4x5xf32>
}

// With values=pooled-input and shared key ids (B, n), X (B, n, E) is pooled once for all heads
// (not once per head) and the V projection runs on that one pooled table.
// POOLED-LABEL: func.func @projections(
// POOLED:         %{{[^ ]+}}, %{{[^ ]+}}, %[[KID:[^ ]+]] = cta.cluster %{{[^ ]+}}, mask %m {{.*}}ctac.role = "kv"} : (tensor<2x4x8xf32>, tensor<2x4xi64>)
// POOLED:         %[[XP:[^ ]+]] = cta.pool %x, %[[KID]] : (tensor<2x4x8xf32>, tensor<2x4xi64>) -> tensor<2x4x8xf32>
// POOLED-NEXT:    cta.project %[[XP]], %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 16, 24>} : (tensor<2x4x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<2x2x4x4xf32>
func.func @projections(%x: tensor<2x4x8xf32>, %m: tensor<2x4xi64>, %w: tensor<8x24xf32>, %b: tensor<24xf32>) -> tensor<2x2x4x4xf32> {
  %q = cta.project %x, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<2x4x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<2x2x4x4xf32>
  %k = cta.project %x, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 8, 16>} : (tensor<2x4x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<2x2x4x4xf32>
  %v = cta.project %x, %w, bias %b {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 16, 24>} : (tensor<2x4x8xf32>, tensor<8x24xf32>, tensor<24xf32>) -> tensor<2x2x4x4xf32>
  %o = cta.attention %q, %k, %v, mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "key_padding", ctac.source = "self"} : (tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32>, tensor<2x4xi64>) -> tensor<2x2x4x4xf32>
  func.return %o : tensor<2x2x4x4xf32>
}

// RUN: ctac-opt %s -p 'cta-compress{tau-q=0.25 tau-kv=0.5 hash-bits=6 seed=3}' | filecheck %s
// RUN: ctac-opt %s -p 'cta-compress{tau-q=0.0 tau-kv=0.0}' | ctac-opt | filecheck %s --check-prefix=ROUNDTRIP

// Per-head placement (the default): queries and keys are clustered per (batch, head) after
// projection, each with its own threshold; the key_padding mask goes to both clusterings; values
// follow the keys' clusters (cta.pool); the compressed attention weights each key centroid by
// its count; every token gets its query cluster's row back (cta.recover). Tables keep n rows.
// CHECK-LABEL: func.func @padded_self_attention(
// CHECK-NOT:     cta.attention
// CHECK:         %[[QC:[^ ]+]], %[[QN:[^ ]+]], %[[QID:[^ ]+]] = cta.cluster %q, mask %m {method = "hash-leader", tau = 2.500000e-01 : f64, hash_bits = 6 : i64, seed = 3 : i64, ctac.source = "layer0", ctac.role = "q"} : (tensor<2x2x8x4xf32>, tensor<2x8xi64>) -> (tensor<2x2x8x4xf32>, tensor<2x2x8xf32>, tensor<2x2x8xi64>)
// CHECK-NEXT:    %[[KC:[^ ]+]], %[[KN:[^ ]+]], %[[KID:[^ ]+]] = cta.cluster %k, mask %m {method = "hash-leader", tau = 5.000000e-01 : f64, hash_bits = 6 : i64, seed = 3 : i64, ctac.source = "layer0", ctac.role = "kv"} : (tensor<2x2x8x4xf32>, tensor<2x8xi64>) -> (tensor<2x2x8x4xf32>, tensor<2x2x8xf32>, tensor<2x2x8xi64>)
// CHECK-NEXT:    %[[VC:[^ ]+]] = cta.pool %v, %[[KID]] : (tensor<2x2x8x4xf32>, tensor<2x2x8xi64>) -> tensor<2x2x8x4xf32>
// CHECK-NEXT:    %[[OC:[^ ]+]] = cta.compressed_attention %[[QC]], %[[KC]], %[[VC]], %[[KN]] {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source = "layer0"} : (tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>, tensor<2x2x8xf32>) -> tensor<2x2x8x4xf32>
// CHECK-NEXT:    %o = cta.recover %[[OC]], %[[QID]] : (tensor<2x2x8x4xf32>, tensor<2x2x8xi64>) -> tensor<2x2x8x4xf32>
// CHECK-NEXT:    func.return %o
// ROUNDTRIP-LABEL: func.func @padded_self_attention(
// ROUNDTRIP:     cta.cluster %q, mask %m {method = "hash-leader", tau = 0.000000e+00 : f64, hash_bits = 4 : i64, seed = 0 : i64
// ROUNDTRIP:     cta.recover
func.func @padded_self_attention(%q: tensor<2x2x8x4xf32>, %k: tensor<2x2x8x4xf32>, %v: tensor<2x2x8x4xf32>, %m: tensor<2x8xi64>) -> tensor<2x2x8x4xf32> {
  %o = cta.attention %q, %k, %v, mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "key_padding", ctac.source = "layer0"} : (tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>, tensor<2x2x8x4xf32>, tensor<2x8xi64>) -> tensor<2x2x8x4xf32>
  func.return %o : tensor<2x2x8x4xf32>
}

// Cross-attention with GQA (4 query heads over 2 key/value heads, 3 queries over 8 keys): the
// key mask does not describe the queries, so only the keys' clustering gets it; counts and ids
// of the keys are per key/value head.
// CHECK-LABEL: func.func @cross_attention_gqa(
// CHECK:         %[[QC:[^ ]+]], %{{[^ ]+}}, %[[QID:[^ ]+]] = cta.cluster %q {method = "hash-leader", tau = 2.500000e-01 : f64, {{.*}}} : (tensor<1x4x3x4xf32>) -> (tensor<1x4x3x4xf32>, tensor<1x4x3xf32>, tensor<1x4x3xi64>)
// CHECK-NEXT:    %[[KC:[^ ]+]], %[[KN:[^ ]+]], %[[KID:[^ ]+]] = cta.cluster %k, mask %m {{.*}} : (tensor<1x2x8x4xf32>, tensor<1x8xi64>) -> (tensor<1x2x8x4xf32>, tensor<1x2x8xf32>, tensor<1x2x8xi64>)
// CHECK-NEXT:    %[[VC:[^ ]+]] = cta.pool %v, %[[KID]]
// CHECK-NEXT:    %[[OC:[^ ]+]] = cta.compressed_attention %[[QC]], %[[KC]], %[[VC]], %[[KN]] {num_heads = 4 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, ctac.source = "cross"} : (tensor<1x4x3x4xf32>, tensor<1x2x8x4xf32>, tensor<1x2x8x4xf32>, tensor<1x2x8xf32>) -> tensor<1x4x3x4xf32>
// CHECK-NEXT:    %o = cta.recover %[[OC]], %[[QID]] : (tensor<1x4x3x4xf32>, tensor<1x4x3xi64>) -> tensor<1x4x3x4xf32>
func.func @cross_attention_gqa(%q: tensor<1x4x3x4xf32>, %k: tensor<1x2x8x4xf32>, %v: tensor<1x2x8x4xf32>, %m: tensor<1x8xi64>) -> tensor<1x4x3x4xf32> {
  %o = cta.attention %q, %k, %v, mask %m {num_heads = 4 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "key_padding", ctac.source = "cross"} : (tensor<1x4x3x4xf32>, tensor<1x2x8x4xf32>, tensor<1x2x8x4xf32>, tensor<1x8xi64>) -> tensor<1x4x3x4xf32>
  func.return %o : tensor<1x4x3x4xf32>
}

// An additive mask is a per (query, key) bias that clusters cannot share: left exact.
// CHECK-LABEL: func.func @additive_is_left_alone(
// CHECK-NOT:     cta.cluster
// CHECK:         cta.attention %q, %k, %v, mask %b
// CHECK-NOT:     cta.cluster
func.func @additive_is_left_alone(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>, %b: tensor<1x1x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %o = cta.attention %q, %k, %v, mask %b {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, mask_kind = "additive"} : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>, tensor<1x1x4x4xf32>) -> tensor<1x2x4x4xf32>
  func.return %o : tensor<1x2x4x4xf32>
}

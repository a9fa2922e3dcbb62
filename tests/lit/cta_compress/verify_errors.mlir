// RUN: ctac-opt %s --split-input-file --verify-diagnostics | filecheck %s
// RUN: ctac-opt %s --split-input-file --verify-diagnostics | filecheck %s --check-prefix=ALLFAIL

// Each chunk breaks one rule of the compression ops' verifiers; a chunk that verified would be
// printed in custom syntax (`builtin.module {`).
// ALLFAIL-NOT: builtin.module {

// CHECK: cta.cluster: counts must be f32 of shape (1, 4)
func.func @counts_not_f32(%x: tensor<1x4x2xf32>) {
  %c, %n, %i = cta.cluster %x {method = "leader", tau = 0.0 : f64, hash_bits = 0 : i64, seed = 0 : i64} : (tensor<1x4x2xf32>) -> (tensor<1x4x2xf32>, tensor<1x4xi64>, tensor<1x4xi64>)
  func.return
}

// -----

// CHECK: cta.cluster: method must be one of ('hash-leader', 'leader', 'hash-spread', 'spread')
func.func @unknown_method(%x: tensor<1x4x2xf32>) {
  %c, %n, %i = cta.cluster %x {method = "kmeans", tau = 0.0 : f64, hash_bits = 0 : i64, seed = 0 : i64} : (tensor<1x4x2xf32>) -> (tensor<1x4x2xf32>, tensor<1x4xf32>, tensor<1x4xi64>)
  func.return
}

// -----

// CHECK: cta.recover: ids shape (3, 6) should be (2, 3, 6) or (2, 6)
func.func @recover_ids_do_not_fit(%rows: tensor<2x3x4x5xf32>, %ids: tensor<3x6xi64>) {
  %o = cta.recover %rows, %ids : (tensor<2x3x4x5xf32>, tensor<3x6xi64>) -> tensor<2x3x6x5xf32>
  func.return
}

// -----

// CHECK: cta.compressed_attention: key_tokens, value_tokens and mask are for causal attention only
func.func @raw_keys_without_causal(%q: tensor<1x1x4x2xf32>, %k: tensor<1x1x4x2xf32>, %n: tensor<1x4xf32>) {
  %o = cta.compressed_attention %q, %k, %k, %n, key_tokens %k, value_tokens %k {num_heads = 1 : i64, kv_heads = 1 : i64, head_dim = 2 : i64, scale = 1.0 : f64} : (tensor<1x1x4x2xf32>, tensor<1x1x4x2xf32>, tensor<1x1x4x2xf32>, tensor<1x4xf32>, tensor<1x1x4x2xf32>, tensor<1x1x4x2xf32>) -> tensor<1x1x4x2xf32>
  func.return
}

// -----

// CHECK: cta.compressed_attention: causal attention needs key_tokens and value_tokens
func.func @causal_needs_raw_keys(%q: tensor<1x1x4x2xf32>, %k: tensor<1x1x4x2xf32>, %n: tensor<1x1x4xf32>) {
  %o = cta.compressed_attention %q, %k, %k, %n {num_heads = 1 : i64, kv_heads = 1 : i64, head_dim = 2 : i64, scale = 1.0 : f64, causal = 1 : i64, block = 2 : i64} : (tensor<1x1x4x2xf32>, tensor<1x1x4x2xf32>, tensor<1x1x4x2xf32>, tensor<1x1x4xf32>) -> tensor<1x1x4x2xf32>
  func.return
}

// -----

// Shared tokens (B, n, d) with per-head ids (B, H, n) give one table per (batch, head).
// CHECK: cta.pool: result shape (1, 4, 2) should be (1, 2, 4, 2)
func.func @per_head_pool_keeps_heads(%x: tensor<1x4x2xf32>, %ids: tensor<1x2x4xi64>) {
  %p = cta.pool %x, %ids : (tensor<1x4x2xf32>, tensor<1x2x4xi64>) -> tensor<1x4x2xf32>
  func.return
}

// -----

// CHECK: cta.project: a per-head input has 3 heads, the projection 2
func.func @per_head_project_heads(%x: tensor<1x3x4x8xf32>, %w: tensor<8x8xf32>) {
  %v = cta.project %x, %w {heads = 2 : i64, head_dim = 4 : i64, columns = array<i64: 0, 8>} : (tensor<1x3x4x8xf32>, tensor<8x8xf32>) -> tensor<1x2x4x4xf32>
  func.return
}

// RUN: ctac-opt %s -p 'cta-compress{tau-kv=0.3 block=4}' | filecheck %s
// RUN: ctac-opt %s -p 'cta-compress{tau-kv=0.3 block=4 compressed-blocks=1}' | filecheck %s --check-prefix=PREFIX

// Causal attention: the block-causal scheme. Keys are clustered inside blocks of 4 positions
// (`block` on cta.cluster puts block c's clusters in rows [4c, 4c + 4)); queries are not
// clustered; cta.compressed_attention gets the raw keys and values for each query's own block,
// the padding mask, and the block size. The KV-cache offset is kept. Only the first 2 of the 3
// blocks are clustered (8 of 12 positions: the last block's clusters no query sees), so the
// table, its counts and ids and the pooled values have 8 rows; compressed-blocks=1 clusters 4.
// PREFIX-LABEL: func.func @causal_padded(
// PREFIX:         cta.cluster %k, mask %m {{.*}} -> (tensor<1x2x4x4xf32>, tensor<1x2x4xf32>, tensor<1x2x4xi64>)
// PREFIX-NEXT:    cta.pool %v, %{{[^ ]+}} : (tensor<1x2x12x4xf32>, tensor<1x2x4xi64>) -> tensor<1x2x4x4xf32>
// CHECK-LABEL: func.func @causal_padded(
// CHECK-NOT:     cta.attention
// CHECK:         %[[KC:[^ ]+]], %[[KN:[^ ]+]], %[[KID:[^ ]+]] = cta.cluster %k, mask %m {method = "hash-leader", tau = 3.000000e-01 : f64, hash_bits = 4 : i64, seed = 0 : i64, block = 4 : i64, ctac.source = "decoder0", ctac.role = "kv"} : (tensor<1x2x12x4xf32>, tensor<1x12xi64>) -> (tensor<1x2x8x4xf32>, tensor<1x2x8xf32>, tensor<1x2x8xi64>)
// CHECK-NEXT:    %[[VC:[^ ]+]] = cta.pool %v, %[[KID]] : (tensor<1x2x12x4xf32>, tensor<1x2x8xi64>) -> tensor<1x2x8x4xf32>
// CHECK-NEXT:    %o = cta.compressed_attention %q, %[[KC]], %[[VC]], %[[KN]], key_tokens %k, value_tokens %v, mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, causal = 1 : i64, block = 4 : i64, ctac.source = "decoder0"} : (tensor<1x2x12x4xf32>, tensor<1x2x8x4xf32>, tensor<1x2x8x4xf32>, tensor<1x2x8xf32>, tensor<1x2x12x4xf32>, tensor<1x2x12x4xf32>, tensor<1x12xi64>) -> tensor<1x2x12x4xf32>
// CHECK-NEXT:    func.return %o
func.func @causal_padded(%q: tensor<1x2x12x4xf32>, %k: tensor<1x2x12x4xf32>, %v: tensor<1x2x12x4xf32>, %m: tensor<1x12xi64>) -> tensor<1x2x12x4xf32> {
  %o = cta.attention %q, %k, %v, mask %m {num_heads = 2 : i64, kv_heads = 2 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, causal = 1 : i64, mask_kind = "key_padding", ctac.source = "decoder0"} : (tensor<1x2x12x4xf32>, tensor<1x2x12x4xf32>, tensor<1x2x12x4xf32>, tensor<1x12xi64>) -> tensor<1x2x12x4xf32>
  func.return %o : tensor<1x2x12x4xf32>
}

// Top-left causal with fewer queries than keys keeps its explicit causal_offset.
// CHECK-LABEL: func.func @causal_offset(
// CHECK:         cta.compressed_attention %q, %{{[^ ]+}}, %{{[^ ]+}}, %{{[^ ]+}}, key_tokens %k, value_tokens %v {num_heads = 1 : i64, kv_heads = 1 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, causal = 1 : i64, block = 4 : i64, causal_offset = 0 : i64, ctac.source = "onnx_attention"} : (tensor<1x1x3x4xf32>, tensor<1x1x4x4xf32>, tensor<1x1x4x4xf32>, tensor<1x1x4xf32>, tensor<1x1x8x4xf32>, tensor<1x1x8x4xf32>) -> tensor<1x1x3x4xf32>
func.func @causal_offset(%q: tensor<1x1x3x4xf32>, %k: tensor<1x1x8x4xf32>, %v: tensor<1x1x8x4xf32>) -> tensor<1x1x3x4xf32> {
  %o = cta.attention %q, %k, %v {num_heads = 1 : i64, kv_heads = 1 : i64, head_dim = 4 : i64, scale = 5.000000e-01 : f64, causal = 1 : i64, causal_offset = 0 : i64, ctac.source = "onnx_attention"} : (tensor<1x1x3x4xf32>, tensor<1x1x8x4xf32>, tensor<1x1x8x4xf32>) -> tensor<1x1x3x4xf32>
  func.return %o : tensor<1x1x3x4xf32>
}

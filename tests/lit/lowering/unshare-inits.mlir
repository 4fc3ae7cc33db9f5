// RUN: dsv3-opt %s -dsv3-unshare-inits | FileCheck %s
// RUN: dsv3-opt %s -dsv3-materialize-params -dsv3-unshare-inits -eliminate-empty-tensors -one-shot-bufferize | FileCheck %s --check-prefix=BUF

// Two GEMMs from one CSE'd zero init, both returned (as the pipeline
// chunks return values a later chunk needs). Each gets its own init, so
// empty-tensor elimination gives each its own output buffer. Without the
// pass, bufferization computes the second GEMM in the first one's output
// buffer and finally copies the first result over it: both outputs would
// hold the first GEMM.

// CHECK-LABEL: func.func @two_gemms
// CHECK:       %[[E1:.*]] = tensor.empty() : tensor<4x3xf32>
// CHECK:       %[[I1:.*]] = linalg.fill ins(%{{.*}} : f32) outs(%[[E1]] : tensor<4x3xf32>)
// CHECK:       %[[A:.*]] = linalg.matmul ins(%{{.*}}) outs(%[[I1]] : tensor<4x3xf32>)
// CHECK:       %[[E2:.*]] = tensor.empty() : tensor<4x3xf32>
// CHECK:       %[[I2:.*]] = linalg.fill ins(%{{.*}} : f32) outs(%[[E2]] : tensor<4x3xf32>)
// CHECK:       %[[B:.*]] = linalg.matmul ins(%{{.*}}) outs(%[[I2]] : tensor<4x3xf32>)
// The elementwise add had the empty as its init too: it gets a fresh one.
// CHECK:       %[[E3:.*]] = tensor.empty() : tensor<4x3xf32>
// CHECK:       linalg.add ins(%[[A]], %[[B]] : {{.*}}) outs(%[[E3]] : tensor<4x3xf32>)

// BUF-LABEL: func.func @two_gemms
// BUF-SAME:    %[[X:[a-z0-9]+]]: memref<4x8xf32>, %[[W1:[a-z0-9]+]]: memref<8x3xf32>, %[[W2:[a-z0-9]+]]: memref<8x3xf32>, %[[OUT_A:[a-z0-9]+]]: memref<4x3xf32>, %[[OUT_B:[a-z0-9]+]]: memref<4x3xf32>, %[[OUT_SUM:[a-z0-9]+]]: memref<4x3xf32>
// BUF-NOT:     memref.alloc
// BUF:         linalg.matmul ins(%[[X]], %[[W1]] : {{.*}}) outs(%[[OUT_A]] : memref<4x3xf32>)
// BUF:         linalg.matmul ins(%[[X]], %[[W2]] : {{.*}}) outs(%[[OUT_B]] : memref<4x3xf32>)
// BUF:         linalg.add ins(%[[OUT_A]], %[[OUT_B]] : {{.*}}) outs(%[[OUT_SUM]] : memref<4x3xf32>)
// BUF-NOT:     memref.copy %[[OUT_A]], %[[OUT_B]]
func.func @two_gemms(%x: tensor<4x8xf32>, %w1: tensor<8x3xf32>, %w2: tensor<8x3xf32>)
    -> (tensor<4x3xf32>, tensor<4x3xf32>, tensor<4x3xf32>) {
  %zero = arith.constant 0.0 : f32
  %empty = tensor.empty() : tensor<4x3xf32>
  %init = linalg.fill ins(%zero : f32) outs(%empty : tensor<4x3xf32>) -> tensor<4x3xf32>
  %a = linalg.matmul ins(%x, %w1 : tensor<4x8xf32>, tensor<8x3xf32>) outs(%init : tensor<4x3xf32>) -> tensor<4x3xf32>
  %b = linalg.matmul ins(%x, %w2 : tensor<4x8xf32>, tensor<8x3xf32>) outs(%init : tensor<4x3xf32>) -> tensor<4x3xf32>
  %sum = linalg.add ins(%a, %b : tensor<4x3xf32>, tensor<4x3xf32>) outs(%empty : tensor<4x3xf32>) -> tensor<4x3xf32>
  return %a, %b, %sum : tensor<4x3xf32>, tensor<4x3xf32>, tensor<4x3xf32>
}

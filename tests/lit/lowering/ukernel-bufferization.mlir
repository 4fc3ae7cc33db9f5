// RUN: dsv3-opt %s -cse -one-shot-bufferize | FileCheck %s

// Why every runtime kernel must overwrite its outputs entirely (the
// contract dsv3_codegen.ukernel states, and the reason CSE once ran only on dsv3
// ops). The bufferization model declares a ukernel's `outs` written, never
// read. CSE merges the two zero-filled destinations into one; one-shot
// bufferization then gives the fill's buffer to one kernel and a fresh,
// uninitialised allocation to the other, without copying the zeros: that is
// correct because the fill is dead for a kernel that writes every element.
// A kernel that skipped part of its output (as the grouped expert kernels
// once did for rows outside every group) read garbage there: the miscompile
// seen on the expert weight gradients. Since those kernels clear such rows
// themselves, CSE runs after the conversion to linalg as well.
// CHECK-LABEL: func.func @shared_destination
// CHECK: %[[FILLED:.*]] = memref.alloc()
// CHECK: linalg.fill ins(%{{.*}} : f32) outs(%[[FILLED]] : memref<4x8xf32>)
// CHECK: %[[FRESH:.*]] = memref.alloc()
// CHECK-NOT: linalg.fill
// CHECK-NOT: memref.copy
// CHECK: dsv3_codegen.ukernel "dsv3rt_first" {{.*}} outs(%[[FRESH]] : memref<4x8xf32>)
// CHECK: dsv3_codegen.ukernel "dsv3rt_second" {{.*}} outs(%[[FILLED]] : memref<4x8xf32>)
func.func @shared_destination(%a: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>) {
  %c0 = arith.constant 0.0 : f32
  %e1 = tensor.empty() : tensor<4x8xf32>
  %z1 = linalg.fill ins(%c0 : f32) outs(%e1 : tensor<4x8xf32>) -> tensor<4x8xf32>
  %r1 = dsv3_codegen.ukernel "dsv3rt_first" ins(%a : tensor<4x8xf32>) outs(%z1 : tensor<4x8xf32>) -> tensor<4x8xf32>
  %e2 = tensor.empty() : tensor<4x8xf32>
  %z2 = linalg.fill ins(%c0 : f32) outs(%e2 : tensor<4x8xf32>) -> tensor<4x8xf32>
  %r2 = dsv3_codegen.ukernel "dsv3rt_second" ins(%a : tensor<4x8xf32>) outs(%z2 : tensor<4x8xf32>) -> tensor<4x8xf32>
  return %r1, %r2 : tensor<4x8xf32>, tensor<4x8xf32>
}

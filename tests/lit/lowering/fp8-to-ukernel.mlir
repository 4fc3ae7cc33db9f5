// RUN: dsv3-opt %s -convert-dsv3-to-linalg | FileCheck %s --check-prefix=TENSOR
// RUN: dsv3-opt %s -convert-dsv3-to-linalg -one-shot-bufferize -dsv3-linalg-to-ukernel | FileCheck %s --check-prefix=CALL

// FP8 ops become destination-style ukernel ops with their tiles, formats
// and layouts as i64 scalars, then calls on strided descriptors.
// TENSOR-LABEL: func.func @fp8_layer
// TENSOR: %[[Q:.*]]:2 = dsv3.ukernel "dsv3rt_fp8_quantize" ins(%{{.*}}, %c1_i64, %c128_i64, %c0_i64, %c0_i64 : tensor<4x256xf32>, i64, i64, i64, i64) outs(%{{.*}}, %{{.*}} : tensor<4x256xf8E4M3FN>, tensor<4x2xf32>) -> tensor<4x256xf8E4M3FN>, tensor<4x2xf32>
// TENSOR: dsv3.ukernel "dsv3rt_fp8_gemm" ins(%[[Q]]#0, %[[Q]]#1, %{{.*}}, %{{.*}}, %c0_i64, %c1_i64, %c0_i64, %c0_i64 : {{.*}}) outs(%{{.*}} : tensor<4x256xf32>) -> tensor<4x256xf32>

// CALL-DAG: func.func private @dsv3rt_fp8_quantize(memref<?x?xf32, strided<[?, ?], offset: ?>>, i64, i64, i64, i64, memref<?x?xf8E4M3FN, strided<[?, ?], offset: ?>>, memref<?x?xf32, strided<[?, ?], offset: ?>>) attributes {llvm.emit_c_interface}
// CALL-DAG: func.func private @dsv3rt_fp8_gemm({{.*}}) attributes {llvm.emit_c_interface}
// CALL-LABEL: func.func @fp8_layer
// CALL: call @dsv3rt_fp8_quantize(
// CALL: call @dsv3rt_fp8_gemm(
// CALL-NOT: dsv3.ukernel
func.func @fp8_layer(%xm: memref<4x256xf32>, %wm: memref<256x256xf8E4M3FN>, %swm: memref<2x2xf32>, %ym: memref<4x256xf32>) {
  %x = bufferization.to_tensor %xm restrict : memref<4x256xf32> to tensor<4x256xf32>
  %w = bufferization.to_tensor %wm restrict : memref<256x256xf8E4M3FN> to tensor<256x256xf8E4M3FN>
  %sw = bufferization.to_tensor %swm restrict : memref<2x2xf32> to tensor<2x2xf32>
  %q, %s = dsv3.fp8_quantize %x {tile = array<i64: 1, 128>} : (tensor<4x256xf32>) -> (tensor<4x256xf8E4M3FN>, tensor<4x2xf32>)
  %y = dsv3.fp8_gemm %q, %s, %w, %sw {promotion_interval = 128, transpose_b} : (tensor<4x256xf8E4M3FN>, tensor<4x2xf32>, tensor<256x256xf8E4M3FN>, tensor<2x2xf32>) -> tensor<4x256xf32>
  bufferization.materialize_in_destination %y in restrict writable %ym : (tensor<4x256xf32>, memref<4x256xf32>) -> ()
  return
}

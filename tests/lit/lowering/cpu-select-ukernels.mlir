// RUN: dsv3-opt %s -split-input-file -dsv3-cpu-select-ukernels | FileCheck %s --check-prefix=TENSOR
// RUN: dsv3-opt %s -split-input-file -dsv3-cpu-select-ukernels -convert-dsv3-to-linalg -one-shot-bufferize -dsv3-cpu-lower-ukernels | FileCheck %s --check-prefix=CALL
// A family turned off keeps its dsv3 ops for the reference lowering.
// RUN: dsv3-opt %s -split-input-file -dsv3-cpu-select-ukernels='fp8=false attention=false moe=false' | FileCheck %s --check-prefix=NONE --implicit-check-not=dsv3_codegen.ukernel

// FP8 ops become destination-style ukernel ops with their tiles, formats
// and layouts as i64 scalars, then calls on strided descriptors.
// NONE-LABEL: func.func @fp8_layer
// NONE: dsv3.fp8_quantize
// NONE: dsv3.fp8_gemm
// TENSOR-LABEL: func.func @fp8_layer
// TENSOR: %[[Q:.*]]:2 = dsv3_codegen.ukernel "dsv3rt_fp8_quantize" ins(%{{.*}}, %c1_i64, %c128_i64, %c0_i64, %c0_i64 : tensor<4x256xf32>, i64, i64, i64, i64) outs(%{{.*}}, %{{.*}} : tensor<4x256xf8E4M3FN>, tensor<4x2xf32>) -> tensor<4x256xf8E4M3FN>, tensor<4x2xf32>
// TENSOR: dsv3_codegen.ukernel "dsv3rt_fp8_gemm" ins(%[[Q]]#0, %[[Q]]#1, %{{.*}}, %{{.*}}, %c0_i64, %c1_i64, %c0_i64, %c0_i64 : {{.*}}) outs(%{{.*}} : tensor<4x256xf32>) -> tensor<4x256xf32>

// CALL-DAG: func.func private @dsv3rt_fp8_quantize(memref<?x?xf32, strided<[?, ?], offset: ?>>, i64, i64, i64, i64, memref<?x?xf8E4M3FN, strided<[?, ?], offset: ?>>, memref<?x?xf32, strided<[?, ?], offset: ?>>) attributes {llvm.emit_c_interface}
// CALL-DAG: func.func private @dsv3rt_fp8_gemm({{.*}}) attributes {llvm.emit_c_interface}
// CALL-LABEL: func.func @fp8_layer
// CALL: call @dsv3rt_fp8_quantize(
// CALL: call @dsv3rt_fp8_gemm(
// CALL-NOT: dsv3_codegen.ukernel
func.func @fp8_layer(%xm: memref<4x256xf32>, %wm: memref<256x256xf8E4M3FN>, %swm: memref<2x2xf32>, %ym: memref<4x256xf32>) {
  %x = bufferization.to_tensor %xm restrict : memref<4x256xf32> to tensor<4x256xf32>
  %w = bufferization.to_tensor %wm restrict : memref<256x256xf8E4M3FN> to tensor<256x256xf8E4M3FN>
  %sw = bufferization.to_tensor %swm restrict : memref<2x2xf32> to tensor<2x2xf32>
  %q, %s = dsv3.fp8_quantize %x {tile = array<i64: 1, 128>} : (tensor<4x256xf32>) -> (tensor<4x256xf8E4M3FN>, tensor<4x2xf32>)
  %y = dsv3.fp8_gemm %q, %s, %w, %sw {promotion_interval = 128, transpose_b} : (tensor<4x256xf8E4M3FN>, tensor<4x2xf32>, tensor<256x256xf8E4M3FN>, tensor<2x2xf32>) -> tensor<4x256xf32>
  bufferization.materialize_in_destination %y in restrict writable %ym : (tensor<4x256xf32>, memref<4x256xf32>) -> ()
  return
}

// -----

// Expert layouts pick their kernels: stacked weights, grouped row tiles and
// the two grouped GEMMs, with the dispatch offsets passed as a memref.
// TENSOR-LABEL: func.func @fp8_experts
// TENSOR: dsv3_codegen.ukernel "dsv3rt_fp8_quantize_stacked" ins(%{{.*}}, %c128_i64, %c128_i64, %c0_i64, %c0_i64 : tensor<4x32x256xf32>, i64, i64, i64, i64)
// TENSOR: dsv3_codegen.ukernel "dsv3rt_fp8_m_grouped_gemm" ins({{.*}}, %c0_i64, %c0_i64, %c0_i64 : tensor<64x256xf8E4M3FN>, tensor<64x2xf32>, tensor<4x32x256xf8E4M3FN>, tensor<4x1x2xf32>, tensor<5xi64>, i64, i64, i64)
// TENSOR: dsv3_codegen.ukernel "dsv3rt_fp8_quantize_grouped" ins(%{{.*}}, %{{.*}}, %c128_i64, %c1_i64, %c0_i64, %c0_i64 : tensor<64x32xf32>, tensor<5xi64>, i64, i64, i64, i64)
// TENSOR: dsv3_codegen.ukernel "dsv3rt_fp8_k_grouped_gemm" ins({{.*}} : tensor<64x32xf8E4M3FN>, tensor<5x32xf32>, tensor<64x256xf8E4M3FN>, tensor<5x256xf32>, tensor<5xi64>, i64, i64) outs(%{{.*}} : tensor<4x32x256xf32>)
// CALL-LABEL: func.func @fp8_experts
// CALL: call @dsv3rt_fp8_quantize_stacked(
// CALL: call @dsv3rt_fp8_m_grouped_gemm(
// CALL: call @dsv3rt_fp8_quantize_grouped(
// CALL: call @dsv3rt_fp8_k_grouped_gemm(
func.func @fp8_experts(%qx: tensor<64x256xf8E4M3FN>, %sx: tensor<64x2xf32>, %tx: tensor<64x256xf8E4M3FN>, %tsx: tensor<5x256xf32>, %w: tensor<4x32x256xf32>, %dy: tensor<64x32xf32>, %o: tensor<5xi64>) -> (tensor<64x32xf32>, tensor<4x32x256xf32>) {
  %qw, %sw = dsv3.fp8_quantize %w {tile = array<i64: 128, 128>} : (tensor<4x32x256xf32>) -> (tensor<4x32x256xf8E4M3FN>, tensor<4x1x2xf32>)
  %y = dsv3.fp8_m_grouped_gemm %qx, %sx, %qw, %sw, %o {promotion_interval = 128} : (tensor<64x256xf8E4M3FN>, tensor<64x2xf32>, tensor<4x32x256xf8E4M3FN>, tensor<4x1x2xf32>, tensor<5xi64>) -> tensor<64x32xf32>
  %qdy, %sdy = dsv3.fp8_quantize %dy groups %o {tile = array<i64: 128, 1>} : (tensor<64x32xf32>, tensor<5xi64>) -> (tensor<64x32xf8E4M3FN>, tensor<5x32xf32>)
  %dw = dsv3.fp8_k_grouped_gemm %qdy, %sdy, %tx, %tsx, %o {promotion_interval = 128} : (tensor<64x32xf8E4M3FN>, tensor<5x32xf32>, tensor<64x256xf8E4M3FN>, tensor<5x256xf32>, tensor<5xi64>) -> tensor<4x32x256xf32>
  return %y, %dw : tensor<64x32xf32>, tensor<4x32x256xf32>
}

// -----

// The attention core is the attention kernel; without segment ids every
// position is in document 0.
// TENSOR-LABEL: func.func @mla_core
// TENSOR-DAG: %[[SCALE:.*]] = arith.constant 5.000000e-01 : f64
// TENSOR-DAG: %[[ZERO:.*]] = arith.constant 0 : i64
// TENSOR: %[[SEG:.*]] = linalg.fill ins(%[[ZERO]] : i64) outs(%{{.*}} : tensor<1x4xi64>)
// TENSOR: dsv3_codegen.ukernel "dsv3rt_mla_attention" ins(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[SEG]], %[[SCALE]] : {{.*}}, tensor<1x4xi64>, f64) outs(%{{.*}} : tensor<1x4x2x3xf32>)
// TENSOR: dsv3_codegen.ukernel "dsv3rt_mla_attention_grad" ins({{.*}} : {{.*}}, tensor<1x4xi64>, f64, tensor<1x4x2x3xf32>) outs(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<1x4x2x3xf32>, tensor<1x4x2x2xf32>, tensor<1x4x2x3xf32>, tensor<1x4x2xf32>, tensor<1x4x2x3xf32>)
// CALL-LABEL: func.func @mla_core
// CALL: call @dsv3rt_mla_attention(
// CALL: call @dsv3rt_mla_attention_grad(
// NONE-LABEL: func.func @mla_core
// NONE: dsv3.mla_core
// NONE: dsv3.mla_core_grad
func.func @mla_core(%q: tensor<1x4x2x3xf32>, %qr: tensor<1x4x2x2xf32>, %kr: tensor<1x4x2xf32>) -> (tensor<1x4x2x3xf32>, tensor<1x4x2x3xf32>) {
  %o = dsv3.mla_core %q, %qr, %q, %kr, %q {softmax_scale = 0.5 : f64}
      : (tensor<1x4x2x3xf32>, tensor<1x4x2x2xf32>, tensor<1x4x2x3xf32>, tensor<1x4x2xf32>, tensor<1x4x2x3xf32>) -> tensor<1x4x2x3xf32>
  %dq, %dqr, %dk, %dkr, %dv = dsv3.mla_core_grad %q, %qr, %q, %kr, %q, %o {softmax_scale = 0.5 : f64}
      : (tensor<1x4x2x3xf32>, tensor<1x4x2x2xf32>, tensor<1x4x2x3xf32>, tensor<1x4x2xf32>, tensor<1x4x2x3xf32>, tensor<1x4x2x3xf32>)
      -> (tensor<1x4x2x3xf32>, tensor<1x4x2x2xf32>, tensor<1x4x2x3xf32>, tensor<1x4x2xf32>, tensor<1x4x2x3xf32>)
  return %o, %dq : tensor<1x4x2x3xf32>, tensor<1x4x2x3xf32>
}

// -----

// The absorbed decode core is the latent attention kernel; W_UK and W_UV stay
// views of kv_b (strided memrefs for the kernel).
// TENSOR-LABEL: func.func @mla_absorbed_core
// TENSOR: %[[SCALE:.*]] = arith.constant 5.000000e-01 : f64
// TENSOR: dsv3_codegen.ukernel "dsv3rt_mla_absorbed_attention" ins(%arg0, %arg1, %arg2, %arg3, %arg4, %arg5, %arg6, %[[SCALE]] : {{.*}}, tensor<2x1xi64>, f64) outs(%{{.*}} : tensor<2x1x2x3xf32>)
// CALL-LABEL: func.func @mla_absorbed_core
// CALL: call @dsv3rt_mla_absorbed_attention(
// NONE-LABEL: func.func @mla_absorbed_core
// NONE: dsv3.mla_absorbed_core
func.func @mla_absorbed_core(%qn: tensor<2x1x2x3xf32>, %qr: tensor<2x1x2x2xf32>, %uk: tensor<2x3x4xf32>, %uv: tensor<2x3x4xf32>,
                             %cache: tensor<2x5x6xf32>, %rows: tensor<2x1x6xf32>, %p: tensor<2x1xi64>) -> tensor<2x1x2x3xf32> {
  %o = dsv3.mla_absorbed_core %qn, %qr, %uk, %uv, %cache, %rows, %p {softmax_scale = 0.5 : f64}
      : (tensor<2x1x2x3xf32>, tensor<2x1x2x2xf32>, tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x5x6xf32>, tensor<2x1x6xf32>, tensor<2x1xi64>) -> tensor<2x1x2x3xf32>
  return %o : tensor<2x1x2x3xf32>
}

// -----

// Over a BF16 cache, its own kernel widens rows as it reads them.
// TENSOR-LABEL: func.func @mla_absorbed_core_bf16
// TENSOR: dsv3_codegen.ukernel "dsv3rt_mla_absorbed_attention_bf16" ins({{.*}}, tensor<1x5x6xbf16>, {{.*}})
// CALL-LABEL: func.func @mla_absorbed_core_bf16
// CALL: call @dsv3rt_mla_absorbed_attention_bf16(
// NONE-LABEL: func.func @mla_absorbed_core_bf16
func.func @mla_absorbed_core_bf16(%qn: tensor<1x1x2x3xf32>, %qr: tensor<1x1x2x2xf32>, %uk: tensor<2x3x4xf32>, %uv: tensor<2x3x4xf32>,
                                  %cache: tensor<1x5x6xbf16>, %rows: tensor<1x1x6xf32>, %p: tensor<1x1xi64>) -> tensor<1x1x2x3xf32> {
  %o = dsv3.mla_absorbed_core %qn, %qr, %uk, %uv, %cache, %rows, %p {softmax_scale = 0.5 : f64}
      : (tensor<1x1x2x3xf32>, tensor<1x1x2x2xf32>, tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<1x5x6xbf16>, tensor<1x1x6xf32>, tensor<1x1xi64>) -> tensor<1x1x2x3xf32>
  return %o : tensor<1x1x2x3xf32>
}

// -----

// Routed experts: the dispatch sort is a kernel and the gather of rows a
// generic; the grouped GEMM reads its offsets as a memref.
// TENSOR-LABEL: func.func @experts
// TENSOR: %[[ORDER:.*]]:3 = dsv3_codegen.ukernel "dsv3rt_moe_dispatch_order" ins(%{{.*}}, %c4_i64 : tensor<3x2xi64>, i64) outs({{.*}} : tensor<3x2xi64>, tensor<6xi64>, tensor<5xi64>)
// TENSOR: %[[ROWS:.*]] = linalg.generic {{.*}} ins(%[[ORDER]]#1 : tensor<6xi64>)
// TENSOR: dsv3_codegen.ukernel "dsv3rt_grouped_matmul_nt_f32" ins(%[[ROWS]], %{{.*}}, %[[ORDER]]#2 : tensor<6x8xf32>, tensor<4x5x8xf32>, tensor<5xi64>)
// CALL-LABEL: func.func @experts
// CALL: call @dsv3rt_moe_dispatch_order(
// CALL: call @dsv3rt_grouped_matmul_nt_f32(
// NONE-LABEL: func.func @experts
// NONE: dsv3.moe_dispatch
// NONE: dsv3.grouped_linear
func.func @experts(%x: tensor<3x8xf32>, %ids: tensor<3x2xi64>, %w: tensor<4x5x8xf32>) -> tensor<6x5xf32> {
  %rows, %ros, %sor, %off = dsv3.moe_dispatch %x, %ids {num_experts = 4 : i64}
      : (tensor<3x8xf32>, tensor<3x2xi64>) -> (tensor<6x8xf32>, tensor<3x2xi64>, tensor<6xi64>, tensor<5xi64>)
  %h = dsv3.grouped_linear %rows, %w, %off : (tensor<6x8xf32>, tensor<4x5x8xf32>, tensor<5xi64>) -> tensor<6x5xf32>
  return %h : tensor<6x5xf32>
}

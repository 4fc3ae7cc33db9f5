// RUN: dsv3-opt %s -convert-dsv3-to-linalg -split-input-file | FileCheck %s

// The reference lowering of the FP8 ops (no kernel selected): generics that
// encode codes with integer arithmetic and bitcast them from i8, decode them
// through a 256-entry table, and GEMMs that sum each 128-wide K block in an
// scf.for before promoting it. No dsv3 op and no ukernel remains.

// Activation tiles 1x128 on a K of 64 (one partial tile): amax reduction
// over the tile's rows and columns, the scale, then the encoding.
// CHECK-LABEL: func.func @quantize_rows
// CHECK-NOT: dsv3.
// CHECK-DAG: arith.constant 4.480000e+02 : f32
// CHECK-DAG: arith.constant 4.640000e+02 : f32
// CHECK: tensor.expand_shape %{{.*}} {{\[\[}}0, 1], [2]] {{.*}} into tensor<1x4x64xf32>
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "parallel", "reduction", "reduction"]
// CHECK: math.absf
// CHECK: arith.maxnumf
// CHECK: linalg.generic
// CHECK: arith.divf
// CHECK: linalg.generic
// CHECK: arith.bitcast %{{.*}} : f32 to i32
// CHECK: math.roundeven
// CHECK: arith.trunci %{{.*}} : i32 to i8
// CHECK: arith.bitcast %{{.*}} : i8 to f8E4M3FN
// CHECK: tensor.collapse_shape {{.*}} into tensor<4x64xf8E4M3FN>
// CHECK: tensor.collapse_shape {{.*}} into tensor<4x1xf32>
// CHECK-NOT: dsv3.
func.func @quantize_rows(%x: tensor<4x64xf32>) -> (tensor<4x64xf8E4M3FN>, tensor<4x1xf32>) {
  %q, %s = dsv3.fp8_quantize %x {tile = array<i64: 1, 128>} : (tensor<4x64xf32>) -> (tensor<4x64xf8E4M3FN>, tensor<4x1xf32>)
  return %q, %s : tensor<4x64xf8E4M3FN>, tensor<4x1xf32>
}

// -----

// E5M2 with power-of-two scales on stacked expert weights (128x128 blocks
// per slice): NaN keeps its class (0x7E), the scale's mantissa is tested.
// CHECK-LABEL: func.func @quantize_stacked_e5m2
// CHECK-NOT: dsv3.
// CHECK-DAG: arith.constant 5.734400e+04 : f32
// CHECK-DAG: arith.constant 61439.9961 : f32
// CHECK: linalg.generic
// CHECK: linalg.generic
// CHECK: arith.andi %{{.*}}, %{{.*}} : i32
// CHECK: arith.cmpi ne
// CHECK: linalg.generic
// CHECK: arith.cmpf uno
// CHECK: arith.bitcast %{{.*}} : i8 to f8E5M2
// CHECK-NOT: tensor.collapse_shape
// CHECK-NOT: dsv3.
func.func @quantize_stacked_e5m2(%w: tensor<2x32x64xf32>) -> (tensor<2x32x64xf8E5M2>, tensor<2x1x1xf32>) {
  %q, %s = dsv3.fp8_quantize %w {tile = array<i64: 128, 128>, power_of_two_scales} : (tensor<2x32x64xf32>) -> (tensor<2x32x64xf8E5M2>, tensor<2x1x1xf32>)
  return %q, %s : tensor<2x32x64xf8E5M2>, tensor<2x1x1xf32>
}

// -----

// Grouped 128x1 tiles: the group ranges and tile starts in an scf.for over
// the groups, the rows of each tile and the tile of each row as reductions
// over the groups, then amax, scales and codes.
// CHECK-LABEL: func.func @quantize_grouped
// CHECK-NOT: dsv3.
// CHECK: scf.for
// CHECK: tensor.extract %{{.*}} : tensor<5xi64>
// CHECK: arith.maxsi
// CHECK: arith.minsi
// CHECK: tensor.insert
// CHECK: scf.yield
// CHECK: tensor.insert %{{.*}} : tensor<5xi64>
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]{{.*}} outs({{.*}} : tensor<5xi64>, tensor<5xi64>)
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]{{.*}} outs({{.*}} : tensor<64xi64>)
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "parallel", "reduction", "reduction"]
// CHECK: linalg.generic {{.*}} outs(%{{.*}} : tensor<1x5x32xf32>)
// CHECK: linalg.generic {{.*}} outs(%{{.*}} : tensor<1x64x32xf8E4M3FN>)
// CHECK: arith.bitcast %{{.*}} : i8 to f8E4M3FN
// CHECK-NOT: dsv3.
func.func @quantize_grouped(%dy: tensor<64x32xf32>, %o: tensor<5xi64>) -> (tensor<64x32xf8E4M3FN>, tensor<5x32xf32>) {
  %q, %s = dsv3.fp8_quantize %dy groups %o {tile = array<i64: 128, 1>} : (tensor<64x32xf32>, tensor<5xi64>) -> (tensor<64x32xf8E4M3FN>, tensor<5x32xf32>)
  return %q, %s : tensor<64x32xf8E4M3FN>, tensor<5x32xf32>
}

// -----

// Dequantization: decode table lookup times the tile's scale.
// CHECK-LABEL: func.func @dequantize
// CHECK-NOT: dsv3.
// CHECK: %[[T:.*]] = arith.constant dense<{{.*}}> : tensor<256xf32>
// CHECK: linalg.generic
// CHECK: arith.bitcast %{{.*}} : f8E4M3FN to i8
// CHECK: arith.index_castui
// CHECK: tensor.extract %[[T]]
// CHECK: arith.mulf
// CHECK-NOT: dsv3.
func.func @dequantize(%q: tensor<4x256xf8E4M3FN>, %s: tensor<4x2xf32>) -> tensor<4x256xf32> {
  %x = dsv3.fp8_dequantize %q, %s {tile = array<i64: 1, 128>} : (tensor<4x256xf8E4M3FN>, tensor<4x2xf32>) -> tensor<4x256xf32>
  return %x : tensor<4x256xf32>
}

// -----

// The block-scaled GEMM (weight read transposed): decoded operands, scales
// per row and K block, then loops (m, n, kb) whose body sums the K block
// and promotes it with a fused multiply-add.
// CHECK-LABEL: func.func @gemm
// CHECK-NOT: dsv3.
// CHECK: linalg.generic {{.*}} outs(%{{.*}} : tensor<4x256xf32>)
// CHECK: linalg.generic {{.*}} outs(%{{.*}} : tensor<256x256xf32>)
// CHECK: linalg.generic {{.*}} outs(%{{.*}} : tensor<4x2xf32>)
// CHECK: linalg.generic {{.*}} outs(%{{.*}} : tensor<256x2xf32>)
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "reduction"]{{.*}} outs(%{{.*}} : tensor<4x256xf32>)
// CHECK: scf.for
// CHECK: arith.mulf
// CHECK: arith.addf
// CHECK: scf.yield
// CHECK: arith.mulf
// CHECK: math.fma
// CHECK-NOT: dsv3.
func.func @gemm(%q: tensor<4x256xf8E4M3FN>, %s: tensor<4x2xf32>, %w: tensor<256x256xf8E4M3FN>, %sw: tensor<2x2xf32>) -> tensor<4x256xf32> {
  %y = dsv3.fp8_gemm %q, %s, %w, %sw {promotion_interval = 128, transpose_b} : (tensor<4x256xf8E4M3FN>, tensor<4x2xf32>, tensor<256x256xf8E4M3FN>, tensor<2x2xf32>) -> tensor<4x256xf32>
  return %y : tensor<4x256xf32>
}

// -----

// Experts: the M-grouped GEMM (a row's group picks the expert; rows in no
// group stay 0) and the K-grouped one (each group walks its row tiles).
// CHECK-LABEL: func.func @grouped_gemms
// CHECK-NOT: dsv3.
// CHECK: scf.for
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "reduction"]{{.*}} outs(%{{.*}} : tensor<64xi64>)
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "reduction"]{{.*}} outs(%{{.*}} : tensor<64x32xf32>)
// CHECK: scf.if
// CHECK: scf.for
// CHECK: linalg.generic {{.*}}iterator_types = ["parallel", "parallel", "parallel"]{{.*}} outs(%{{.*}} : tensor<4x32x256xf32>)
// CHECK: scf.for
// CHECK: scf.for
// CHECK-NOT: dsv3.
func.func @grouped_gemms(%qx: tensor<64x256xf8E4M3FN>, %sx: tensor<64x2xf32>, %qw: tensor<4x32x256xf8E4M3FN>, %sw: tensor<4x1x2xf32>,
                         %qdy: tensor<64x32xf8E4M3FN>, %sdy: tensor<5x32xf32>, %tx: tensor<64x256xf8E4M3FN>, %tsx: tensor<5x256xf32>,
                         %o: tensor<5xi64>) -> (tensor<64x32xf32>, tensor<4x32x256xf32>) {
  %y = dsv3.fp8_m_grouped_gemm %qx, %sx, %qw, %sw, %o {promotion_interval = 128} : (tensor<64x256xf8E4M3FN>, tensor<64x2xf32>, tensor<4x32x256xf8E4M3FN>, tensor<4x1x2xf32>, tensor<5xi64>) -> tensor<64x32xf32>
  %dw = dsv3.fp8_k_grouped_gemm %qdy, %sdy, %tx, %tsx, %o {promotion_interval = 128} : (tensor<64x32xf8E4M3FN>, tensor<5x32xf32>, tensor<64x256xf8E4M3FN>, tensor<5x256xf32>, tensor<5xi64>) -> tensor<4x32x256xf32>
  return %y, %dw : tensor<64x32xf32>, tensor<4x32x256xf32>
}

//===- DSV3FP8Ops.td - FP8 tile quantization and block-scaled GEMM -*- tablegen -*-===//
//
// What `dsv3-fp8-tile-quantize` rewrites linear layers into (DeepSeek-V3
// fine-grained FP8, SPEC section 5). Codes carry their format in the element
// type (f8E4M3FN or f8E5M2); scales are explicit float32 tensors with one
// entry per tile, so dumps show the tiling.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_IR_DSV3FP8OPS_TD
#define DSV3_IR_DSV3FP8OPS_TD

include "ir/DSV3/DSV3Base.td"

def DSV3_FP8CodeTensor : TensorRankOf<[F8E4M3FN, F8E5M2], [2]>;
def DSV3_F32Matrix : TensorRankOf<[F32], [2]>;
// Stacked per-expert matrices [E, R, C], each tiled on its own.
def DSV3_FP8CodeStack : TensorRankOf<[F8E4M3FN, F8E5M2], [3]>;
def DSV3_F32Stack : TensorRankOf<[F32], [3]>;

def DSV3_FP8QuantizeOp : DSV3_PureOp<"fp8_quantize"> {
  let summary = "tile-wise FP8 quantization with online scales";
  let description = [{
    Splits `x [R, C]` into `tile = [tr, tc]` tiles and returns the codes
    `[R, C]` and one scale per tile, `[ceil(R/tr), ceil(C/tc)]`, with
    `scale = max(amax, 1e-4) / fmax` (`fmax` = 448 for E4M3, 57344 for E5M2)
    and `code = cast(x / scale)` rounded to nearest even. With
    `power_of_two_scales` the scale is rounded up to a power of two (UE8M0).
    `amax` is taken over the tile's finite values; NaN and infinite inputs
    give NaN codes (E4M3) or keep their class (E5M2).

    A rank-3 `x [E, R, C]` (stacked expert weights) is tiled slice by slice:
    scales `[E, ceil(R/tr), ceil(C/tc)]`, so no block spans two experts.
    With `groups` (the `[E+1]` offsets of `dsv3.moe_dispatch`), row tiles
    restart at each group's first row, as if every group were padded to a
    multiple of `tr` rows: the tiles of group `e` follow those of the groups
    before it, and scales has `ceil(R/tr) + E` rows (a bound; rows past the
    last tile are 0). This is how the weight gradient of the routed experts
    tiles tokens 128x1 without a tile mixing two experts' tokens.

    ```mlir
    %q, %s = dsv3.fp8_quantize %x {tile = array<i64: 1, 128>}
             : (tensor<64x256xf32>) -> (tensor<64x256xf8E4M3FN>, tensor<64x2xf32>)
    %qg, %sg = dsv3.fp8_quantize %rows groups %offsets {tile = array<i64: 128, 1>}
             : (tensor<256x64xf32>, tensor<17xi64>) -> (tensor<256x64xf8E4M3FN>, tensor<18x64xf32>)
    ```
  }];
  let arguments = (ins AnyTypeOf<[DSV3_F32Matrix, DSV3_F32Stack]>:$x,
                       Optional<DSV3_IndexTensor>:$groups,
                       DenseI64ArrayAttr:$tile, UnitAttr:$power_of_two_scales);
  let results = (outs AnyTypeOf<[DSV3_FP8CodeTensor, DSV3_FP8CodeStack]>:$codes,
                      AnyTypeOf<[DSV3_F32Matrix, DSV3_F32Stack]>:$scales);
  let assemblyFormat = "$x (`groups` $groups^)? attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_FP8DequantizeOp : DSV3_PureOp<"fp8_dequantize"> {
  let summary = "codes times the scale of their tile";
  let description = [{
    The inverse of `dsv3.fp8_quantize` (up to rounding): used where the
    recipe caches an activation in FP8 and re-quantizes it with other tiles.

    ```mlir
    %x = dsv3.fp8_dequantize %q, %s {tile = array<i64: 1, 128>}
         : (tensor<64x256xf8E4M3FN>, tensor<64x2xf32>) -> tensor<64x256xf32>
    ```
  }];
  let arguments = (ins DSV3_FP8CodeTensor:$codes, DSV3_F32Matrix:$scales,
                       DenseI64ArrayAttr:$tile);
  let results = (outs DSV3_F32Matrix:$result);
  let assemblyFormat = "$codes `,` $scales attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_FP8GemmOp : DSV3_PureOp<"fp8_gemm"> {
  let summary = "block-scaled FP8 GEMM with FP32 promotion: y = A B^T";
  let description = [{
    `y[m, n] = sum_kb (sum_{k in kb} A[m,k] B[n,k]) * sA[m, kb] * sB[n, kb]`:
    each `promotion_interval`-wide block of K is summed in FP32 and scaled
    before it is added to the FP32 result. A is `[M, K]` (`[K, M]` with
    `transpose_a`), B is `[N, K]` (`[K, N]` with `transpose_b`); each scale
    tensor is laid out like its codes with one entry per tile, and its tiles
    span `promotion_interval` along K and 1 or 128 along the other dimension.
    Forward: `A` = activation (1x128 tiles), `B` = weight (128x128 blocks).
    Input gradient: `A` = output gradient (1x128), `B` = the same weight
    blocks read transposed. Weight gradient: both operands transposed, tiled
    128x1 along tokens.

    ```mlir
    %y = dsv3.fp8_gemm %qa, %sa, %qw, %sw {promotion_interval = 128}
         : (tensor<64x256xf8E4M3FN>, tensor<64x2xf32>, tensor<512x256xf8E4M3FN>, tensor<4x2xf32>) -> tensor<64x512xf32>
    ```
  }];
  let arguments = (ins DSV3_FP8CodeTensor:$a, DSV3_F32Matrix:$a_scales,
                       DSV3_FP8CodeTensor:$b, DSV3_F32Matrix:$b_scales,
                       I64Attr:$promotion_interval, UnitAttr:$transpose_a,
                       UnitAttr:$transpose_b);
  let results = (outs DSV3_F32Matrix:$result);
  let assemblyFormat = "$a `,` $a_scales `,` $b `,` $b_scales attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_FP8MGroupedGemmOp : DSV3_PureOp<"fp8_m_grouped_gemm"> {
  let summary = "block-scaled FP8 GEMM per row group: y[r] = A[r] B[e]^T";
  let description = [{
    The FP8 form of `dsv3.grouped_linear` and of its input gradient (the
    "M-grouped" GEMM): the rows `[offsets[e], offsets[e+1])` of `a [R, K]`
    (1x128 tiles, scales `[R, ceil(K/128)]`) multiply expert `e`'s matrix
    of `b [E, N, K]` (`[E, K, N]` with `transpose_b`), whose scales
    `[E, ceil(N/128), ceil(K/128)]` (transposed likewise) hold its own
    128x128 blocks. Each K block is promoted to FP32 and scaled as in
    `dsv3.fp8_gemm`; rows outside every group are 0.

    ```mlir
    %h = dsv3.fp8_m_grouped_gemm %qa, %sa, %qw, %sw, %offsets {promotion_interval = 128}
         : (tensor<256x64xf8E4M3FN>, tensor<256x1xf32>, tensor<16x32x64xf8E4M3FN>, tensor<16x1x1xf32>, tensor<17xi64>) -> tensor<256x32xf32>
    ```
  }];
  let arguments = (ins DSV3_FP8CodeTensor:$a, DSV3_F32Matrix:$a_scales,
                       DSV3_FP8CodeStack:$b, DSV3_F32Stack:$b_scales,
                       DSV3_IndexTensor:$offsets, I64Attr:$promotion_interval,
                       UnitAttr:$transpose_b);
  let results = (outs DSV3_F32Matrix:$result);
  let assemblyFormat = "$a `,` $a_scales `,` $b `,` $b_scales `,` $offsets attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def DSV3_FP8KGroupedGemmOp : DSV3_PureOp<"fp8_k_grouped_gemm"> {
  let summary = "block-scaled FP8 GEMM contracted per row group: y[e] = A_e^T B_e";
  let description = [{
    The FP8 form of `dsv3.grouped_linear_grad_weight` (the "K-grouped"
    GEMM): for each group `e`, `y[e] [M, N]` sums `a[r]^T b[r]` over the
    rows `r` of the group. Both operands are tiled 128x1 along rows with
    tiles restarting at each group (`dsv3.fp8_quantize ... groups`), so
    their scales are `[ceil(R/128) + E, M]` and `[ceil(R/128) + E, N]`.
    Groups without rows give 0.

    ```mlir
    %dw = dsv3.fp8_k_grouped_gemm %qdy, %sdy, %qx, %sx, %offsets {promotion_interval = 128}
          : (tensor<256x32xf8E4M3FN>, tensor<18x32xf32>, tensor<256x64xf8E4M3FN>, tensor<18x64xf32>, tensor<17xi64>) -> tensor<16x32x64xf32>
    ```
  }];
  let arguments = (ins DSV3_FP8CodeTensor:$a, DSV3_F32Matrix:$a_scales,
                       DSV3_FP8CodeTensor:$b, DSV3_F32Matrix:$b_scales,
                       DSV3_IndexTensor:$offsets, I64Attr:$promotion_interval);
  let results = (outs DSV3_F32Stack:$result);
  let assemblyFormat = "$a `,` $a_scales `,` $b `,` $b_scales `,` $offsets attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

#endif // DSV3_IR_DSV3FP8OPS_TD

// RUN: not dsv3-opt %s -pass-pipeline='builtin.module(func.func(dsv3-fp8-tile-quantize{activation-tile=64}))' 2>&1 | FileCheck %s --check-prefix=TILE
// RUN: not dsv3-opt %s -pass-pipeline='builtin.module(func.func(dsv3-fp8-tile-quantize{format=e3m4}))' 2>&1 | FileCheck %s --check-prefix=FORMAT
// RUN: not dsv3-opt %s -pass-pipeline='builtin.module(func.func(dsv3-fp8-tile-quantize{gemms=bprop}))' 2>&1 | FileCheck %s --check-prefix=GEMMS
// RUN: not dsv3-opt %s -pass-pipeline='builtin.module(func.func(dsv3-fp8-tile-quantize{cache-activations=bf16}))' 2>&1 | FileCheck %s --check-prefix=CACHE
// RUN: not dsv3-opt %s -pass-pipeline='builtin.module(func.func(dsv3-fp8-tile-quantize{high-precision-roles=heads}))' 2>&1 | FileCheck %s --check-prefix=ROLE

// TILE: dsv3-fp8-tile-quantize: activation-tile = 64 is not implemented; the CPU kernels use 128
// FORMAT: dsv3-fp8-tile-quantize: format must be e4m3 or e5m2, got 'e3m4'
// GEMMS: dsv3-fp8-tile-quantize: unknown GEMM 'bprop' in gemms (fprop, dgrad, wgrad)
// CACHE: dsv3-fp8-tile-quantize: cache-activations must be fp32 or fp8, got 'bf16'
// ROLE: dsv3-fp8-tile-quantize: unknown parameter role 'heads' in high-precision-roles
func.func @f(%x: tensor<4x128xf32>) -> tensor<4x128xf32> {
  return %x : tensor<4x128xf32>
}

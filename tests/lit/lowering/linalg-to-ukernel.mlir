// RUN: dsv3-opt %s -dsv3-linalg-to-ukernel | FileCheck %s

#a = affine_map<(m, n, k) -> (m, k)>
#b = affine_map<(m, n, k) -> (n, k)>
#c = affine_map<(m, n, k) -> (m, n)>
#bt = affine_map<(m, n, k) -> (k, n)>

// A tagged GEMM on buffers becomes a call on dynamically strided views.
// CHECK: func.func private @dsv3rt_matmul_nt_f32(memref<?x?xf32, strided<[?, ?], offset: ?>>, memref<?x?xf32, strided<[?, ?], offset: ?>>, memref<?x?xf32, strided<[?, ?], offset: ?>>) attributes {llvm.emit_c_interface}
// CHECK-LABEL: func.func @tagged
func.func @tagged(%x: memref<4x8xf32>, %w: memref<5x8xf32, strided<[8, 1], offset: 16>>, %y: memref<4x5xf32>) {
  // CHECK: %[[A:.*]] = memref.cast %{{.*}} : memref<4x8xf32> to memref<?x?xf32, strided<[?, ?], offset: ?>>
  // CHECK: call @dsv3rt_matmul_nt_f32(%[[A]],
  // CHECK-NOT: linalg.generic
  linalg.generic {indexing_maps = [#a, #b, #c], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w : memref<4x8xf32>, memref<5x8xf32, strided<[8, 1], offset: 16>>) outs(%y : memref<4x5xf32>)
      attrs = {dsv3.matmul_nt} {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %m = arith.mulf %a, %b : f32
    %s = arith.addf %c, %m : f32
    linalg.yield %s : f32
  }
  return
}

// A tagged generic whose maps are not (m,k),(n,k)->(m,n) stays a generic.
// CHECK-LABEL: func.func @wrong_maps
func.func @wrong_maps(%x: memref<4x8xf32>, %w: memref<8x5xf32>, %y: memref<4x5xf32>) {
  // CHECK-NOT: call
  // CHECK: linalg.generic
  linalg.generic {indexing_maps = [#a, #bt, #c], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w : memref<4x8xf32>, memref<8x5xf32>) outs(%y : memref<4x5xf32>)
      attrs = {dsv3.matmul_nt} {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %m = arith.mulf %a, %b : f32
    %s = arith.addf %c, %m : f32
    linalg.yield %s : f32
  }
  return
}

// RUN: dsv3-opt %s -dsv3-cpu-lower-ukernels | FileCheck %s
// RUN: dsv3-opt %s -dsv3-cpu-lower-ukernels=gemm=false | FileCheck %s --check-prefix=NOGEMM

#a = affine_map<(m, n, k) -> (m, k)>
#b = affine_map<(m, n, k) -> (n, k)>
#c = affine_map<(m, n, k) -> (m, n)>
#bt = affine_map<(m, n, k) -> (k, n)>

// A GEMM on buffers, recognised by its structure (maps, loop kinds, a
// multiply-add body), becomes a call on dynamically strided views.
// CHECK: func.func private @dsv3rt_matmul_nt_f32(memref<?x?xf32, strided<[?, ?], offset: ?>>, memref<?x?xf32, strided<[?, ?], offset: ?>>, memref<?x?xf32, strided<[?, ?], offset: ?>>) attributes {llvm.emit_c_interface}
// CHECK-LABEL: func.func @gemm
// NOGEMM-LABEL: func.func @gemm
// NOGEMM-NOT: call
// NOGEMM: linalg.generic
func.func @gemm(%x: memref<4x8xf32>, %w: memref<5x8xf32, strided<[8, 1], offset: 16>>, %y: memref<4x5xf32>) {
  // CHECK: %[[A:.*]] = memref.cast %{{.*}} : memref<4x8xf32> to memref<?x?xf32, strided<[?, ?], offset: ?>>
  // CHECK: call @dsv3rt_matmul_nt_f32(%[[A]],
  // CHECK-NOT: linalg.generic
  linalg.generic {indexing_maps = [#a, #b, #c], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w : memref<4x8xf32>, memref<5x8xf32, strided<[8, 1], offset: 16>>) outs(%y : memref<4x5xf32>)
      {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %m = arith.mulf %a, %b : f32
    %s = arith.addf %c, %m : f32
    linalg.yield %s : f32
  }
  return
}

// A generic whose maps are not (m,k),(n,k)->(m,n) stays a generic.
// CHECK-LABEL: func.func @wrong_maps
func.func @wrong_maps(%x: memref<4x8xf32>, %w: memref<8x5xf32>, %y: memref<4x5xf32>) {
  // CHECK-NOT: call
  // CHECK: linalg.generic
  linalg.generic {indexing_maps = [#a, #bt, #c], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w : memref<4x8xf32>, memref<8x5xf32>) outs(%y : memref<4x5xf32>)
      {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %m = arith.mulf %a, %b : f32
    %s = arith.addf %c, %m : f32
    linalg.yield %s : f32
  }
  return
}

// The same maps with another body (a difference, not a product) are no GEMM.
// CHECK-LABEL: func.func @wrong_body
func.func @wrong_body(%x: memref<4x8xf32>, %w: memref<5x8xf32>, %y: memref<4x5xf32>) {
  // CHECK-NOT: call
  // CHECK: linalg.generic
  // CHECK: arith.subf
  linalg.generic {indexing_maps = [#a, #b, #c], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w : memref<4x8xf32>, memref<5x8xf32>) outs(%y : memref<4x5xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %m = arith.subf %a, %b : f32
    %s = arith.addf %c, %m : f32
    linalg.yield %s : f32
  }
  return
}

// Every loop parallel: the same maps, but not a contraction over k.
// CHECK-LABEL: func.func @wrong_iterators
func.func @wrong_iterators(%x: memref<4x8xf32>, %w: memref<5x8xf32>, %y: memref<4x5xf32>) {
  // CHECK-NOT: call
  // CHECK: linalg.generic
  linalg.generic {indexing_maps = [#a, #b, #c], iterator_types = ["parallel", "parallel", "parallel"]}
      ins(%x, %w : memref<4x8xf32>, memref<5x8xf32>) outs(%y : memref<4x5xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %m = arith.mulf %a, %b : f32
    %s = arith.addf %c, %m : f32
    linalg.yield %s : f32
  }
  return
}

// A bufferized kernel call keeps its operands in order (ins, then outs) and
// passes scalars by value.
// CHECK-LABEL: func.func @kernel_call
func.func @kernel_call(%x: memref<4x8xf32>, %o: memref<4x8xf32>) {
  %c = arith.constant 7 : i64
  // CHECK: %[[X:.*]] = memref.cast %{{.*}} : memref<4x8xf32> to memref<?x?xf32, strided<[?, ?], offset: ?>>
  // CHECK: %[[O:.*]] = memref.cast %{{.*}} : memref<4x8xf32> to memref<?x?xf32, strided<[?, ?], offset: ?>>
  // CHECK: call @dsv3rt_kernel(%[[X]], %{{.*}}, %[[O]])
  dsv3_codegen.ukernel "dsv3rt_kernel" ins(%x, %c : memref<4x8xf32>, i64) outs(%o : memref<4x8xf32>)
  return
}

// RUN: dsv3-opt %s -dsv3-materialize-params | FileCheck %s
// RUN: dsv3-opt %s -dsv3-materialize-params=alignment=4 | FileCheck %s --check-prefix=ALIGN4

// Parameters get aligned slots of one buffer in first-use order (a repeated
// name shares its slot); the function switches to memref in/out arguments.
// CHECK: module attributes {dsv3.param_count = 48 : i64, dsv3.param_layout = [{name = "a", offset = 0 : i64, role = "weight", shape = array<i64: 2, 3>}, {name = "e.*.w", offset = 16 : i64, role = "weight", shape = array<i64: 4, 2, 4>}]}
// ALIGN4: {name = "e.*.w", offset = 8 : i64
// CHECK-LABEL: func.func @f(
// CHECK-SAME: %[[P:.*]]: memref<48xf32>, %[[IN:.*]]: memref<2x3xf32>, %[[OUT:.*]]: memref<2x3xf32>)
// The typed signature the runtime checks its buffers against:
// CHECK-SAME: attributes {dsv3.inputs = [{name = "x", shape = array<i64: 2, 3>, type = "f32"}], dsv3.outputs = [{name = "y", role = "value", shape = array<i64: 2, 3>, type = "f32"}], llvm.emit_c_interface}
// CHECK: bufferization.to_tensor %[[IN]] restrict
// CHECK: memref.reinterpret_cast %[[P]] to offset: [0], sizes: [2, 3], strides: [3, 1]
// CHECK: memref.reinterpret_cast %[[P]] to offset: [16], sizes: [4, 2, 4], strides: [8, 4, 1]
// CHECK: bufferization.materialize_in_destination {{.*}} in restrict writable %[[OUT]]
// CHECK: return
func.func @f(%x: tensor<2x3xf32> {dsv3.input = "x"}) -> (tensor<2x3xf32> {dsv3.output = "y"}) {
  %a = dsv3.param "a" : tensor<2x3xf32>
  %a2 = dsv3.param "a" : tensor<2x3xf32>
  %e = dsv3.param "e.*.w" stack 4 : tensor<4x2x4xf32>
  %s = arith.addf %a, %a2 : tensor<2x3xf32>
  %y = arith.addf %s, %x : tensor<2x3xf32>
  return %y : tensor<2x3xf32>
}

// RUN: dsv3-opt %s -split-input-file -verify-diagnostics

func.func @ukernel_results(%x: tensor<4xf32>, %o: tensor<4xf32>) -> tensor<8xf32> {
  // expected-error @+1 {{result types must be the types of 'outs'}}
  %r = dsv3_codegen.ukernel "k" ins(%x : tensor<4xf32>) outs(%o : tensor<4xf32>) -> tensor<8xf32>
  return %r : tensor<8xf32>
}

// -----

func.func @ukernel_mixed(%x: tensor<4xf32>, %o: tensor<4xf32>, %m: memref<4xf32>) {
  // expected-error @+1 {{'outs' must be all tensors or all memrefs}}
  %r = dsv3_codegen.ukernel "k" ins(%x : tensor<4xf32>) outs(%o, %m : tensor<4xf32>, memref<4xf32>) -> tensor<4xf32>
  return
}

// -----

func.func @ukernel_memref_results(%x: memref<4xf32>, %o: memref<4xf32>) {
  // expected-error @+1 {{has no results when 'outs' are memrefs}}
  %r = dsv3_codegen.ukernel "k" ins(%x : memref<4xf32>) outs(%o : memref<4xf32>) -> tensor<4xf32>
  return
}

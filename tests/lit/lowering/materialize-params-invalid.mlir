// RUN: dsv3-opt %s -split-input-file -dsv3-materialize-params -verify-diagnostics

// The runtime's ABI knows f32, bf16 and i64 buffers only.
// expected-error @+1 {{entry points take and return f32, bf16 or i64 tensors, got 'tensor<2xf16>'}}
func.func @half(%x: tensor<2xf16>) -> tensor<2xf16> {
  return %x : tensor<2xf16>
}

// -----

// expected-error @+1 {{entry points take and return statically shaped tensors, got 'tensor<?xf32>'}}
func.func @dynamic(%x: tensor<?xf32>) -> tensor<?xf32> {
  return %x : tensor<?xf32>
}

// RUN: dsv3-opt %s -split-input-file -verify-diagnostics

func.func @gather_rows(%x: tensor<4x3xf32>) -> tensor<6x3xf32> {
  // expected-error @+1 {{yields 'tensor<6x3xf32>', expected 8 rows in dimension 0}}
  %y = dsv3.all_gather %x {ranks = 2 : i64} : tensor<4x3xf32> -> tensor<6x3xf32>
  return %y : tensor<6x3xf32>
}

// -----

func.func @scatter_split(%x: tensor<5x3xf32>) -> tensor<2x3xf32> {
  // expected-error @+1 {{dimension 0 of 'tensor<5x3xf32>' does not split into 2 ranks}}
  %y = dsv3.reduce_scatter %x {ranks = 2 : i64} : tensor<5x3xf32> -> tensor<2x3xf32>
  return %y : tensor<2x3xf32>
}

// -----

func.func @bf16_sum(%x: tensor<8xbf16>) -> tensor<8xbf16> {
  // expected-error @+1 {{sums over ranks are f32 or i64, not 'bf16'}}
  %y = dsv3.all_reduce %x {ranks = 2 : i64} : tensor<8xbf16> -> tensor<8xbf16>
  return %y : tensor<8xbf16>
}

// -----

func.func @counts(%x: tensor<6x3xf32>, %sc: tensor<3xi64>, %rc: tensor<2xi64>) -> tensor<12x3xf32> {
  // expected-error @+1 {{'send_counts' must be tensor<2xi64>, got 'tensor<3xi64>'}}
  %y = dsv3.all_to_all %x, %sc, %rc {ranks = 2 : i64}
      : (tensor<6x3xf32>, tensor<3xi64>, tensor<2xi64>) -> tensor<12x3xf32>
  return %y : tensor<12x3xf32>
}

// -----

func.func @row_width(%x: tensor<6x3xf32>, %sc: tensor<2xi64>, %rc: tensor<2xi64>) -> tensor<12x4xf32> {
  // expected-error @+1 {{yields 'tensor<12x4xf32>', whose dimension 1 differs from 'tensor<6x3xf32>'}}
  %y = dsv3.all_to_all %x, %sc, %rc {ranks = 2 : i64}
      : (tensor<6x3xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<12x4xf32>
  return %y : tensor<12x4xf32>
}

// -----

func.func @start_type(%x: tensor<8xf32>) {
  // expected-error @+1 {{yields 'tensor<4xf32>', whose dimension 0 differs from 'tensor<8xf32>'}}
  %r = dsv3.all_reduce_start %x {ranks = 2 : i64} : tensor<8xf32> -> !dsv3.request<tensor<4xf32>>
  return
}

// -----

func.func @wait_type(%x: tensor<8xf32>) -> tensor<4xf32> {
  %r = dsv3.all_reduce_start %x {ranks = 2 : i64} : tensor<8xf32> -> !dsv3.request<tensor<8xf32>>
  // expected-error @+1 {{must yield 'tensor<8xf32>', the request's type}}
  %y = dsv3.wait %r : !dsv3.request<tensor<8xf32>> -> tensor<4xf32>
  return %y : tensor<4xf32>
}

// -----

func.func @send_yields_nothing(%x: tensor<8xf32>) {
  // expected-error @+1 {{a send's request yields nothing: expected !dsv3.request<none>}}
  %r = dsv3.send %x {peer = 1 : i64, tag = 0 : i64} : tensor<8xf32> -> !dsv3.request<tensor<8xf32>>
  return
}

// -----

func.func @ranks_positive(%x: tensor<8xf32>) -> tensor<8xf32> {
  // expected-error @+1 {{attribute 'ranks' failed to satisfy constraint}}
  %y = dsv3.all_reduce %x {ranks = 0 : i64} : tensor<8xf32> -> tensor<8xf32>
  return %y : tensor<8xf32>
}

// -----

func.func @unknown_group(%x: tensor<8xf32>) -> tensor<8xf32> {
  // expected-error @+1 {{unknown group "experts" (world, data, expert or pipeline)}}
  %y = dsv3.all_reduce %x {group = "experts", ranks = 2 : i64} : tensor<8xf32> -> tensor<8xf32>
  return %y : tensor<8xf32>
}

// -----

func.func @rank_rows_block(%x: tensor<62x4xf32>) -> tensor<15x4xf32> {
  // expected-error @+1 {{the block of 'tensor<62x4xf32>' over 4 ranks has 16 rows, got 'tensor<15x4xf32>'}}
  %y = dsv3.rank_rows %x {group = "expert", ranks = 4 : i64} : tensor<62x4xf32> -> tensor<15x4xf32>
  return %y : tensor<15x4xf32>
}

// -----

func.func @send_counts_split(%o: tensor<18xi64>) -> (tensor<3xi64>, tensor<16xi64>) {
  // expected-error @+1 {{16 experts do not split over 3 ranks}}
  %s, %e = dsv3.moe_send_counts %o {num_experts = 16 : i64, ranks = 3 : i64} : tensor<18xi64> -> (tensor<3xi64>, tensor<16xi64>)
  return %s, %e : tensor<3xi64>, tensor<16xi64>
}

// -----

func.func @recv_layout_blocks(%c: tensor<15xi64>) -> (tensor<2xi64>, tensor<8x1xi64>) {
  // expected-error @+1 {{are not one block per each of 2 ranks}}
  %r, %l = dsv3.moe_recv_layout %c {ranks = 2 : i64} : tensor<15xi64> -> (tensor<2xi64>, tensor<8x1xi64>)
  return %r, %l : tensor<2xi64>, tensor<8x1xi64>
}

// -----

func.func @shard_unstacked() -> tensor<4x4xf32> {
  // expected-error @+1 {{only a stacked parameter can be sharded}}
  %w = dsv3.param "w" shard "expert" : tensor<4x4xf32>
  return %w : tensor<4x4xf32>
}

//===- DSV3CommOps.td - communication between ranks ------*- tablegen -*-===//
//
// Collectives and messages between the ranks of one job, on tensors with
// value semantics. Every collective has a blocking form and an asynchronous
// one (`*_start` gives a `!dsv3.request<T>`, `dsv3.wait` gives the T), so
// that an overlap pass can move the start before independent compute and
// the wait after it. None of them is Pure: all ranks must issue the same
// collectives in the same order, so no pass may erase, merge or reorder one
// on its own. Lowering calls the runtime's communicator (runtime/comm);
// the dialect knows no transport.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_IR_DSV3COMMOPS_TD
#define DSV3_IR_DSV3COMMOPS_TD

include "ir/DSV3/DSV3Base.td"
include "mlir/IR/AttrTypeBase.td"

def DSV3_RequestType : TypeDef<DSV3_Dialect, "Request"> {
  let mnemonic = "request";
  let summary = "an operation between ranks in flight";
  let description = [{
    Started by a `*_start` op or `dsv3.send`/`dsv3.recv`, completed by
    `dsv3.wait`, which yields a value of `resultType` (`none` for a send).
  }];
  let parameters = (ins "::mlir::Type":$resultType);
  let assemblyFormat = "`<` $resultType `>`";
}

def DSV3_CommTensor : RankedTensorOf<[F32, BF16, I64]>;

// The group of ranks a collective runs over: "world" (every rank), "data"
// (the ranks that hold the same parameters and see different batches),
// "expert" (the ranks that share the routed experts of one replica) or
// "pipeline". `ranks` is that group's size. The runtime maps names to
// communicators (runtime/comm/Groups.h).
defvar DSV3_CommGroupAttr = DefaultValuedStrAttr<StrAttr, "world">;

class DSV3_CommOp<string mnemonic, list<Trait> traits = []>
    : DSV3_Op<mnemonic, traits> {
  let hasVerifier = 1;
}

// all-reduce ------------------------------------------------------------------

class DSV3_AllReduceBase<string mnemonic, Type result> : DSV3_CommOp<mnemonic> {
  let arguments = (ins DSV3_CommTensor:$x, ConfinedAttr<I64Attr, [IntMinValue<1>]>:$ranks,
                       DSV3_CommGroupAttr:$group);
  let results = (outs result:$result);
  let assemblyFormat = "$x attr-dict `:` type($x) `->` qualified(type($result))";
}

def DSV3_AllReduceOp : DSV3_AllReduceBase<"all_reduce", DSV3_CommTensor> {
  let summary = "sum of a tensor over all ranks";
  let description = [{
    Every rank contributes `x` and gets `sum over ranks of x` (f32 or i64).
    Its gradient is the all-reduce of the result's gradient. `ranks` is the
    size of the group, recorded so that shapes can be checked.

    ```mlir
    %g = dsv3.all_reduce %x {ranks = 2 : i64} : tensor<8xf32> -> tensor<8xf32>
    ```
  }];
}
def DSV3_AllReduceStartOp : DSV3_AllReduceBase<"all_reduce_start", DSV3_RequestType> {
  let summary = "starts a dsv3.all_reduce";
}

// all-gather ------------------------------------------------------------------

class DSV3_AllGatherBase<string mnemonic, Type result> : DSV3_CommOp<mnemonic> {
  let arguments = (ins DSV3_CommTensor:$x, ConfinedAttr<I64Attr, [IntMinValue<1>]>:$ranks,
                       DSV3_CommGroupAttr:$group);
  let results = (outs result:$result);
  let assemblyFormat = "$x attr-dict `:` type($x) `->` qualified(type($result))";
}

def DSV3_AllGatherOp : DSV3_AllGatherBase<"all_gather", DSV3_CommTensor> {
  let summary = "concatenation of every rank's tensor along dimension 0";
  let description = [{
    Rank r's `x` ([N, ...]) becomes rows `[r*N, (r+1)*N)` of the result
    ([ranks*N, ...]) on every rank. Its gradient is the reduce-scatter of
    the result's gradient.
  }];
}
def DSV3_AllGatherStartOp : DSV3_AllGatherBase<"all_gather_start", DSV3_RequestType> {
  let summary = "starts a dsv3.all_gather";
}

// reduce-scatter --------------------------------------------------------------

class DSV3_ReduceScatterBase<string mnemonic, Type result> : DSV3_CommOp<mnemonic> {
  let arguments = (ins DSV3_CommTensor:$x, ConfinedAttr<I64Attr, [IntMinValue<1>]>:$ranks,
                       DSV3_CommGroupAttr:$group);
  let results = (outs result:$result);
  let assemblyFormat = "$x attr-dict `:` type($x) `->` qualified(type($result))";
}

def DSV3_ReduceScatterOp : DSV3_ReduceScatterBase<"reduce_scatter", DSV3_CommTensor> {
  let summary = "sum over ranks, block r kept by rank r";
  let description = [{
    `x` is [ranks*N, ...]; rank r gets rows `[r*N, (r+1)*N)` of the sum of
    every rank's `x` ([N, ...]). ZeRO-1 reduces gradients this way. Its
    gradient is the all-gather of the result's gradient.
  }];
}
def DSV3_ReduceScatterStartOp
    : DSV3_ReduceScatterBase<"reduce_scatter_start", DSV3_RequestType> {
  let summary = "starts a dsv3.reduce_scatter";
}

// all-to-all ------------------------------------------------------------------

class DSV3_AllToAllBase<string mnemonic, Type result> : DSV3_CommOp<mnemonic> {
  let arguments = (ins DSV3_CommTensor:$x, DSV3_IndexTensor:$send_counts,
                       DSV3_IndexTensor:$recv_counts,
                       ConfinedAttr<I64Attr, [IntMinValue<1>]>:$ranks,
                       DSV3_CommGroupAttr:$group);
  let results = (outs result:$result);
  let assemblyFormat = [{
    $x `,` $send_counts `,` $recv_counts attr-dict `:`
    `(` type($x) `,` type($send_counts) `,` type($recv_counts) `)` `->` qualified(type($result))
  }];
}

def DSV3_AllToAllOp : DSV3_AllToAllBase<"all_to_all", DSV3_CommTensor> {
  let summary = "exchange of variable-sized row blocks between all ranks";
  let description = [{
    `x` ([N, ...]) holds `send_counts[p]` rows for each rank p, in rank
    order; the result ([M, ...], M a static capacity) holds the
    `recv_counts[p]` rows from each rank p in rank order, followed by zero
    rows. `recv_counts` on rank r must equal every rank p's
    `send_counts[r]` (an all-to-all of the counts gives it). Expert
    parallelism sends each token row to the rank owning its expert this
    way. Its gradient is the reverse exchange (counts swapped, capacity N).

    ```mlir
    %rows = dsv3.all_to_all %x, %sc, %rc {ranks = 2 : i64}
        : (tensor<16x64xf32>, tensor<2xi64>, tensor<2xi64>) -> tensor<32x64xf32>
    ```
  }];
}
def DSV3_AllToAllStartOp : DSV3_AllToAllBase<"all_to_all_start", DSV3_RequestType> {
  let summary = "starts a dsv3.all_to_all";
}

// this rank's rows ---------------------------------------------------------------

def DSV3_RankRowsOp : DSV3_PureOp<"rank_rows"> {
  let summary = "this rank's block of rows of a tensor every rank of a group holds";
  let description = [{
    With `x` [N, ...] identical on the `ranks` ranks of `group` and
    `B = ceil(N / ranks)`, rank r gets rows `[r*B, min((r+1)*B, N))` as a
    [B, ...] tensor; rows past N (only on the last ranks, when `ranks` does
    not divide N) hold `pad` (integer tensors) or 0. Expert parallelism
    splits a replica's tokens this way before dispatching them; the
    gradient puts each block back in place (`dsv3.rank_rows_grad`). Local:
    no communication, but the block depends on the rank.

    ```mlir
    %mine = dsv3.rank_rows %x {group = "expert", ranks = 2 : i64} : tensor<62x256xf32> -> tensor<31x256xf32>
    ```
  }];
  let arguments = (ins DSV3_CommTensor:$x, ConfinedAttr<I64Attr, [IntMinValue<1>]>:$ranks,
                       DSV3_CommGroupAttr:$group, DefaultValuedAttr<I64Attr, "0">:$pad);
  let results = (outs DSV3_CommTensor:$result);
  let assemblyFormat = "$x attr-dict `:` type($x) `->` type($result)";
  let hasVerifier = 1;
}

def DSV3_RankRowsGradOp : DSV3_PureOp<"rank_rows_grad"> {
  let summary = "gradient of dsv3.rank_rows: the block in place, zeros elsewhere";
  let description = [{
    `dy` [B, ...] becomes rows `[r*B, ...)` of a zero [N, ...] tensor (rows
    past N dropped). Summed over the group's ranks (as the gradients of
    replicated parameters are) it is the full gradient.
  }];
  let arguments = (ins DSV3_F32Tensor:$dy, ConfinedAttr<I64Attr, [IntMinValue<1>]>:$ranks,
                       DSV3_CommGroupAttr:$group);
  let results = (outs DSV3_F32Tensor:$dx);
  let assemblyFormat = "$dy attr-dict `:` type($dy) `->` type($dx)";
  let hasVerifier = 1;
}

// messages and completion -----------------------------------------------------

def DSV3_SendOp : DSV3_CommOp<"send"> {
  let summary = "starts sending a tensor to one rank";
  let description = [{
    Completes with `dsv3.wait` (no value). Pipeline stages pass activations
    forward and gradients backward this way; the matching `dsv3.recv` on
    `peer` names this rank and the same `tag`.
  }];
  let arguments = (ins DSV3_CommTensor:$x, ConfinedAttr<I64Attr, [IntNonNegative]>:$peer,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$tag);
  let results = (outs DSV3_RequestType:$request);
  let assemblyFormat = "$x attr-dict `:` type($x) `->` qualified(type($request))";
}

def DSV3_RecvOp : DSV3_CommOp<"recv"> {
  let summary = "starts receiving a tensor from one rank";
  let description = [{
    The request's result type is the tensor received; `dsv3.wait` yields it.
  }];
  let arguments = (ins ConfinedAttr<I64Attr, [IntNonNegative]>:$peer,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$tag);
  let results = (outs DSV3_RequestType:$request);
  let assemblyFormat = "attr-dict `:` qualified(type($request))";
}

def DSV3_WaitOp : DSV3_CommOp<"wait"> {
  let summary = "completes a started operation";
  let description = [{
    Blocks until the request completed on this rank and yields its value
    (nothing for a send).

    ```mlir
    %r = dsv3.all_reduce_start %g {ranks = 2 : i64} : tensor<8xf32> -> !dsv3.request<tensor<8xf32>>
    // ... compute that does not need %g ...
    %sum = dsv3.wait %r : !dsv3.request<tensor<8xf32>> -> tensor<8xf32>
    ```
  }];
  let arguments = (ins DSV3_RequestType:$request);
  let results = (outs Variadic<DSV3_CommTensor>:$result);
  let assemblyFormat = "$request attr-dict `:` qualified(type($request)) (`->` type($result)^)?";
}

#endif // DSV3_IR_DSV3COMMOPS_TD

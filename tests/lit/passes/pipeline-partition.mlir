// RUN: dsv3-opt %s --dsv3-autodiff=function=stage0 --dsv3-autodiff=function=stage1 --dsv3-pipeline-partition | FileCheck %s
// RUN: not dsv3-opt %s --dsv3-pipeline-partition -o /dev/null 2>&1 | FileCheck %s --check-prefix=NONE

// Two pipeline stages: an embedding and a linear, then the head and the
// loss. Each differentiated stage splits by dataflow into F, Bi, W and B;
// what crosses from one chunk to a later one is a `saved.<n>` result and an
// argument of the same name. The first stage has no input gradient (its Bi
// is empty); the last stage's Bi needs only the saved logits and sends the
// hidden state's gradient back, and its W reads the stage's own input and
// the loss gradient Bi saved.

// CHECK-LABEL: func.func @stage0_forward(%arg0: tensor<2x4xi64> {dsv3.input = "input_ids"})
// CHECK-SAME: -> (tensor<2x4x8xf32> {dsv3.output = "hidden", dsv3.output_role = #dsv3.output_role<activation>}, tensor<f32> {dsv3.output = "total_loss", {{.*}}}, tensor<2x4x8xf32> {dsv3.output = "saved.0", dsv3.output_role = #dsv3.output_role<saved>})
// CHECK: %[[EMB:.*]] = dsv3.embedding
// CHECK: %[[Y:.*]] = dsv3.linear %[[EMB]]
// CHECK: return %[[Y]], %{{.*}}, %[[EMB]]
// CHECK-LABEL: func.func @stage0_backward_input() {
// CHECK-NEXT: return
// CHECK-LABEL: func.func @stage0_backward_weight(%arg0: tensor<2x4xi64> {dsv3.input = "input_ids"}, %arg1: tensor<2x4x8xf32> {dsv3.input = "grad.hidden"}, %arg2: tensor<2x4x8xf32> {dsv3.input = "saved.0"})
// CHECK-SAME: -> (tensor<16x8xf32> {dsv3.output = "grad.emb", {{.*}}}, tensor<8x8xf32> {dsv3.output = "grad.w0", {{.*}}})
// CHECK: dsv3.linear_grad_weight %arg1, %arg2 {param = "w0"}
// CHECK: dsv3.embedding_grad %arg0
// CHECK-LABEL: func.func @stage0_backward(
// CHECK-LABEL: func.func @stage1_forward(%arg0: tensor<2x4xi64> {dsv3.input = "input_ids"}, %arg1: tensor<2x4x8xf32> {dsv3.input = "hidden"})
// CHECK-SAME: -> (tensor<f32> {dsv3.output = "total_loss", {{.*}}}, tensor<2x4x16xf32> {dsv3.output = "saved.0", dsv3.output_role = #dsv3.output_role<saved>})
// CHECK-NOT: _grad
// CHECK-LABEL: func.func @stage1_backward_input(%arg0: tensor<2x4xi64> {dsv3.input = "input_ids"}, %arg1: tensor<2x4x16xf32> {dsv3.input = "saved.0"})
// CHECK-SAME: -> (tensor<2x4x8xf32> {dsv3.output = "grad.hidden", dsv3.output_role = #dsv3.output_role<activation>}, tensor<2x4x16xf32> {dsv3.output = "saved.1", dsv3.output_role = #dsv3.output_role<saved>})
// CHECK: %[[DL:.*]] = dsv3.cross_entropy_grad %arg1, %arg0
// CHECK: %[[DH:.*]] = dsv3.linear_grad_input %[[DL]]
// CHECK-NOT: linear_grad_weight
// CHECK: return %[[DH]], %[[DL]]
// CHECK-LABEL: func.func @stage1_backward_weight(%arg0: tensor<2x4x8xf32> {dsv3.input = "hidden"}, %arg1: tensor<2x4x16xf32> {dsv3.input = "saved.1"})
// CHECK-SAME: -> (tensor<16x8xf32> {dsv3.output = "grad.w1", dsv3.output_param = "w1", dsv3.output_role = #dsv3.output_role<gradient>})
// CHECK-NEXT: dsv3.linear_grad_weight %arg1, %arg0 {param = "w1"}
// CHECK-LABEL: func.func @stage1_backward(%arg0: tensor<2x4xi64> {dsv3.input = "input_ids"}, %arg1: tensor<2x4x8xf32> {dsv3.input = "hidden"}, %arg2: tensor<2x4x16xf32> {dsv3.input = "saved.0"})
// CHECK-SAME: -> (tensor<2x4x8xf32> {dsv3.output = "grad.hidden", {{.*}}}, tensor<16x8xf32> {dsv3.output = "grad.w1", {{.*}}})

// NONE: error: dsv3-pipeline-partition: no differentiated pipeline stage (@stage0_grad)
func.func @stage0(%ids: tensor<2x4xi64> {dsv3.input = "input_ids"}) -> (tensor<2x4x8xf32> {dsv3.output = "hidden", dsv3.output_role = #dsv3.output_role<activation>}, tensor<f32> {dsv3.output = "total_loss", dsv3.output_role = #dsv3.output_role<total_loss>}) {
  %e = dsv3.param "emb" role <embedding> : tensor<16x8xf32>
  %h = dsv3.embedding %ids, %e : tensor<2x4xi64>, tensor<16x8xf32> -> tensor<2x4x8xf32>
  %w = dsv3.param "w0" role <mlp> : tensor<8x8xf32>
  %y = dsv3.linear %h, %w : (tensor<2x4x8xf32>, tensor<8x8xf32>) -> tensor<2x4x8xf32>
  %zero = arith.constant dense<0.0> : tensor<f32>
  return %y, %zero : tensor<2x4x8xf32>, tensor<f32>
}
func.func @stage1(%ids: tensor<2x4xi64> {dsv3.input = "input_ids"}, %h: tensor<2x4x8xf32> {dsv3.input = "hidden"}) -> (tensor<f32> {dsv3.output = "total_loss", dsv3.output_role = #dsv3.output_role<total_loss>}) {
  %w = dsv3.param "w1" role <head> : tensor<16x8xf32>
  %logits = dsv3.linear %h, %w : (tensor<2x4x8xf32>, tensor<16x8xf32>) -> tensor<2x4x16xf32>
  %l = dsv3.cross_entropy %logits, %ids : (tensor<2x4x16xf32>, tensor<2x4xi64>) -> tensor<f32>
  return %l : tensor<f32>
}

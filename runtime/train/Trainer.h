//===- Trainer.h - the training loop ----------------------------*- C++ -*-===//
//
// Drives compiled code (JIT or ahead-of-time) through an rt::Session: the
// model's `forward_grad` (from dsv3-autodiff) and the compiled AdamW update
// over the session's parameters and moments. Part of the runtime core: no LLVM. Host code
// only moves data, clips, schedules the learning rate, updates the routing
// biases (auxiliary-loss-free balancing), logs and checkpoints.
//
//===----------------------------------------------------------------------===//
#ifndef DSV3_RUNTIME_TRAIN_TRAINER_H
#define DSV3_RUNTIME_TRAIN_TRAINER_H

#include "runtime/exec/Session.h"
#include "runtime/parallel/Parallel.h"
#include "runtime/pipeline/Schedule.h"
#include "runtime/train/Data.h"

#include <optional>
#include <string>
#include <vector>

namespace dsv3::rt {

struct TrainConfig {
  int64_t steps = 100;
  int64_t gradAccumulation = 1;
  uint64_t seed = 0;
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weightDecay = 0.1;
  double gradClip = 1.0;             // 0 disables
  int64_t warmupSteps = 0;
  std::optional<int64_t> decayStart; // cosine decay from here to `steps`
  double minLrRatio = 0.1;
  double biasUpdateSpeed = 1e-3;     // gamma; 0 disables
  std::string logJsonPath, plotPath, savePath, resumePath;
  std::string tracePath;             // Chrome/Perfetto trace of the run
  std::string configJson;            // hub config.json text for checkpoints
  /// Files every checkpoint carries beside the weights (name, content):
  /// the tokenizer's.
  std::vector<std::pair<std::string, std::string>> checkpointFiles;
};

/// Learning rate of 1-based `step`: linear warm-up, constant, cosine decay.
double learningRate(const TrainConfig &c, int64_t step);

/// Auxiliary-loss-free balancing for one MoE layer: with the step's expert
/// loads, b_i += gamma * sign(mean_load - load_i). Returns max/mean load
/// (0 when nothing was routed).
double updateRoutingBias(const std::vector<int64_t> &load, double gamma, float *bias);

/// Trains the session's parameters in place (the session runs forward_grad
/// and adamw_step); resumes from `config.resumePath` when set. Checkpoints
/// keep the moments in the session's element type. With a `job` of several
/// ranks, the session's program is one replica's (batch / dp rows) with
/// this rank's experts: each rank reads its replica's rows of every batch,
/// gradients are summed over the ranks holding each parameter, losses,
/// expert loads and the gradient norm are the job's, and rank 0 logs.
/// Every rank of a job also writes its own JSON lines beside the log
/// (rankLogPath): all-to-all bytes, time inside communication and the
/// tokens its experts received, per step.
/// With a `pipeline` schedule (the job's plan has pipeline ranks), the
/// session holds the pipeline chunks (dsv3-pipeline-partition) instead of
/// forward_grad: each step's micro-batch runs this rank's program of the
/// schedule over the replica's rows (runtime/pipeline), its stages' loss
/// parts, gradients and expert loads are summed over the pipeline group,
/// and every pipeline rank applies the same AdamW update.
Error train(const TrainConfig &config, Session &session, const DataSource &data,
            ProcessGroups *job = nullptr, const PipelineSchedule *pipeline = nullptr);

/// `log.jsonl` -> `log.rank-R.jsonl`: where rank R's metrics go.
std::string rankLogPath(const std::string &logPath, int rank);

} // namespace dsv3::rt

#endif // DSV3_RUNTIME_TRAIN_TRAINER_H

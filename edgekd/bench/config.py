"""Bench stage settings: the classifier workload's fields at the top level, the causal-LM workload in `lm:`.

The LM section is None for text-classification and left out of model_dump while it is (StrictModel._omit_if),
so every classification bench cache key stays what it was before the LM workload existed.
"""

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from edgekd._config_base import StrictModel

# Top-level fields that only the classifier workload reads (batch-1 texts, fixed lengths, throughput batches).
CLASSIFIER_ONLY = ("sample", "fixed_length", "fixed_runs", "throughput_batch", "throughput_batches", "length_buckets",
                   "eval_batch_size", "warmup", "turn_warmup")


class LMBenchConfig(StrictModel):
    """The causal-LM workload: greedy generation from fixed prompts, and teacher-forced quality on test windows."""

    prompts: int = Field(8, ge=1, le=10_000, description="prompts generated from per round: the first prompt_tokens "
                         "tokens of seeded test windows, the same for every model")
    prompt_tokens: int = Field(64, ge=1, le=32_768, description="tokens per prompt (the prefill length)")
    new_tokens: int = Field(32, ge=2, le=32_768, description="greedy tokens generated per prompt with the KV cache "
                            "(EOS ignored, so every model decodes the same count)")
    eval_windows: int = Field(16, ge=1, le=100_000, description="test windows of model.max_length tokens scored "
                              "teacher-forced: perplexity, next-token accuracy, agreement with the teacher")
    warmup: int = Field(2, ge=0, le=1000, description="untimed generations per model before the first round of a "
                        "thread setting")
    turn_warmup: int = Field(1, ge=0, le=1000, description="untimed generations at the start of each model's turn "
                             "in a round (its threads slept while the other models ran)")


class BenchConfig(StrictModel):
    """Latency, throughput, peak memory, size and quality of every model, on identical inputs.

    Each round times every model in turn on the same sample of test inputs, batch 1, in the same
    order; speed-ups are taken per round (paired) and summarised by their median and interval.
    """

    kind: Literal["bench"] = "bench"
    rounds: int = Field(5, ge=1, le=1000, description="rounds; every model is timed once per round and thread setting")
    sample: int | None = Field(None, ge=1, description="test rows timed batch-1 per round, a seeded sample "
                               "(None: all of them); accuracy always uses every test row")
    warmup: int = Field(10, ge=0, le=10_000, description="untimed calls per model before the first round of a setting")
    turn_warmup: int = Field(5, ge=0, le=10_000, description="untimed calls at the start of each model's turn in a "
                             "round (its threads slept while the other models ran)")
    fixed_length: int = Field(128, ge=8, le=4096, description="token length of the fixed-length latency setting")
    fixed_runs: int = Field(20, ge=0, le=100_000, description="batch-1 calls on the fixed-length input per round")
    throughput_batch: int = Field(32, ge=2, le=4096, description="batch size of the throughput setting")
    throughput_batches: int = Field(4, ge=1, le=10_000, description="throughput batches per round")
    threads: list[int] = Field([1, 0], min_length=1, description="intra-op threads, the same for every runtime; "
                               "0 means all physical cores")
    length_buckets: list[int] = Field([16, 32, 64], min_length=1, description="upper token lengths of the latency "
                                      "buckets: [16, 32, 64] gives <=16, 17-32, 33-64, >64")
    eval_batch_size: int = Field(64, ge=2, le=4096, description="batch size of the batched accuracy (batch-1 accuracy "
                                 "is always reported too, and is the headline)")
    max_other_cpu: float = Field(0.1, ge=0.0, le=1.0, description="share of the cores other processes may use "
                                 "during the benchmark before the result is flagged as disturbed")
    strict: bool = Field(False, description="refuse a disturbed result instead of flagging it")
    bundle: bool = Field(True, description="also time the deploy bundle end to end (tokenizer included)")
    cuda: Literal["auto", "off"] = Field("auto", description="auto: also time the teacher on CUDA when a GPU is there")
    lm: LMBenchConfig | None = Field(None, description="task causal-lm only: prompts, prompt and generated tokens, "
                                     "evaluation windows (None: the defaults)")

    _omit_if: ClassVar[dict] = {"lm": None}

    def task_problem(self, pipeline) -> str | None:
        """Why this config does not fit the pipeline's task family, or None (takes the PipelineConfig or its task)."""
        task = getattr(pipeline, "task", pipeline)
        if task == "causal-lm":
            wrong = [name for name in CLASSIFIER_ONLY if name in self.model_fields_set]
            if wrong:
                return (f"{', '.join(wrong)} apply to text-classification only; a causal-lm bench takes rounds, "
                        "threads, max_other_cpu, strict, bundle, cuda and lm: {prompts, prompt_tokens, new_tokens, "
                        "eval_windows, warmup, turn_warmup}")
        elif self.lm is not None:
            return "lm applies to task causal-lm only"
        return None

    def lm_settings(self) -> LMBenchConfig:
        return self.lm or LMBenchConfig()

    @field_validator("threads")
    @classmethod
    def _threads_valid(cls, v: list[int]) -> list[int]:
        if any(n < 0 for n in v) or len(set(v)) != len(v):
            raise ValueError("threads must be distinct counts >= 1, or 0 for all physical cores")
        return v

    @field_validator("length_buckets")
    @classmethod
    def _buckets_increase(cls, v: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(v, v[1:])) or v[0] < 1:
            raise ValueError("length_buckets must be increasing positive token lengths, e.g. [16, 32, 64]")
        return v

    def latency_settings(self, max_length: int) -> list[str]:
        """Names of the batch-1 latency settings this config measures (the report plots one of them)."""
        tags = ["tall" if n == 0 else f"t{n}" for n in self.threads]
        if self.lm is not None:  # a causal LM: generation from fixed-length prompts, per thread setting
            return [f"p{self.lm.prompt_tokens}_n{self.lm.new_tokens}_{t}" for t in tags]
        fixed = [f"fixed{min(self.fixed_length, max_length)}_b1_{t}" for t in tags] if self.fixed_runs else []
        return [f"real_b1_{t}" for t in tags] + fixed

    @staticmethod
    def summary(m: dict) -> str:
        load = m.get("load", {})
        return (f"{m.get('rows')} rows; other processes used {load.get('other_processes_cores_mean', 0):.2f} cores"
                + (" (disturbed)" if load.get("disturbed") else ""))

    def requires(self) -> list[str]:
        return []

    def provides(self) -> list[str]:
        return ["bench.json"]

"""`llm-memory trace`: PyTorch's own peak tensor memory for a model and a workload, on the CPU, without weights.

The model is built from its config under ``torch._subclasses.fake_tensor.FakeTensorMode`` on the ``cpu`` device:
every tensor has its real shape and dtype, none has memory. The workload runs as people run it (a
``generate``-style prefill, or Trainer-style training steps), and two trackers count the bytes of every live
tensor storage: ``torch.distributed._tools.mem_tracker.MemTracker`` (by category) and an independent
``TorchDispatchMode`` that sums new output storages and subtracts them when they are freed. The two must agree.

Only this package's ``command`` module is imported by the CLI; ``runner`` imports torch, transformers and peft,
and is imported only when the command runs (the ``trace`` extra: ``pip install '.[trace]'``).

A trace record (one YAML file per trace, ``data/traces/<source>--<conditions>.yaml``; bytes are integers)::

    model: meta-llama/Llama-3.2-1B        # the catalog id; absent for a --config trace
    config: path/to/config.json           # only for a --config trace
    model_type: llama                     # the model_type actually built (gemma3 builds its text decoder)
    config_sha256: 3f...                  # SHA-256 of the canonical JSON of the architecture block traced
    conditions:                           # every condition that applies to the workload, nothing else
      workload: inference                 # inference | train | lora
      context: 2048                       # tokens per sequence
      batch: 1
      attention: sdpa                     # sdpa | eager (transformers' attn_implementation)
      dtype: bf16                         # inference: weights; lora: the frozen base
      all_logits: false                   # inference: logits_to_keep=0 (true) or 1 (false, as generate does)
      recipe: amp                         # train: amp (fp32 params + bf16 autocast) | pure (bf16) | fp32
      optimizer: adamw_torch_fused        # train, lora: adamw_torch_fused | adamw_torch | sgd | adafactor
      checkpointing: none                 # train, lora: none | full (use_reentrant=False)
      lora_rank: 16                       # lora: rank, alpha, dropout, target groups, adapter dtype
      lora_alpha: 32
      lora_dropout: 0.0
      lora_targets: [attention, mlp]
      lora_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]
      adapter_dtype: fp32                 # fp32 (peft's autocast_adapter_dtype=True) | bf16
      steps: 2                            # train, lora: steps run; the peak is that of the last one
    parameters: 1235814400                # every parameter of the model built
    trainable_parameters: 1235814400      # train: all; lora: the adapters; inference: 0
    peak_bytes: 2797207552                # MemTracker's peak of live tensor bytes (the last step for training)
    crosscheck_peak_bytes: 2797207552     # the independent dispatch-mode tracker; must equal peak_bytes
    peak_phase: forward                   # inference: forward; training: "step N forward|backward|optimizer|zero_grad"
    peak_module: model.layers.0.mlp       # innermost module running at the peak ("" when none)
    by_category:                          # MemTracker's categories at the peak; they sum to peak_bytes
      parameter: 2471628800
      buffer: 128
      gradient: 0
      activation: 325578624
      temp: 0
      optstate: 0
      other: 16384                        # the input ids
    step_peak_bytes: [.., ..]             # train, lora: the peak of each step
    versions: {torch: 2.13.0+cpu, transformers: 5.23.0, peft: 0.21.2}
    method: "FakeTensorMode on CPU, ..."  # what the figure includes and excludes
    notes: [...]                          # anything the trace changed or could not model (may be empty)

What a trace does not contain: the CUDA context, cuBLAS/cuDNN/NCCL workspaces, scratch memory inside kernels,
allocator rounding and fragmentation, ``torch.compile`` fusion, fused or chunked loss kernels, and weight-loading
transients. Kernels are chosen as on the CPU (autocast follows the CPU's op lists; SDPA picks a CPU kernel).
"""

from __future__ import annotations

TRACE_EXTRA_MISSING = "llm-memory trace needs the trace extra: pip install '.[trace]'"

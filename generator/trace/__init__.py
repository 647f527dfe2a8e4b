"""`llm-memory trace`: PyTorch's own peak tensor memory for a model and a workload, on the CPU, without weights.

The model is built from its config under ``torch._subclasses.fake_tensor.FakeTensorMode`` on the ``cpu`` device:
every tensor has its real shape and dtype, none has memory. The workload runs as people run it (a
``generate``-style prefill, or Trainer-style training steps), and two trackers count the bytes of every live
tensor storage: ``torch.distributed._tools.mem_tracker.MemTracker`` (by category) and an independent
``TorchDispatchMode`` that sums new output storages and subtracts them when they are freed. The two must agree.

Only this package's ``command`` module is imported by the CLI; ``runner`` imports torch, transformers and peft,
and is imported only when the command runs (the ``trace`` extra: ``pip install '.[trace]'``).

A trace record (one YAML file per trace, ``data/traces/<source>--<conditions>.yaml``, the file name made by
``spec.file_name``; bytes are integers; keys in this order)::

    model: meta-llama/Llama-3.2-1B      # the catalog id; absent for a --config trace
    config: path/to/config.json         # only for a --config trace
    model_type: llama                   # the model_type built (a multimodal gemma3 builds its gemma3_text decoder)
    config_sha256: ae5dfed2...          # SHA-256 of the canonical JSON (sorted keys, no spaces) of the config traced
    conditions:                         # every condition that applies to the workload, and nothing else
      workload: lora                    # inference | train | lora
      context: 512                      # tokens per sequence
      batch: 1
      attention: sdpa                   # transformers' attn_implementation: sdpa | eager
      dtype: bf16                       # inference: the weights; lora: the frozen base
      all_logits: false                 # inference only: logits_to_keep=0 (true) or 1 (false, as generate does)
      recipe: amp                       # train only: amp (fp32 params + bf16 autocast) | pure (bf16) | fp32
      optimizer: adamw_torch_fused      # train, lora: adamw_torch_fused | adamw_torch | sgd | adafactor
      checkpointing: none               # train, lora: none | full (use_reentrant=False)
      lora_rank: 16                     # lora only, to adapter_dtype
      lora_alpha: 32
      lora_dropout: 0.0
      lora_targets: [attention, mlp]    # groups among attention, mlp, experts
      adapter_dtype: fp32               # fp32 (peft's autocast_adapter_dtype=True) | bf16 (False)
      steps: 2                          # train, lora: steps run; the peak is the last one's
    parameters: 1235814400              # every parameter of the model built
    trainable_parameters: 11272192      # train: all; lora: the adapters; inference: 0
    lora_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]  # lora only: what peft adapted
    peak_bytes: 4691666056              # MemTracker's peak of live tensor bytes (training: the last step's)
    crosscheck_peak_bytes: 4691666056   # the independent dispatch-mode counter; equal to peak_bytes, or a note says
    peak_phase: step 2 backward         # inference: forward; training: step N forward | backward | optimizer | zero_grad
    peak_module: ''                     # the innermost module running at a forward peak; '' in the backward
    by_category:                        # MemTracker's categories at the peak; they sum to peak_bytes
      parameter: 2516717568
      buffer: 256
      gradient: 0
      activation: 1559429128            # made in the forward (and in a checkpointed recomputation)
      temp: 525336576                   # made in the backward, not yet a parameter's gradient
      optstate: 90178432                # optimizer states and anything made inside optimizer.step()
      other: 4096                       # the input ids
    step_peak_bytes: [4601487624, 4691666056]  # train, lora: the peak of each step
    versions: {torch: 2.13.0+cpu, transformers: 5.23.0, peft: 0.21.2}
    method: FakeTensorMode on CPU ...   # what the figure counts and leaves out (spec.METHOD)
    notes: []                           # what the trace changed or could not model (grouped_mm fallback, ...)

What a trace does not contain: the CUDA context, cuBLAS/cuDNN/NCCL workspaces, scratch memory inside kernels,
allocator rounding and fragmentation, ``torch.compile`` fusion, fused or chunked loss kernels, and weight-loading
transients. Kernels are chosen as on the CPU (autocast follows the CPU's op lists; SDPA picks a CPU kernel).

What the trace adjusts so that it measures an untraced run (runner.py has the sources for each):
- transformers' packed-batch check cannot read fake position ids and would assume a packed batch (an s x s mask in
  every layer, SDPA off its causal path): it answers "not packed", as it does for a real unpacked batch;
- under any dispatch mode the autograd engine sums two gradients of one tensor out of place (a phantom
  vocab x hidden matrix for tied embeddings): such sums are counted in place, as an untraced run does them;
- nn.Module._apply swaps fake parameters, which the fake-tensor memo's weak references forbid: the stale memo
  entries are dropped before each swap (peft's adapter casts need it);
- grouped_mm takes bf16 only: fp32 MoE experts go through transformers' grouped_mm_fallback op (noted).
"""

from __future__ import annotations

TRACE_EXTRA_MISSING = "llm-memory trace needs the trace extra: pip install '.[trace]'"

"""Parse a Hugging Face ``config.json`` into an :class:`Architecture` with an exact tensor inventory.

Every tensor of the real checkpoint is listed with its shape (PyTorch order: ``(out, in)`` for a
matrix, ``(experts, out, in)`` for stacked experts), its group, and a llama.cpp-style role name, so
that parameter counts are exact and a precision can choose a storage type per tensor.

Buffers are not parameters: rotary ``inv_freq`` and GPT-2's causal-mask ``attn.bias`` are left out.
Pure functions, no I/O.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

# Tensor groups. Precisions treat them differently (e.g. bitsandbytes keeps embeddings and lm_head 16-bit).
EMBEDDINGS = "embeddings"
ATTENTION = "attention"
MLP = "mlp"
EXPERTS = "experts"  # routed experts of a mixture-of-experts layer
ROUTER = "router"
NORMS = "norms"
LM_HEAD = "lm_head"
GROUPS = (EMBEDDINGS, ATTENTION, MLP, EXPERTS, ROUTER, NORMS, LM_HEAD)

SUPPORTED_MODEL_TYPES = (
    "llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "mixtral", "gemma2", "gemma3", "gemma3_text",
    "phi3", "deepseek_v3", "gpt_oss", "gpt2", "falcon", "olmo2",
)

# config.json keys the catalog accepts in a model's architecture block. Everything the estimator
# reads, plus harmless descriptive keys. Anything else is reported as an unknown key.
KNOWN_CONFIG_KEYS = frozenset("""
model_type architectures vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads
num_key_value_heads head_dim tie_word_embeddings max_position_embeddings torch_dtype rope_theta rope_scaling
rms_norm_eps layer_norm_eps layer_norm_epsilon hidden_act hidden_activation attention_bias mlp_bias
sliding_window use_sliding_window max_window_layers layer_types sliding_window_pattern query_pre_attn_scalar
attn_logit_softcapping final_logit_softcapping quantization_config num_local_experts num_experts
num_experts_per_tok moe_intermediate_size decoder_sparse_step mlp_only_layers norm_topk_prob n_routed_experts
n_shared_experts first_k_dense_replace moe_layer_freq n_group topk_group routed_scaling_factor scoring_func
topk_method q_lora_rank kv_lora_rank qk_nope_head_dim qk_rope_head_dim v_head_dim num_nextn_predict_layers
n_embd n_layer n_head n_positions n_ctx n_inner activation_function multi_query parallel_attn bias
new_decoder_architecture num_kv_heads alibi ffn_hidden_size num_ln_in_parallel_attn swiglu_limit
initial_context_length original_max_position_embeddings partial_rotary_factor rope_local_base_freq text_config
""".split())


class ConfigError(ValueError):
    """An unsupported or inconsistent config. ``field`` names the offending config key."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Tensor:
    name: str  # llama.cpp-style name without the "blk.N." prefix, e.g. "attn_v.weight"
    group: str
    shape: tuple[int, ...]
    layer: int | None = None  # None for tensors outside the repeated blocks

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def row_length(self) -> int:
        """Elements per row as stored (ggml's ne[0]): the input dimension of a matrix."""
        return self.shape[-1]

    @property
    def is_matrix(self) -> bool:
        return len(self.shape) >= 2


@dataclass(frozen=True)
class AttentionLayer:
    """What one layer's attention keeps in its KV cache."""

    kv_heads: int
    k_dim: int  # per head
    v_dim: int  # per head
    window: int | None = None  # sliding-window size, None for full attention
    latent_dim: int | None = None  # MLA: elements cached per token (kv_lora_rank + qk_rope_head_dim)


@dataclass(frozen=True)
class Architecture:
    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # dense MLP width (for MoE models: width of one expert)
    max_context: int | None
    tied_embeddings: bool
    gated_mlp: bool
    tensors: tuple[Tensor, ...]
    attention: tuple[AttentionLayer, ...]
    num_experts: int = 0
    experts_per_token: int = 0
    moe_layers: int = 0
    shared_expert_intermediate: int = 0
    extra_params: Mapping[str, int] = field(default_factory=dict)  # reported, not counted (e.g. MTP layers)
    notes: tuple[str, ...] = ()

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0


@dataclass(frozen=True)
class ParamCounts:
    total: int
    active: int
    by_group: Mapping[str, int]


def memo(arch: Architecture, key: Any, compute: Callable[[], T]) -> T:
    """Memoise a pure function of an (immutable) architecture on the architecture itself.

    The estimator is asked the same questions many times (a fit search re-estimates a model dozens of
    times, the site crosses every model with every precision and workload), so derived values are kept
    in the instance's __dict__, outside the dataclass fields: equality and hashing are unaffected."""
    cache = arch.__dict__.setdefault("_memo", {})
    try:
        return cache[key]
    except KeyError:
        value = cache[key] = compute()
        return value


def memo_key(arch: Architecture, obj: Any) -> int:
    """A memo key for an unhashable input (a precision catalog): its id, with the object kept alive for
    as long as the architecture's memo, so the id cannot be reused by another object."""
    memo(arch, ("keep", id(obj)), lambda: obj)
    return id(obj)


def count_parameters(arch: Architecture) -> ParamCounts:
    return memo(arch, "params", lambda: _count_parameters(arch))


def _count_parameters(arch: Architecture) -> ParamCounts:
    by_group = {g: 0 for g in GROUPS}
    for t in arch.tensors:
        by_group[t.group] += t.numel
    total = sum(by_group.values())
    active = total
    if arch.is_moe:
        # Each token runs experts_per_token of num_experts routed experts; everything else always runs.
        idle = arch.num_experts - arch.experts_per_token
        active = total - by_group[EXPERTS] * idle // arch.num_experts
    return ParamCounts(total=total, active=active, by_group=by_group)


# --------------------------------------------------------------------------------------------------
# Reading fields


class _Cfg:
    """Typed access to a config mapping; every problem is a ConfigError naming the key.

    The method ``int`` shadows the builtin inside this class body, so annotations after it spell the
    builtin type as ``builtins.int``."""

    def __init__(self, data: Mapping[str, Any], prefix: str = ""):
        self.data = data
        self.prefix = prefix

    def _name(self, key: str) -> str:
        return self.prefix + key

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def int(self, key: str, default: int | None = None, *, minimum: int = 1) -> int:
        value = self.data.get(key)
        if value is None:
            if default is None:
                raise ConfigError(self._name(key), "required field is missing")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self._name(key), f"must be an integer, got {value!r}")
        if value < minimum:
            raise ConfigError(self._name(key), f"must be at least {minimum}, got {value}")
        if value > 10**9:
            raise ConfigError(self._name(key), f"absurdly large value {value}")
        return value

    def opt_int(self, key: str, *, minimum: builtins.int = 1) -> builtins.int | None:
        return None if self.data.get(key) is None else self.int(key, minimum=minimum)

    def bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self._name(key), f"must be true or false, got {value!r}")
        return value

    def str_list(self, key: str) -> list[str] | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self._name(key), "must be a list of strings")
        return value

    def int_list(self, key: str) -> list[builtins.int]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ConfigError(self._name(key), "must be a list of integers")
        return value


@dataclass
class _Builder:
    tensors: list[Tensor] = field(default_factory=list)

    def add(self, name: str, group: str, *shape: int, layer: int | None = None) -> None:
        self.tensors.append(Tensor(name, group, tuple(shape), layer))

    def linear(self, name: str, group: str, out: int, inp: int, *, bias: bool, layer: int | None) -> None:
        self.add(f"{name}.weight", group, out, inp, layer=layer)
        if bias:
            self.add(f"{name}.bias", group, out, layer=layer)

    def norm(self, name: str, size: int, *, bias: bool = False, layer: int | None = None) -> None:
        self.add(f"{name}.weight", NORMS, size, layer=layer)
        if bias:
            self.add(f"{name}.bias", NORMS, size, layer=layer)


def _heads(cfg: _Cfg, hidden: int, *, heads_key: str = "num_attention_heads",
           kv_key: str | None = "num_key_value_heads") -> tuple[int, int, int]:
    heads = cfg.int(heads_key)
    kv_heads = cfg.int(kv_key, heads) if kv_key else heads
    if kv_heads > heads:
        raise ConfigError(cfg._name(kv_key or heads_key),
                          f"{kv_heads} key/value heads exceed {heads} attention heads")
    if heads % kv_heads:
        raise ConfigError(cfg._name(kv_key or heads_key),
                          f"{heads} attention heads are not divisible by {kv_heads} key/value heads")
    if cfg.has("head_dim"):
        head_dim = cfg.int("head_dim")
    else:
        if hidden % heads:
            raise ConfigError(cfg._name(heads_key),
                              f"hidden_size {hidden} is not divisible by {heads} heads and no head_dim is given")
        head_dim = hidden // heads
    return heads, kv_heads, head_dim


def _layer_windows(cfg: _Cfg, model_type: str, layers: int) -> list[int | None]:
    """Sliding-window size per layer (None = full attention), following each model's own rule."""
    window = cfg.opt_int("sliding_window")
    types = cfg.str_list("layer_types")
    if types is not None:
        if len(types) != layers:
            raise ConfigError(cfg._name("layer_types"),
                              f"has {len(types)} entries for {layers} layers")
        out: list[int | None] = []
        for t in types:
            if t == "full_attention":
                out.append(None)
            elif t == "sliding_attention":
                if window is None:
                    raise ConfigError(cfg._name("sliding_window"),
                                      "layer_types names sliding_attention but sliding_window is missing")
                out.append(window)
            else:
                raise ConfigError(cfg._name("layer_types"), f"unknown layer type {t!r}")
        return out
    if window is None:
        return [None] * layers
    if model_type == "gemma2":  # modeling_gemma2: layer_idx % 2 == 0 is sliding
        return [window if i % 2 == 0 else None for i in range(layers)]
    if model_type in ("gemma3", "gemma3_text"):  # every sliding_window_pattern-th layer is global
        pattern = cfg.int("sliding_window_pattern", 6)
        return [None if (i + 1) % pattern == 0 else window for i in range(layers)]
    if model_type in ("qwen2", "qwen3"):  # only with use_sliding_window, from max_window_layers (default 28) on
        # Qwen2Config / Qwen3Config: max_window_layers = 28; layer i slides when i >= max_window_layers.
        if not cfg.bool("use_sliding_window", False):
            return [None] * layers
        first = cfg.int("max_window_layers", 28, minimum=0)
        return [window if i >= first else None for i in range(layers)]
    if model_type == "qwen3_moe":  # Qwen3MoeConfig: use_sliding_window slides every layer
        return [window if cfg.bool("use_sliding_window", False) else None for _ in range(layers)]
    if model_type == "gpt_oss":  # alternating, sliding first (gpt-oss model card)
        return [window if i % 2 == 0 else None for i in range(layers)]
    return [window] * layers  # mistral, phi3: every layer is sliding


# --------------------------------------------------------------------------------------------------
# Decoder families


def _llama_like(cfg: _Cfg, model_type: str) -> Architecture:
    vocab = cfg.int("vocab_size")
    hidden = cfg.int("hidden_size")
    layers = cfg.int("num_hidden_layers")
    heads, kv_heads, head_dim = _heads(cfg, hidden)
    inter = cfg.int("intermediate_size")
    tied_default = model_type in ("gemma2", "gemma3", "gemma3_text")
    tied = cfg.bool("tie_word_embeddings", tied_default)
    notes: list[str] = []

    # Biases: Qwen2 always has q/k/v biases; gpt-oss and others follow attention_bias.
    if model_type == "qwen2":
        qkv_bias, o_bias = True, False
    elif model_type in ("mistral", "mixtral", "phi3"):
        qkv_bias = o_bias = False
    else:
        qkv_bias = o_bias = cfg.bool("attention_bias", model_type == "gpt_oss")
    mlp_bias = cfg.bool("mlp_bias", False) if model_type == "llama" else False
    four_norms = model_type in ("gemma2", "gemma3", "gemma3_text")
    per_head_qk_norm = model_type in ("qwen3", "qwen3_moe", "gemma3", "gemma3_text")

    # Mixture of experts.
    num_experts = top_k = moe_inter = 0
    moe_layer_ids: set[int] = set()
    if model_type in ("mixtral", "gpt_oss"):
        num_experts = cfg.int("num_local_experts")
        top_k = cfg.int("num_experts_per_tok", 2 if model_type == "mixtral" else 4)
        moe_inter = inter
        moe_layer_ids = set(range(layers))
    elif model_type == "qwen3_moe":
        num_experts = cfg.int("num_experts")
        top_k = cfg.int("num_experts_per_tok")
        moe_inter = cfg.int("moe_intermediate_size")
        step = cfg.int("decoder_sparse_step", 1)
        dense_only = set(cfg.int_list("mlp_only_layers"))
        moe_layer_ids = {i for i in range(layers) if i not in dense_only and (i + 1) % step == 0}
    if num_experts and top_k > num_experts:
        raise ConfigError(cfg._name("num_experts_per_tok"),
                          f"{top_k} experts per token exceed {num_experts} experts")

    b = _Builder()
    b.add("token_embd.weight", EMBEDDINGS, vocab, hidden)
    for i in range(layers):
        if model_type == "olmo2":
            b.norm("post_attention_norm", hidden, layer=i)
            b.norm("post_ffw_norm", hidden, layer=i)
        else:
            b.norm("attn_norm", hidden, layer=i)
            b.norm("ffn_norm", hidden, layer=i)
            if four_norms:
                b.norm("post_attention_norm", hidden, layer=i)
                b.norm("post_ffw_norm", hidden, layer=i)
        q_out, kv_out = heads * head_dim, kv_heads * head_dim
        if model_type == "phi3":  # fused qkv_proj
            b.linear("attn_qkv", ATTENTION, q_out + 2 * kv_out, hidden, bias=False, layer=i)
        else:
            b.linear("attn_q", ATTENTION, q_out, hidden, bias=qkv_bias, layer=i)
            b.linear("attn_k", ATTENTION, kv_out, hidden, bias=qkv_bias, layer=i)
            b.linear("attn_v", ATTENTION, kv_out, hidden, bias=qkv_bias, layer=i)
        b.linear("attn_output", ATTENTION, hidden, q_out, bias=o_bias, layer=i)
        if per_head_qk_norm:
            b.norm("attn_q_norm", head_dim, layer=i)
            b.norm("attn_k_norm", head_dim, layer=i)
        elif model_type == "olmo2":  # OLMo 2 normalises the whole q and k projections
            b.norm("attn_q_norm", q_out, layer=i)
            b.norm("attn_k_norm", kv_out, layer=i)
        if model_type == "gpt_oss":
            b.add("attn_sinks.weight", ATTENTION, heads, layer=i)

        if i in moe_layer_ids:
            router_bias = model_type == "gpt_oss"
            b.linear("ffn_gate_inp", ROUTER, num_experts, hidden, bias=router_bias, layer=i)
            if model_type == "gpt_oss":  # fused gate_up_proj with biases, stored (E, hidden, 2*I)
                b.add("ffn_gate_up_exps.weight", EXPERTS, num_experts, 2 * moe_inter, hidden, layer=i)
                b.add("ffn_gate_up_exps.bias", EXPERTS, num_experts, 2 * moe_inter, layer=i)
                b.add("ffn_down_exps.weight", EXPERTS, num_experts, hidden, moe_inter, layer=i)
                b.add("ffn_down_exps.bias", EXPERTS, num_experts, hidden, layer=i)
            else:
                b.add("ffn_gate_exps.weight", EXPERTS, num_experts, moe_inter, hidden, layer=i)
                b.add("ffn_up_exps.weight", EXPERTS, num_experts, moe_inter, hidden, layer=i)
                b.add("ffn_down_exps.weight", EXPERTS, num_experts, hidden, moe_inter, layer=i)
        elif model_type == "phi3":  # fused gate_up_proj
            b.linear("ffn_up", MLP, 2 * inter, hidden, bias=False, layer=i)
            b.linear("ffn_down", MLP, hidden, inter, bias=False, layer=i)
        else:
            b.linear("ffn_gate", MLP, inter, hidden, bias=mlp_bias, layer=i)
            b.linear("ffn_up", MLP, inter, hidden, bias=mlp_bias, layer=i)
            b.linear("ffn_down", MLP, hidden, inter, bias=mlp_bias, layer=i)
    b.norm("output_norm", hidden)
    if not tied:
        b.add("output.weight", LM_HEAD, vocab, hidden)

    windows = _layer_windows(cfg, model_type, layers)
    if any(windows):
        n_sliding = sum(1 for w in windows if w)
        notes.append(f"{n_sliding} of {layers} layers use a {max(w for w in windows if w)}-token sliding window.")
    attention = tuple(AttentionLayer(kv_heads, head_dim, head_dim, window=w) for w in windows)
    return Architecture(
        model_type=model_type, vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads,
        num_kv_heads=kv_heads, head_dim=head_dim, intermediate_size=moe_inter or inter,
        max_context=cfg.opt_int("max_position_embeddings"), tied_embeddings=tied, gated_mlp=True,
        tensors=tuple(b.tensors), attention=attention, num_experts=num_experts, experts_per_token=top_k,
        moe_layers=len(moe_layer_ids), notes=tuple(notes),
    )


def _deepseek_v3(cfg: _Cfg) -> Architecture:
    vocab = cfg.int("vocab_size")
    hidden = cfg.int("hidden_size")
    layers = cfg.int("num_hidden_layers")
    heads = cfg.int("num_attention_heads")
    inter = cfg.int("intermediate_size")
    moe_inter = cfg.int("moe_intermediate_size")
    num_experts = cfg.int("n_routed_experts")
    # DeepseekV3Config defaults: n_shared_experts = 1, first_k_dense_replace = 3.
    shared = cfg.int("n_shared_experts", 1, minimum=0)
    top_k = cfg.int("num_experts_per_tok")
    if top_k > num_experts:
        raise ConfigError(cfg._name("num_experts_per_tok"),
                          f"{top_k} experts per token exceed {num_experts} experts")
    first_dense = cfg.int("first_k_dense_replace", 3, minimum=0)
    freq = cfg.int("moe_layer_freq", 1)
    q_lora = cfg.opt_int("q_lora_rank")
    kv_lora = cfg.int("kv_lora_rank")
    nope = cfg.int("qk_nope_head_dim")
    rope = cfg.int("qk_rope_head_dim")
    v_dim = cfg.int("v_head_dim")
    tied = cfg.bool("tie_word_embeddings", False)
    bias = cfg.bool("attention_bias", False)
    qk_dim = nope + rope
    noaux = cfg.data.get("topk_method", "noaux_tc") == "noaux_tc"

    def decoder_layer(b: _Builder, i: int, moe: bool) -> None:
        b.norm("attn_norm", hidden, layer=i)
        b.norm("ffn_norm", hidden, layer=i)
        if q_lora:
            b.linear("attn_q_a", ATTENTION, q_lora, hidden, bias=bias, layer=i)
            b.norm("attn_q_a_norm", q_lora, layer=i)
            b.linear("attn_q_b", ATTENTION, heads * qk_dim, q_lora, bias=False, layer=i)
        else:
            b.linear("attn_q", ATTENTION, heads * qk_dim, hidden, bias=False, layer=i)
        b.linear("attn_kv_a_mqa", ATTENTION, kv_lora + rope, hidden, bias=bias, layer=i)
        b.norm("attn_kv_a_norm", kv_lora, layer=i)
        b.linear("attn_kv_b", ATTENTION, heads * (nope + v_dim), kv_lora, bias=False, layer=i)
        b.linear("attn_output", ATTENTION, hidden, heads * v_dim, bias=bias, layer=i)
        if moe:
            b.add("ffn_gate_inp.weight", ROUTER, num_experts, hidden, layer=i)
            if noaux:  # e_score_correction_bias: stored in the checkpoint, nn.Parameter in DeepSeek's code
                b.add("exp_probs_b.bias", ROUTER, num_experts, layer=i)
            b.add("ffn_gate_exps.weight", EXPERTS, num_experts, moe_inter, hidden, layer=i)
            b.add("ffn_up_exps.weight", EXPERTS, num_experts, moe_inter, hidden, layer=i)
            b.add("ffn_down_exps.weight", EXPERTS, num_experts, hidden, moe_inter, layer=i)
            if shared:
                s = moe_inter * shared
                b.linear("ffn_gate_shexp", MLP, s, hidden, bias=False, layer=i)
                b.linear("ffn_up_shexp", MLP, s, hidden, bias=False, layer=i)
                b.linear("ffn_down_shexp", MLP, hidden, s, bias=False, layer=i)
        else:
            b.linear("ffn_gate", MLP, inter, hidden, bias=False, layer=i)
            b.linear("ffn_up", MLP, inter, hidden, bias=False, layer=i)
            b.linear("ffn_down", MLP, hidden, inter, bias=False, layer=i)

    def is_moe(i: int) -> bool:
        return i >= first_dense and i % freq == 0

    b = _Builder()
    b.add("token_embd.weight", EMBEDDINGS, vocab, hidden)
    for i in range(layers):
        decoder_layer(b, i, is_moe(i))
    b.norm("output_norm", hidden)
    if not tied:
        b.add("output.weight", LM_HEAD, vocab, hidden)

    extra: dict[str, int] = {}
    notes = []
    mtp = cfg.int("num_nextn_predict_layers", 0, minimum=0)
    if mtp:
        # Each multi-token-prediction module: enorm, hnorm, eh_proj (hidden x 2*hidden), one MoE decoder
        # layer, and its own copy of the embedding and output head plus a norm, as in the checkpoint.
        m = _Builder()
        for j in range(mtp):
            decoder_layer(m, layers + j, True)
        mtp_params = sum(t.numel for t in m.tensors) + mtp * (
            3 * hidden + 2 * hidden * hidden + 2 * vocab * hidden)
        extra["multi_token_prediction"] = mtp_params
        notes.append(f"Counts the main model only; the {mtp} multi-token-prediction layer(s) in the checkpoint "
                     f"({mtp_params:,} parameters) are not loaded for ordinary inference.")
    moe_layers = sum(1 for i in range(layers) if is_moe(i))
    # MLA caches one compressed latent plus the decoupled rope key per token and layer.
    attention = tuple(AttentionLayer(1, kv_lora + rope, 0, latent_dim=kv_lora + rope) for _ in range(layers))
    return Architecture(
        model_type="deepseek_v3", vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads,
        num_kv_heads=heads, head_dim=qk_dim, intermediate_size=moe_inter,
        max_context=cfg.opt_int("max_position_embeddings"), tied_embeddings=tied, gated_mlp=True,
        tensors=tuple(b.tensors), attention=attention, num_experts=num_experts, experts_per_token=top_k,
        moe_layers=moe_layers, shared_expert_intermediate=moe_inter * shared, extra_params=extra,
        notes=tuple(notes),
    )


def _gpt2(cfg: _Cfg) -> Architecture:
    vocab = cfg.int("vocab_size")
    hidden = cfg.int("n_embd")
    layers = cfg.int("n_layer")
    heads = cfg.int("n_head")
    if hidden % heads:
        raise ConfigError(cfg._name("n_head"), f"n_embd {hidden} is not divisible by {heads} heads")
    positions = cfg.int("n_positions")
    inner = cfg.int("n_inner", 4 * hidden)
    b = _Builder()
    b.add("token_embd.weight", EMBEDDINGS, vocab, hidden)
    b.add("position_embd.weight", EMBEDDINGS, positions, hidden)
    for i in range(layers):
        b.norm("attn_norm", hidden, bias=True, layer=i)
        b.linear("attn_qkv", ATTENTION, 3 * hidden, hidden, bias=True, layer=i)
        b.linear("attn_output", ATTENTION, hidden, hidden, bias=True, layer=i)
        b.norm("ffn_norm", hidden, bias=True, layer=i)
        b.linear("ffn_up", MLP, inner, hidden, bias=True, layer=i)
        b.linear("ffn_down", MLP, hidden, inner, bias=True, layer=i)
    b.norm("output_norm", hidden, bias=True)
    tied = cfg.bool("tie_word_embeddings", True)
    if not tied:
        b.add("output.weight", LM_HEAD, vocab, hidden)
    hd = hidden // heads
    return Architecture(
        model_type="gpt2", vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads,
        num_kv_heads=heads, head_dim=hd, intermediate_size=inner, max_context=positions, tied_embeddings=tied,
        gated_mlp=False, tensors=tuple(b.tensors),
        attention=tuple(AttentionLayer(heads, hd, hd) for _ in range(layers)),
    )


def _falcon(cfg: _Cfg) -> Architecture:
    vocab = cfg.int("vocab_size")
    hidden = cfg.int("hidden_size")
    layers = cfg.int("num_hidden_layers")
    heads = cfg.int("num_attention_heads")
    if hidden % heads:
        raise ConfigError(cfg._name("num_attention_heads"), f"hidden_size {hidden} is not divisible by {heads} heads")
    hd = hidden // heads  # FalconAttention: head_dim = hidden_size // num_heads, whatever the config says
    new_arch = cfg.bool("new_decoder_architecture", False)
    bias = cfg.bool("bias", False)
    if cfg.bool("alibi", False):
        pass  # ALiBi adds no parameters
    if new_arch:
        kv_heads = cfg.int("num_kv_heads", heads)
        if heads % kv_heads:
            raise ConfigError(cfg._name("num_kv_heads"),
                              f"{heads} attention heads are not divisible by {kv_heads} key/value heads")
        qkv_out = (2 * kv_heads + heads) * hd
    elif cfg.bool("multi_query", True):
        kv_heads = 1
        qkv_out = hidden + 2 * hd
    else:
        kv_heads = heads
        qkv_out = 3 * hidden
    ffn = cfg.int("ffn_hidden_size", 4 * hidden)
    parallel = cfg.bool("parallel_attn", True)
    n_ln = cfg.int("num_ln_in_parallel_attn", 2) if new_arch else 0
    b = _Builder()
    b.add("token_embd.weight", EMBEDDINGS, vocab, hidden)
    for i in range(layers):
        if new_arch and n_ln == 2:
            b.norm("attn_norm", hidden, bias=True, layer=i)
            b.norm("attn_norm_2", hidden, bias=True, layer=i)
        else:
            b.norm("attn_norm", hidden, bias=True, layer=i)
            if not parallel:
                b.norm("ffn_norm", hidden, bias=True, layer=i)
        b.linear("attn_qkv", ATTENTION, qkv_out, hidden, bias=bias, layer=i)
        b.linear("attn_output", ATTENTION, hidden, hidden, bias=bias, layer=i)
        b.linear("ffn_up", MLP, ffn, hidden, bias=bias, layer=i)
        b.linear("ffn_down", MLP, hidden, ffn, bias=bias, layer=i)
    b.norm("output_norm", hidden, bias=True)
    tied = cfg.bool("tie_word_embeddings", True)
    if not tied:
        b.add("output.weight", LM_HEAD, vocab, hidden)
    return Architecture(
        model_type="falcon", vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=heads,
        num_kv_heads=kv_heads, head_dim=hd, intermediate_size=ffn,
        max_context=cfg.opt_int("max_position_embeddings") or 2048, tied_embeddings=tied, gated_mlp=False,
        tensors=tuple(b.tensors), attention=tuple(AttentionLayer(kv_heads, hd, hd) for _ in range(layers)),
        notes=("Falcon's config has no max_position_embeddings; 2048 tokens is its trained context.",)
        if not cfg.has("max_position_embeddings") else (),
    )


# Library defaults for keys a config.json may leave out, where real configs rely on them.
# Gemma3TextConfig.__init__ in transformers (multimodal Gemma 3 configs omit most text keys):
# https://github.com/huggingface/transformers/blob/008f5c8c29be84d4721dc6d1e0fcd72300580be4/src/transformers/models/gemma3/configuration_gemma3.py
# GPT2Config.__init__ (n_positions=1024, n_inner=None -> 4 * n_embd, tie_word_embeddings=True):
# https://github.com/huggingface/transformers/blob/1c70522e01cdf5fcc6ebda6c372ee0198d557c53/src/transformers/models/gpt2/configuration_gpt2.py
_DEFAULTS: dict[str, dict[str, Any]] = {
    "gpt2": {"n_positions": 1024},
    "gemma3_text": {
        "vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 131_072,
        "tie_word_embeddings": True, "attention_bias": False, "sliding_window": 4096, "sliding_window_pattern": 6,
    },
}


def _with_defaults(config: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    merged = dict(_DEFAULTS.get(model_type, {}))
    merged.update(config)  # an explicit null stays null (e.g. Gemma 3's sliding_window: null = no sliding layer)
    return merged


def parse_architecture(config: Mapping[str, Any]) -> Architecture:
    """Build the architecture of a Hugging Face config.json mapping, or raise ConfigError."""
    if not isinstance(config, Mapping):
        raise ConfigError("config", "must be a mapping of config.json fields")
    model_type = config.get("model_type")
    if model_type is None:
        raise ConfigError("model_type", "required field is missing")
    if not isinstance(model_type, str):
        raise ConfigError("model_type", f"must be a string, got {model_type!r}")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError("model_type", f"unsupported model_type {model_type!r}; supported: "
                          + ", ".join(SUPPORTED_MODEL_TYPES))
    cfg = _Cfg(_with_defaults(config, model_type))
    if model_type == "gemma3" and "text_config" in config:
        # Multimodal Gemma 3: the language model is described by text_config. The SigLIP vision tower
        # and projector are not counted.
        text = config["text_config"]
        if not isinstance(text, Mapping):
            raise ConfigError("text_config", "must be a mapping")
        arch = _llama_like(_Cfg(_with_defaults(text, "gemma3_text"), "text_config."), "gemma3")
        return _with_note(arch, "Counts the text decoder only; the vision encoder of the multimodal "
                                "checkpoint is not included.")
    if model_type == "deepseek_v3":
        return _deepseek_v3(cfg)
    if model_type == "gpt2":
        return _gpt2(cfg)
    if model_type == "falcon":
        return _falcon(cfg)
    if model_type == "gemma3":
        raise ConfigError("text_config", "a gemma3 config must carry its language model under text_config")
    return _llama_like(cfg, model_type)


def _with_note(arch: Architecture, note: str) -> Architecture:
    from dataclasses import replace

    return replace(arch, notes=arch.notes + (note,))

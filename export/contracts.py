"""The contract of each component graph of a preset (see vp.engines.contract).

docs/engine-contract.md explains every tensor; tests keep it in step with the
names declared here.
"""

from __future__ import annotations

import math

from vp.engines.contract import DECODE, HEAD, LOGITS, NEW_KV, PREFILL, Contract, Profile, TensorSpec as T, kv_planes
from vp.models.presets import Preset
from vp.models.video_decoder_step import state_layout
from vp.runtime.sampling import DRAWS

# Tokens per KV block: the pool is [layers, 2, kv_heads, num_blocks, BLOCK_SIZE, head_dim] (vp.runtime.kv_pool),
# given to the graph as one input per layer and K/V.
BLOCK_SIZE = 16
# Sequences per call: cond + uncond branches of a few samples.
MAX_BATCH = 8


def llm_contract(preset: Preset) -> Contract:
    c = preset.llm
    max_blocks = math.ceil(c.max_seq_len / BLOCK_SIZE)
    plane = (c.n_kv_heads, "num_blocks", BLOCK_SIZE, c.head_dim)
    return Contract(
        component="llm",
        doc="Prefix LM over a paged KV cache: prefill (many new tokens) and decode (one per sequence).",
        inputs=(
            T("input_ids", "int64", ("batch", "tokens"), "token ids of the new positions"),
            T("input_embeds", "float", ("batch", "tokens", c.d_model),
              "text embeddings (projected), read where embed_mask is True"),
            T("embed_mask", "bool", ("batch", "tokens"), "True at text slots"),
            T("position_ids", "int64", ("batch", "tokens"), "absolute positions: context_lens + 0..T-1"),
            T("block_table", "int64", ("batch", "max_blocks"), "pool block of each logical block"),
            T("context_lens", "int64", ("batch",), "tokens already cached per sequence"),
            T("prefix_lens", "int64", ("batch",), "bidirectional prefix length per sequence"),
            *(T(name, "float", plane, f"the KV pool's {'K' if name[0] == 'k' else 'V'} planes of layer "
                f"{name.split('.')[1]} (K stored after rotary), read in place") for name in kv_planes(c.n_layers)),
            T(HEAD, "int64", (1,), "the output head whose logits to compute: its index in the vocabulary's heads"),
        ),
        outputs=(
            T(LOGITS, "float32", ("batch", preset.vocab.head_width),
              "logits of the last new position over the head's ids, zero-padded after them"),
            T(NEW_KV, "float", (c.n_layers, 2, c.n_kv_heads, "batch", "tokens", c.head_dim),
              "K (rotated) and V of the new positions in the pool's layout, for the runtime to commit"),
        ),
        profiles=(
            # a prefill call reads planes of its own past blocks only (or of one empty block)
            Profile(PREFILL, {"batch": (1, 1, 2), "tokens": (1, 128, c.max_seq_len),
                                "num_blocks": (1, 1, 2 * max_blocks), "max_blocks": (1, max_blocks // 4 or 1, max_blocks)}),
            Profile(DECODE, {"batch": (1, 2, MAX_BATCH), "tokens": (1, 1, 1),
                               "num_blocks": (1, max_blocks, MAX_BATCH * max_blocks),
                               "max_blocks": (1, max_blocks // 2 or 1, max_blocks)}),
        ),
        notes=(f"block_size = {BLOCK_SIZE}",),
    )


def text_encoder_contract(preset: Preset) -> Contract:
    n = preset.text_encoder.max_tokens
    return Contract(
        component="text_encoder",
        doc="Frozen text encoder + learned projection to the LLM width.",
        inputs=(
            T("text_ids", "int64", ("batch", "text_tokens"), "ids of the tokenizer.json in the bundle"),
            T("text_mask", "bool", ("batch", "text_tokens"), "True at real tokens, False at padding"),
        ),
        outputs=(T("text_embeddings", "float", ("batch", "text_tokens", preset.text_encoder.width),
                   "per-token embeddings, zero at padding"),),
        profiles=(Profile("main", {"batch": (1, 1, MAX_BATCH), "text_tokens": (1, 16, n)}),),
    )


def _latent_ranges(preset: Preset) -> dict[str, tuple[int, int, int]]:
    """Latent grid ranges the video decoder must take: the clip, portrait, and every SR output."""
    g = preset.geometry
    grids = [g.video_grid, *([g.portrait_grid] if g.portrait_grid else []),
             *(sr.high_res_grid for sr in preset.superres)]
    return {
        "latent_frames": (1, g.video_grid[0], g.video_grid[0]),
        "latent_height": (min(x[1] for x in grids), g.video_grid[1], max(x[1] for x in grids)),
        "latent_width": (min(x[2] for x in grids), g.video_grid[2], max(x[2] for x in grids)),
    }


def video_contracts(preset: Preset) -> tuple[Contract, ...]:
    f, s = preset.video_tokenizer.temporal_factor, preset.video_tokenizer.spatial_factor
    lat = _latent_ranges(preset)
    pixel = {"frames": tuple(1 + f * (t - 1) for t in lat["latent_frames"]),
             "height": tuple(s * h for h in lat["latent_height"]),
             "width": tuple(s * w for w in lat["latent_width"])}
    batch = {"batch": (1, 1, 2)}
    video = T("video", "float", ("batch", 3, "frames", "height", "width"), "RGB in [-1, 1]; frames = 1 + 4k")
    codes = T("codes", "int64", ("batch", "latent_frames", "latent_height", "latent_width"),
              f"LFQ codes in [0, 2^{preset.video_tokenizer.codebook_bits})")
    encoder = Contract(component="video_encoder", doc="Causal 3D CNN encoder + LFQ: video -> codes.",
                       inputs=(video,), outputs=(codes,), profiles=(Profile("main", {**batch, **pixel, **lat}),))
    decoder = Contract(component="video_decoder", doc="Codes -> video (the causal 3D CNN decoder).",
                       inputs=(codes,), outputs=(video,), profiles=(Profile("main", {**batch, **pixel, **lat}),))
    return encoder, decoder, *decoder_step_contracts(preset, lat, pixel)


def decoder_step_contracts(preset: Preset, lat: dict, pixel: dict) -> tuple[Contract, Contract]:
    """The video decoder one latent frame per call, carrying each convolution's state
    (vp.models.video_decoder_step): what streaming runs. The first latent frame has a graph of
    its own (no state in, one frame out), every later one the step graph."""
    config = preset.video_tokenizer
    layout = state_layout(config)

    def grid(scale: int) -> tuple[str, str]:
        return (("latent_height", "latent_width") if scale == 1 else
                (f"latent_height_x{scale}", f"latent_width_x{scale}"))

    scaled = {grid(s)[axis]: tuple(s * v for v in lat[name])
              for s in {s for _, s in layout} if s > 1 for axis, name in enumerate(("latent_height", "latent_width"))}
    states = [(c, 2, *grid(s)) for c, s in layout]
    codes = T("codes", "int64", ("batch", 1, "latent_height", "latent_width"), "LFQ codes of one latent frame")
    next_state = tuple(T(f"next_state_{i}", "float", ("batch", *shape), f"state_{i} of the next latent frame's call")
                       for i, shape in enumerate(states))
    grids = {"batch": (1, 1, 2), "latent_height": lat["latent_height"], "latent_width": lat["latent_width"],
             "height": pixel["height"], "width": pixel["width"], **scaled}
    first = Contract(
        component="video_decoder_first",
        doc="Codes of a clip's first latent frame -> its one frame + the decoder's causal state after it.",
        inputs=(codes,),
        outputs=(T("video", "float", ("batch", 3, 1, "height", "width"), "the first latent frame's frame in [-1, 1]"),
                 *next_state),
        profiles=(Profile("main", grids),),
    )
    step = Contract(
        component="video_decoder_step",
        doc="Codes of a later latent frame + the decoder's causal state -> its frames + the next state.",
        inputs=(codes, *(T(f"state_{i}", "float", ("batch", *shape), f"convolution {i}'s last two input frames")
                         for i, shape in enumerate(states))),
        outputs=(T("video", "float", ("batch", 3, config.temporal_factor, "height", "width"),
                   "the latent frame's frames in [-1, 1]"), *next_state),
        profiles=(Profile("main", grids),),
    )
    return first, step


def audio_contracts(preset: Preset) -> tuple[Contract, Contract]:
    a = preset.audio_tokenizer
    frames = preset.geometry.audio_frames
    dims = {"batch": (1, 1, 2), "audio_frames": (1, frames, frames),
            "samples": (a.hop, frames * a.hop, frames * a.hop)}
    wave = T("wave", "float", ("batch", "samples"), f"mono at {a.sample_rate} Hz in [-1, 1]; samples = frames * hop")
    codes = T("audio_codes", "int64", ("batch", "audio_frames", a.levels), f"RVQ codes in [0, {a.codebook_size})")
    encoder = Contract(component="audio_encoder", doc="SoundStream encoder + residual VQ: wave -> codes.",
                       inputs=(wave,), outputs=(codes,), profiles=(Profile("main", dims),))
    decoder = Contract(component="audio_decoder", doc="Codes -> wave.",
                       inputs=(codes,), outputs=(wave,), profiles=(Profile("main", dims),))
    return encoder, decoder


def superres_contract(preset: Preset, stage: int) -> Contract:
    sr = preset.superres[stage]
    n_hi, n_lo = math.prod(sr.high_res_grid), math.prod(sr.low_res_grid)
    classes = 2 ** (sr.codebook_bits // sr.factors)
    return Contract(
        component=f"superres_{stage}",
        doc=f"Super-resolution stage {stage + 1}: {sr.low_res_grid} -> {sr.high_res_grid} latent tokens, "
            "one masked-decoding step per call; CFG branches batched.",
        inputs=(
            T("tokens", "int64", ("batch", n_hi), f"high-res codes, {2 ** sr.codebook_bits} = masked"),
            T("low_res", "int64", ("batch", n_lo), f"low-res codes, {2 ** sr.codebook_bits} = dropped (CFG)"),
            T("text", "float", ("batch", "text_tokens", sr.text_width), "projected text embeddings"),
            T("text_mask", "bool", ("batch", "text_tokens"), "True at real tokens; all False = no text (CFG)"),
        ),
        outputs=(T("sr_logits", "float32", ("batch", n_hi, sr.factors, classes), "factorized logits"),),
        profiles=(Profile("main", {"batch": (1, 3, 3), "text_tokens": (1, 16, sr.max_text)}),),
    )


def sr_fusion_contract(preset: Preset) -> Contract:
    """The clip's decode and the last SR stage's decode -> the output frames (vp.models.sr_fusion)."""
    s, c = preset.sr_fusion.scale, preset.clip
    high = (f"height_x{s}", f"width_x{s}")  # s times height and width (vp.export.graphs traces them so)
    dims = {"batch": (1, 1, 2), "frames": (1, c.frames, c.frames), "height": (c.height,) * 3, "width": (c.width,) * 3,
            high[0]: (s * c.height,) * 3, high[1]: (s * c.width,) * 3}
    return Contract(
        component="sr_fusion",
        doc=f"Super-resolution fusion: bicubic x{s} of the clip's decode, corrected from the decode of the SR tokens.",
        inputs=(T("low", "float", ("batch", 3, "frames", "height", "width"),
                  "the clip's codes decoded, RGB in [-1, 1]"),
                T("high", "float", ("batch", 3, "frames", *high),
                  f"the last SR stage's codes decoded (x{s} the size), RGB in [-1, 1]")),
        outputs=(T("video", "float", ("batch", 3, "frames", *high), "the output frames in [-1, 1]"),),
        profiles=(Profile("main", dims),),
    )


def sampler_contract(preset: Preset) -> Contract:
    v = preset.vocab.head_width
    return Contract(
        component="sampler",
        doc="The host sampler's draw where the LLM's logits are (vp.export.sampler_graph): CFG mix, the "
            "position's id range, top-k / top-p by sort-free rejection with the host's uniform numbers.",
        inputs=(
            T("logits", "float32", ("rows", v), "the LLM call's logits over one head: batch conditional rows, "
                                                  "then batch unconditional ones with CFG (rows = 2 batch)"),
            T("window", "int64", (2,), "the range [low, high) the position may emit, in the head's columns"),
            T("uniforms", "float32", ("batch", DRAWS), "each row's uniform numbers of the step, from its generator"),
            T("config", "float32", (4,), "1 / temperature (0 = greedy), top_k (0 = off), top_p, cfg_scale"),
        ),
        outputs=(T("ids", "int64", ("batch",), "the drawn ids; -1 where the host must draw the row"),),
        profiles=(Profile("main", {"rows": (1, 2, MAX_BATCH), "batch": (1, 1, MAX_BATCH)}),),
    )


def contracts(preset: Preset) -> dict[str, Contract]:
    """Every component graph of `preset`, by component name."""
    out = [llm_contract(preset), text_encoder_contract(preset), *video_contracts(preset), *audio_contracts(preset),
           *(superres_contract(preset, i) for i in range(len(preset.superres))),
           *([sr_fusion_contract(preset)] if preset.sr_fusion else []), sampler_contract(preset)]
    return {c.component: c for c in out}

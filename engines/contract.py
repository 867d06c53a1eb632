"""Declared inputs and outputs of every component graph (the engine contract).

Declared once here; vp.export exports graphs with these names and dynamic
axes, the engine builder makes optimization profiles from the ranges, the
manifest stores them, and the runtime checks its buffers against them.
Plain dataclasses and JSON: nothing here needs torch, onnx or TensorRT.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# The paged LLM's tensors and profiles that the runtime and the engine builder address by role;
# its other inputs are the fields of vp.runtime.backends.base.LLMBatch, by the same names, and the
# KV pool's planes (kv_planes).
LOGITS, NEW_KV = "logits", "new_kv"
# The LLM's input that selects the output head (vp.export.logit_heads).
HEAD = "head"
# The sampler graph's input that a GPU backend binds to the LLM's logits where they are.
SAMPLER_LOGITS = "logits"
PREFILL, DECODE = "prefill", "decode"


def kv_planes(layers: int) -> tuple[str, ...]:
    """The LLM's KV pool inputs in the pool's order (vp.runtime.kv_pool): each layer's K, then its V
    (k_pool.0, v_pool.0, k_pool.1, ...), each [kv_heads, num_blocks, block_size, head_dim]."""
    return tuple(f"{kv}_pool.{layer}" for layer in range(layers) for kv in "kv")


def is_kv_plane(name: str) -> bool:
    return name.startswith(("k_pool.", "v_pool."))


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output.

    shape: ints are fixed sizes; strings name a dynamic axis whose range the
    profiles give. dtype: "float" follows the component's precision (float32
    or float16); other dtypes ("float32", "int64", "bool") are fixed.
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    doc: str

    def concrete_dtype(self, precision: str) -> str:
        return ("float16" if precision == "fp16" else "float32") if self.dtype == "float" else self.dtype


@dataclass(frozen=True)
class Profile:
    """One optimization profile: dynamic axis -> (min, opt, max)."""

    name: str
    dims: dict[str, tuple[int, int, int]]

    def shape(self, spec: TensorSpec, which: int) -> tuple[int, ...]:
        """The min (0), opt (1) or max (2) shape of `spec` under this profile."""
        return tuple(d if isinstance(d, int) else self.dims[d][which] for d in spec.shape)


@dataclass(frozen=True)
class Contract:
    component: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    profiles: tuple[Profile, ...]
    doc: str = ""
    notes: tuple[str, ...] = field(default=())

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise ValueError(f"the {self.component} contract has no input {name!r} "
                         f"(inputs: {', '.join(s.name for s in self.inputs)})")

    def profile_index(self, name: str) -> int:
        """The index of profile `name`: engines hold their optimization profiles in the contract's order."""
        for index, profile in enumerate(self.profiles):
            if profile.name == name:
                return index
        raise ValueError(f"the {self.component} contract has no profile {name!r} "
                         f"(profiles: {', '.join(p.name for p in self.profiles)})")

    def profile(self, name: str) -> Profile:
        return self.profiles[self.profile_index(name)]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """name -> {axis: dim name}, for torch.onnx.export."""
        return {
            spec.name: {axis: d for axis, d in enumerate(spec.shape) if isinstance(d, str)}
            for spec in (*self.inputs, *self.outputs)
            if any(isinstance(d, str) for d in spec.shape)
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Contract:
        return cls(
            component=d["component"],
            inputs=tuple(TensorSpec(s["name"], s["dtype"], tuple(s["shape"]), s["doc"]) for s in d["inputs"]),
            outputs=tuple(TensorSpec(s["name"], s["dtype"], tuple(s["shape"]), s["doc"]) for s in d["outputs"]),
            profiles=tuple(Profile(p["name"], {k: tuple(v) for k, v in p["dims"].items()}) for p in d["profiles"]),
            doc=d.get("doc", ""),
            notes=tuple(d.get("notes", ())),
        )

"""ONNX -> TensorRT engine, through `tensorrt` or `tensorrt_rtx` (same API).

`EngineFromOnnx(onnx_path, contract, flavour=..., ...).build(engine_path)`
parses the graph, makes one optimization profile per contract profile, reuses
and updates a timing cache, and writes the serialized engine. Both flavours
are strongly typed: precision lives in the ONNX (fp32/fp16 tensors, INT8 Q/DQ);
there are no precision flags to set. The network is created with the
STRONGLY_TYPED flag: full TensorRT's default network is weakly typed, and its
builder may then pick another precision than the graph's for any layer.

tensorrt_rtx builds ahead of time without a GPU for the compute capabilities
it is given; full TensorRT builds for the GPU it runs on, and the record keeps
that GPU's compute capability (its engines run on no other).
"""

from __future__ import annotations

import hashlib
import importlib
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from vp.engines.contract import Contract
from vp.runtime.process_memory import peak_rss_mb

FLAVOURS = {"trt": "tensorrt", "rtx": "tensorrt_rtx"}
INSTALL = {"trt": "pip install 'vp[trt]' (needs NVIDIA's package index)", "rtx": "pip install 'vp[rtx]'"}
# Default TensorRT-RTX targets: Ampere (SM86) and Ada (SM89) RTX GPUs. The others it knows
# (rtx_targets: SM75, SM80, SM120 and SM121 in TensorRT-RTX 1.7) can be asked for with --sm;
# Hopper (SM90: H100, H200) is not a TensorRT-RTX target, full TensorRT builds for it.
DEFAULT_RTX_SM = (86, 89)


class EngineBuildError(ValueError):
    """A graph TensorRT cannot parse or build; the message names node and op."""


# Ahead-of-time RTX builds on a machine without a (recent enough) CUDA driver log
# these as errors although the build succeeds; they are expected there.
_NO_GPU_MESSAGES = ("cudaError 35", "CUDA driver version is insufficient", "no CUDA-capable device")


def _build_log(trt):
    """A TensorRT logger that keeps errors for the exception message instead of printing them."""

    class BuildLog(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity <= trt.ILogger.Severity.ERROR and not any(m in msg for m in _NO_GPU_MESSAGES):
                self.errors.append(msg)

    return BuildLog()


def import_tensorrt(flavour: str):
    """The `tensorrt` or `tensorrt_rtx` module; ValueError naming the extra to install."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown TensorRT flavour {flavour!r}; expected one of {', '.join(FLAVOURS)}")
    try:
        return importlib.import_module(FLAVOURS[flavour])
    except ImportError as error:
        raise ValueError(f"{FLAVOURS[flavour]} is not installed ({error}); {INSTALL[flavour]}") from None


def usable_flavour() -> tuple[str | None, str]:
    """(flavour, why) for `--engines auto`: full TensorRT when it can start a builder
    (it needs a GPU), else TensorRT-RTX (ahead of time, no GPU needed), else None."""
    reasons = []
    for flavour in ("trt", "rtx"):
        try:
            trt = import_tensorrt(flavour)
            if trt.Builder(_build_log(trt)) is not None:
                return flavour, f"{FLAVOURS[flavour]} {trt.__version__} can build"
        except Exception as error:  # a builder that cannot start for any reason is simply not usable
            reasons.append(f"{FLAVOURS[flavour]}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
    return None, "; ".join(reasons)


@dataclass(frozen=True)
class EngineRecord:
    """What the manifest keeps of one built engine."""

    path: str
    flavour: str
    version: str
    compute_capabilities: tuple[int, ...]
    profiles: tuple[str, ...]
    sha256: str
    bytes: int
    build_seconds: float
    peak_rss_mb: float

    def to_dict(self) -> dict:
        return asdict(self)


@contextmanager
def _interruptible(trt, config):
    """Ctrl-C (SIGINT) during a build cancels it at the builder's next progress step (the build call
    itself blocks in C and would otherwise run to its end); the caller raises KeyboardInterrupt."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.cancelled = False

        def phase_start(self, phase_name, parent_phase, num_steps):
            pass

        def step_complete(self, phase_name, step):
            return not self.cancelled

        def phase_finish(self, phase_name):
            pass

    monitor = Monitor()
    config.progress_monitor = monitor
    previous = None
    if threading.current_thread() is threading.main_thread():
        def cancel(signum, frame):
            monitor.cancelled = True

        previous = signal.signal(signal.SIGINT, cancel)
    try:
        yield monitor
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def rtx_targets(trt) -> tuple[int, ...]:
    """The compute capabilities the installed TensorRT-RTX builds for (its ComputeCapability SMnn)."""
    return tuple(sorted(int(name[2:]) for name in dir(trt.ComputeCapability)
                        if name.startswith("SM") and name[2:].isdigit()))


def strongly_typed_network(trt, builder):
    """An empty network whose tensor types are the ONNX graph's (the builder chooses no precision)."""
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))


def _build_gpu() -> tuple[int, ...]:
    """(compute capability,) of the GPU a full TensorRT build runs on; () without one."""
    from vp.runtime.backends.cuda import gpu_compute_capability

    sm = gpu_compute_capability()
    return () if sm is None else (sm,)


class EngineFromOnnx:
    """Builds one engine from one ONNX file and its contract.

    compute_capabilities: RTX targets like (86, 89); ignored by full TensorRT,
    which builds for the GPU it runs on (recorded instead). timing_cache: a file read before and
    written after the build (shared by all engines of a bundle); full TensorRT
    only, since TensorRT-RTX builds without timing kernels.
    """

    def __init__(self, onnx_path: str | Path, contract: Contract, *, flavour: str,
                 compute_capabilities: tuple[int, ...] = DEFAULT_RTX_SM, timing_cache: str | Path | None = None):
        self.onnx_path = Path(onnx_path)
        self.contract = contract
        self.flavour = flavour
        self.compute_capabilities = tuple(compute_capabilities) if flavour == "rtx" else _build_gpu()
        # TensorRT-RTX times nothing ahead of time (its timing-cache calls are no-ops)
        self.timing_cache = Path(timing_cache) if timing_cache and flavour == "trt" else None

    def build(self, engine_path: str | Path) -> EngineRecord:
        trt = import_tensorrt(self.flavour)
        engine_path = Path(engine_path)
        start = time.perf_counter()
        logger = _build_log(trt)
        builder = trt.Builder(logger)
        network = strongly_typed_network(trt, builder)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(self.onnx_path)):
            raise EngineBuildError(self._parser_errors(parser))
        config = builder.create_builder_config()
        self._set_targets(trt, config)
        for profile in self.contract.profiles:
            config.add_optimization_profile(self._profile(builder, network, profile))
        if self.timing_cache:
            cache = config.create_timing_cache(self.timing_cache.read_bytes() if self.timing_cache.is_file() else b"")
            config.set_timing_cache(cache, ignore_mismatch=True)
        with _interruptible(trt, config) as monitor:
            serialized = builder.build_serialized_network(network, config)
        if monitor.cancelled:
            raise KeyboardInterrupt(f"the {self.onnx_path.stem} engine build was interrupted")
        if serialized is None:
            errors = "\n  ".join(logger.errors[-5:]) or "no error was logged"
            raise EngineBuildError(f"{FLAVOURS[self.flavour]} could not build {self.onnx_path.name} "
                                   f"(profiles {[p.name for p in self.contract.profiles]}):\n  {errors}")
        engine_path.write_bytes(memoryview(serialized))
        if self.timing_cache:
            self.timing_cache.write_bytes(memoryview(config.get_timing_cache().serialize()))
        return EngineRecord(
            path=engine_path.name,
            flavour=self.flavour,
            version=trt.__version__,
            compute_capabilities=self.compute_capabilities,
            profiles=tuple(p.name for p in self.contract.profiles),
            sha256=sha256_of(engine_path),
            bytes=engine_path.stat().st_size,
            build_seconds=round(time.perf_counter() - start, 3),
            peak_rss_mb=round(peak_rss_mb() or 0.0, 1),
        )

    def _set_targets(self, trt, config) -> None:
        if self.flavour != "rtx":
            return
        config.num_compute_capabilities = len(self.compute_capabilities)
        for i, sm in enumerate(self.compute_capabilities):
            if sm not in rtx_targets(trt):
                raise ValueError(f"TensorRT-RTX cannot target SM{sm}; it knows SM "
                                 f"{', '.join(map(str, rtx_targets(trt)))} (for another GPU: --engines trt)")
            config.set_compute_capability(getattr(trt.ComputeCapability, f"SM{sm}"), i)

    def _profile(self, builder, network, profile):
        opt = builder.create_optimization_profile()
        specs = {s.name: s for s in self.contract.inputs}
        for i in range(network.num_inputs):
            name = network.get_input(i).name
            if name not in specs:
                raise EngineBuildError(f"{self.onnx_path.name}: input {name!r} is not in the {self.contract.component} contract")
            opt.set_shape(name, *(profile.shape(specs[name], k) for k in range(3)))
        return opt

    def _parser_errors(self, parser) -> str:
        lines = [f"TensorRT ({self.flavour}) cannot parse {self.onnx_path.name}:"]
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            lines.append(f"  node {e.node()} {e.node_name()!r} (op {e.node_operator()}): {e.desc()}")
        return "\n".join(lines)

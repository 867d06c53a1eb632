"""ONNX Runtime backend: the bundle's ONNX graphs, CPU by default, CUDA with onnxruntime-gpu.

A quantized bundle's cpu_onnx graphs (vp.engines.precision) are what the CPU
provider loads; every session asks for integer compute in the MatMulNBits that
ONNX Runtime fuses from an int8 weight's DequantizeLinear + MatMul
(MATMULNBITS_OPTIONS: accuracy level 4, activations quantized per block of K
on the fly, in the block the bundle names; level 0 computes in fp32 and took
74 ms where level 4 took 0.8 ms for a 4096 x 4096 weight, 2 threads).

On the CPU the KV pool is a numpy array whose planes ONNX Runtime reads in
place in a decode step (session inputs wrap numpy memory without a copy); a
prefill call gets its own past blocks copied out, or one empty block
(vp.runtime.kv_pool). A decode step reads every slot of every plane, so the
array holds only the blocks up to the highest one a call has named: it grows
in place (by at least a quarter) when a call names a higher one and shrinks
between runs to the blocks still in use (`fit`), and the block allocator hands
out the lowest free ids (vp.runtime.kv_cache), so a step reads about the blocks
in use rather than the whole reservation of its run. New K/V are committed with one
fancy-indexed assignment per call (vp.runtime.kv_pool). With the CUDA provider the pool lives on
the GPU behind IO binding (OrtCudaPagedLLM).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from vp.engines.contract import LOGITS, NEW_KV
from vp.engines.manifest import Manifest
from vp.engines.precision import graph_float
from vp.runtime.backends.base import Backend, LLMBatch, PagedLLM, Session


# The MatMulNBits that ONNX Runtime fuses from an int8 weight's DequantizeLinear + MatMul computes
# in integers (accuracy level 4) over blocks along K. vp's weights have one scale per output
# channel, so the block sets only how finely the kernel quantizes the activations (one scale per
# block) and how many block sums it adds: a bundle names the block its accuracy gate passed with
# (ComponentRecord.cpu_kernel_block; vp.calibration.llm.KERNEL_BLOCKS), None meaning ONNX
# Runtime's default of 32.
MATMULNBITS_OPTIONS = {"session.qdq_matmulnbits_accuracy_level": "4"}
KERNEL_BLOCK_OPTION = "session.qdq_matmulnbits_block_size"


def providers() -> list[str]:
    """CUDA first when onnxruntime-gpu can use it, then the CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _inference_session(path: Path, contract, precision: str, threads: int | None, cuda_stream: int | None = None,
                       arena: bool = True, kernel_block: int | None = None):
    """An InferenceSession of the graph at `path`, checked against its contract in the manifest.
    cuda_stream: the CUDA stream the CUDA provider computes on (ours, so that our copies are ordered
    with its kernels). arena: whether host memory for intermediate tensors comes from ONNX Runtime's
    arena, which keeps the largest it has needed. kernel_block: the K block of the int8 MatMulNBits
    kernels (the manifest's cpu_kernel_block; None: ONNX Runtime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    for key, value in MATMULNBITS_OPTIONS.items():
        options.add_session_config_entry(key, value)
    if kernel_block is not None:
        options.add_session_config_entry(KERNEL_BLOCK_OPTION, str(kernel_block))
    # Each session owns its intra-op threads, which spin for work after Run() returns: the next
    # session's run (the decoder after LLM steps, in a stream) then shares the cores with them. A
    # video decoder step took 85 ms right after LLM steps and 44 ms alone, 2 cores; with the
    # spinning stopped at the end of each Run(), 43 ms, and the LLM step lost nothing
    # (docs/benchmarks.md, streaming). Spinning between the ops of one run is kept.
    options.add_session_config_entry("session.force_spinning_stop", "1")
    if threads:
        options.intra_op_num_threads = threads
    options.enable_cpu_mem_arena = arena
    chosen = providers()
    on_gpu = chosen[0] == "CUDAExecutionProvider"
    if cuda_stream is not None and on_gpu:
        chosen[0] = ("CUDAExecutionProvider", {"user_compute_stream": str(cuda_stream), "has_user_compute_stream": "1"})
    try:
        # no fallback: onnxruntime would retry on the CPU without our stream, and the caller would bind
        # device memory to a CPU session or copy on a stream its kernels are not ordered with
        session = ort.InferenceSession(str(path), options, providers=chosen, enable_fallback=0)
    except Exception as error:  # onnxruntime raises its own exception types
        raise ValueError(f"ONNX Runtime cannot load {path}: {str(error).splitlines()[0]}") from None
    if on_gpu:
        _check_cuda_session(path, session, cuda_stream)
    _check_graph(path, session, contract, precision)
    return session


def _check_cuda_session(path: Path, session, cuda_stream: int | None) -> None:
    """ValueError unless the session computes on the CUDA provider (onnxruntime-gpu lists it as
    available even where it cannot start, e.g. without cuBLAS or cuDNN, and then runs on the CPU)
    and, when one was given, on our stream."""
    if session.get_providers()[0] != "CUDAExecutionProvider":
        raise ValueError(f"ONNX Runtime did not start its CUDA provider for {path.name} (it would run on "
                         f"{', '.join(session.get_providers())}): install the CUDA and cuDNN libraries of this "
                         "onnxruntime-gpu, or onnxruntime (CPU) in its place")
    if cuda_stream is not None:
        options = session.get_provider_options().get("CUDAExecutionProvider", {})
        if options.get("has_user_compute_stream", "1") != "1":
            raise ValueError(f"ONNX Runtime's CUDA provider for {path.name} did not take vp's compute stream "
                             f"(provider options {options}); the KV commits would not be ordered with its kernels")


ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "int64": "tensor(int64)",
             "int32": "tensor(int32)", "bool": "tensor(bool)"}


def _check_graph(path: Path, session, contract, precision: str) -> None:
    """ValueError when the graph's inputs/outputs (names, dtypes, fixed sizes) are not its contract's."""
    for kind, specs, args in (("input", contract.inputs, session.get_inputs()),
                              ("output", contract.outputs, session.get_outputs())):
        graph = {a.name: a for a in args}
        for spec in specs:
            arg = graph.get(spec.name)
            want = [d if isinstance(d, int) else "?" for d in spec.shape]
            got = [d if isinstance(d, int) else "?" for d in arg.shape] if arg is not None else None
            mismatch = (arg is None or arg.type != ORT_TYPES.get(spec.concrete_dtype(precision)) or len(got) != len(want)
                        or any(isinstance(w, int) and isinstance(g, int) and w != g for w, g in zip(want, got)))
            if mismatch:
                found = "missing" if arg is None else f"{arg.type} {got}"
                raise ValueError(f"{path.name} does not match its contract in manifest.json: {kind} {spec.name!r} "
                                 f"is {found} in the graph, the manifest says "
                                 f"{ORT_TYPES.get(spec.concrete_dtype(precision))} {want}; re-export the bundle")


class OrtSession(Session):
    def __init__(self, path: Path, contract, precision: str, threads: int | None, kernel_block: int | None = None):
        super().__init__(contract, precision)
        self._session = _inference_session(path, contract, precision, threads, kernel_block=kernel_block)
        self._outputs = [s.name for s in contract.outputs]

    def _run(self, feeds):
        return self._session.run(self._outputs, feeds)


class OrtPagedLLM(PagedLLM):
    """pool: [layers, 2, kv_heads, held, block_size, head_dim], held <= num_blocks: the blocks up to the
    highest one named so far (zeros where never written: the graph reads every slot). It is a view of
    one buffer that grows in place (a realloc, then each plane moved up), so a growth never holds two
    pools at once."""

    GROWTH = 1.25  # at least this factor per growth: a run of n blocks moves its pool O(log n) times

    def __init__(self, path: Path, contract, precision: str, num_blocks: int, threads: int | None,
                 kernel_block: int | None = None):
        super().__init__(contract, precision, num_blocks)
        # No arena: the attention's intermediates scale with the pool and a prefill's past, so their
        # sizes change from call to call, and the arena kept the largest (in `vp soak`, resident memory
        # grew by 11% after the warm-up); decode steps took the same time without it.
        self._session = _inference_session(path, contract, precision, threads, arena=False,
                                           kernel_block=kernel_block)
        self._buffer = np.zeros(0, self.dtype)
        self._resize(0)
        self._empty = self.layout.empty_planes(self.dtype)

    @property
    def pool_bytes(self) -> int:
        return self.pool.nbytes

    def _hold(self, blocks: int) -> None:
        """Grow the pool to hold block ids < blocks (at most num_blocks)."""
        held = self.pool.shape[3]
        if blocks > held:
            self._resize(min(self.num_blocks, max(blocks, math.ceil(held * self.GROWTH))))

    def fit(self, blocks: int) -> None:
        if blocks < self.pool.shape[3]:
            self._resize(max(blocks, 0))

    def _resize(self, held: int) -> None:
        """The pool with `held` blocks: blocks below both sizes kept, new ones zero."""
        planes, slab = self.layout.planes, self.layout.block_size * self.layout.head_dim
        old, new = (0 if self._buffer.size == 0 else self.pool.shape[3]) * slab, held * slab
        self.pool = self._planes = None  # no view of the buffer while it is reallocated
        buffer = self._buffer
        if new > old:
            buffer.resize(planes * new, refcheck=False)
            for p in reversed(range(planes)):  # from the last: a plane moves up over planes already moved
                buffer[p * new:p * new + old] = buffer[p * old:(p + 1) * old]
                buffer[p * new + old:(p + 1) * new] = 0
        else:
            for p in range(planes):  # from the first: a plane moves down over planes already moved
                buffer[p * new:(p + 1) * new] = buffer[p * old:p * old + new]
            buffer.resize(planes * new, refcheck=False)
        self.pool = buffer.reshape(self.layout.shape(held))
        self._planes = self.layout.plane_views(self.pool)

    def forward(self, batch: LLMBatch) -> np.ndarray:
        self._hold(max(int(batch.block_table.max()), int(batch.slots.max()) // self.layout.block_size) + 1)
        feeds = batch.feeds()
        feeds["input_embeds"] = feeds["input_embeds"].astype(self.dtype, copy=False)
        if self.in_place(batch):
            feeds.update(self._planes)
        elif batch.context_lens.any():  # a prefill with a past: its own blocks
            blocks, feeds["block_table"] = self.past_blocks(batch)
            feeds.update(self.layout.plane_views(self.pool[:, :, :, blocks]))
        else:
            feeds.update(self._empty)
        logits, new_kv = self._session.run([LOGITS, NEW_KV], feeds)
        self.layout.commit(self.pool, new_kv, batch.slots)
        return logits

    def copy_block(self, src: int, dst: int) -> None:
        self._hold(max(src, dst) + 1)
        self.layout.copy_block(self.pool, src, dst)


class OrtCudaPagedLLM(PagedLLM):
    """onnxruntime-gpu: the pool is one device allocation bound by IO binding; new_kv stays on
    the device and is committed by device-to-device copies, as in the TensorRT backend.

    The session computes on a stream of ours (the CUDA provider's user_compute_stream), and the
    commit and copy-on-write copies go on that stream: they are ordered with its kernels without
    a device-wide synchronization (a copy on the legacy default stream is not ordered with the
    provider's own stream)."""

    def __init__(self, path: Path, contract, precision: str, num_blocks: int, threads: int | None,
                 kernel_block: int | None = None):
        import onnxruntime as ort

        from vp.runtime.backends.cuda import check, load_cudart

        super().__init__(contract, precision, num_blocks)
        self._cudart = load_cudart()
        self._stream = check(self._cudart.cudaStreamCreate())
        self._session = _inference_session(path, contract, precision, threads, cuda_stream=int(self._stream),
                                           kernel_block=kernel_block)
        self.pool = ort.OrtValue.ortvalue_from_shape_and_type(self.layout.shape(num_blocks), self.dtype, "cuda", 0)
        check(self._cudart.cudaMemset(self.pool.data_ptr(), 0, self.pool_bytes))  # the graph reads every slot
        self._itemsize = np.dtype(self.dtype).itemsize
        self._empty = ort.OrtValue.ortvalue_from_numpy(np.zeros(self.layout.plane_shape(1), self.dtype), "cuda", 0)

    def forward(self, batch: LLMBatch) -> np.ndarray:
        from vp.runtime.backends.cuda import check, copy_2d

        import onnxruntime as ort

        binding = self._session.io_binding()
        scratch = []  # a prefill's gathered past, alive until the run is done

        def allocate(nbytes: int) -> int:
            scratch.append(ort.OrtValue.ortvalue_from_shape_and_type((nbytes,), np.uint8, "cuda", 0))
            return scratch[-1].data_ptr()

        planes, table = self.device_planes(
            batch, self.pool.data_ptr(), self._empty.data_ptr(), allocate,
            lambda dst, src, copies: copy_2d(self._cudart, dst, src, copies, self._stream))
        feeds = batch.feeds() | {"block_table": table}
        feeds["input_embeds"] = feeds["input_embeds"].astype(self.dtype)
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for name, (address, shape) in planes.items():
            binding.bind_input(name, "cuda", 0, self.dtype, shape, address)
        binding.bind_output(LOGITS, "cpu")
        binding.bind_output(NEW_KV, "cuda")
        self._session.run_with_iobinding(binding)
        logits, new_kv = binding.get_outputs()
        copy_2d(self._cudart, self.pool.data_ptr(), new_kv.data_ptr(),
                self.layout.slot_copies(batch.slots, self.num_blocks, self._itemsize), self._stream)
        check(self._cudart.cudaStreamSynchronize(self._stream))  # new_kv's memory returns to ORT after this
        return logits.numpy()

    def copy_block(self, src: int, dst: int) -> None:
        from vp.runtime.backends.cuda import copy_2d

        base = self.pool.data_ptr()
        copy_2d(self._cudart, base, base, [self.layout.block_copy(src, dst, self.num_blocks, self._itemsize)],
                self._stream)  # ordered before the next run on the same stream

    def close(self) -> None:
        if self._stream is not None:  # copy_block's copies into the pool are done before it is freed
            self._cudart.cudaStreamSynchronize(self._stream)
        self._session = self.pool = self._empty = None
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None


class OrtBackend(Backend):
    name = "ort"

    def __init__(self, bundle: Path, manifest: Manifest, threads: int | None = None):
        self.bundle = bundle
        self.manifest = manifest
        self.threads = threads or int(os.environ.get("VP_THREADS", 0)) or None
        self.on_gpu = providers()[0] == "CUDAExecutionProvider"

    def _path(self, component: str) -> tuple[Path, object, str]:
        record = self.manifest.components.get(component)
        if record is None:
            raise ValueError(f"bundle {self.bundle} has no {component} graph (exported components: "
                             f"{', '.join(self.manifest.components)})")
        return (self.manifest.onnx_path(self.bundle, component, cpu=not self.on_gpu), record.contract,
                self.float_type(component))

    def float_type(self, component: str) -> str:
        record = self.manifest.components[component]
        return graph_float(record.precision, cpu=not self.on_gpu and record.cpu_onnx is not None)

    def session(self, component: str) -> Session:
        return OrtSession(*self._path(component), self.threads,
                          kernel_block=self.manifest.components[component].cpu_kernel_block)

    def paged_llm(self, num_blocks: int) -> PagedLLM:
        return (OrtCudaPagedLLM if self.on_gpu else OrtPagedLLM)(
            *self._path("llm"), num_blocks, self.threads, kernel_block=self.manifest.components["llm"].cpu_kernel_block)

"""TensorRT backend: the bundle's engines through `tensorrt` or `tensorrt_rtx`, memory through cuda-python.

Each session owns its execution contexts, CUDA stream and device buffers (freed
by close()). Shapes are checked against the engine's optimization profile
before enqueue, with an error naming the tensor, its shape and the profile's
range. The LLM has one execution context per profile (prefill, decode), and its
KV pool is one device allocation, bound plane by plane (each layer's K and V at
its offset); new K/V are committed with one strided device-to-device copy per
run of consecutive slots (vp.runtime.kv_pool).

Per engine:
- the contexts of its profiles share one activation memory (they never run at
  once: one stream), where each would otherwise hold its own;
- a call's host inputs travel in one copy: they are packed into one pinned
  (page-locked) staging buffer and copied to one device buffer, each tensor
  bound at its offset (a decode step had seven pageable copies); outputs come
  back through pinned memory too;
- TensorRT-RTX only: kernels it compiles at run time are kept in a runtime
  cache beside the engine (`<engine>.rtcache`, read at load, written at
  close(), skipped where the bundle is read-only), and the LLM's decode
  context and every single-profile session replay their launches as CUDA
  graphs (the RTX runtime's whole-graph capture), over device buffers
  allocated once at the profile's largest shapes so that no captured
  address changes. Prefill, whose shapes change from call to call, runs
  without graphs. Full TensorRT runs without graphs (no capture here).

This module needs an NVIDIA GPU; tests that use it are marked `gpu`.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

import numpy as np

from vp.engines.builder import import_tensorrt, rtx_targets
from vp.engines.contract import LOGITS, NEW_KV, SAMPLER_LOGITS
from vp.engines.manifest import Manifest
from vp.engines.precision import graph_float
from vp.runtime.backends.base import Backend, LLMBatch, PagedLLM, Session, numpy_dtype
from vp.runtime.backends.cuda import check, copy_2d, load_cudart, probe_gpu

log = logging.getLogger(__name__)
ALIGN = 256  # bytes: TensorRT's alignment for tensor addresses and user-managed memory


def trt_unavailable(manifest: Manifest) -> str | None:
    """Why the TensorRT backend cannot run this bundle here, or None when it can."""
    if not manifest.engines:
        return "the bundle has no engines (exported with --engines none or without a TensorRT builder)"
    if set(manifest.engines) != set(manifest.components):
        return f"engines are missing for {', '.join(sorted(set(manifest.components) - set(manifest.engines)))}"
    first = next(iter(manifest.engines.values()))
    flavour = first.flavour
    try:
        trt = import_tensorrt(flavour)
    except ValueError as error:
        return str(error)
    if trt.__version__ != first.version:
        return (f"the engines were built with {trt.__name__} {first.version}, this machine has {trt.__version__} "
                "(re-export the bundle, or install that version)")
    sm, why = probe_gpu()
    if sm is None:
        return why
    targets = first.compute_capabilities
    if flavour == "rtx" and sm not in rtx_targets(trt):
        return (f"TensorRT-RTX does not run on this GPU (SM{sm}; it runs on SM "
                f"{', '.join(map(str, rtx_targets(trt)))}): re-export with full TensorRT (--engines trt, "
                "vp[trt]) on this machine, or use --backend ort with onnxruntime-gpu")
    if flavour == "rtx" and sm not in targets:
        return f"the engines target SM {targets}, this GPU is SM{sm} (re-export with --sm {sm})"
    if flavour == "trt" and targets and sm not in targets:
        return (f"the engines were built on an SM{targets[0]} GPU and full TensorRT engines run only on the GPU "
                f"they were built for; this GPU is SM{sm} (re-export the bundle on this machine)")
    return None


def _set_address(context, name: str, pointer: int) -> None:
    if not context.set_tensor_address(name, pointer):
        raise RuntimeError(f"TensorRT refused the address of {name!r} (not an I/O tensor of the engine, or "
                           "misaligned)")


class _Engine:
    """A deserialized engine with one execution context per optimization profile (sharing one
    activation memory), a stream, and pinned staging for host transfers.

    graphed: the profiles whose contexts replay CUDA graphs (TensorRT-RTX). A captured graph holds
    tensor addresses, so a graphed profile's device buffers are allocated once, at the profile's
    largest shapes (contract), with each input at a fixed offset; other profiles' buffers grow
    with the calls (the LLM's prefill: its largest new K/V would be 1.5 GB for paper-1b).
    """

    def __init__(self, path: Path, flavour: str, contract, precision: str, graphed: tuple[int, ...],
                 device_inputs: tuple[str, ...] = (), stream=None):
        trt = import_tensorrt(flavour)
        self.cudart = load_cudart()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ValueError(f"TensorRT cannot load {path} (built by another TensorRT version or for another GPU); "
                             "re-export the bundle on this machine")
        self.own_stream = stream is None  # else another engine's, whose calls this one's follow in order
        self.stream = check(self.cudart.cudaStreamCreate()) if stream is None else stream
        self.device_inputs = device_inputs  # bound to device memory the caller owns (never staged)
        self.contexts, self.configs = [], []
        self.buffers: dict[tuple[int, str], tuple[int, int]] = {}  # (profile, name) -> (pointer, bytes)
        self.pinned: dict[str, tuple[int, int]] = {}  # staging role -> (host pointer, bytes)
        self.layouts: dict[int, dict[str, int]] = {}  # graphed profile -> input name -> offset (+ "__end__")
        # (profile, device input) -> the (pointer, shape) its context holds: the LLM's 2 x layers KV
        # planes keep theirs from one decode step to the next, and are not set again
        self.bound: dict[tuple[int, str], tuple[int, tuple]] = {}
        self.scratch, self.cache, self.cache_config, self.cache_loaded = 0, None, None, False
        self.cache_path = path.with_name(path.name + ".rtcache")
        strategy = trt.ExecutionContextAllocationStrategy.USER_MANAGED
        if flavour == "rtx":
            self.cache_config = self.engine.create_runtime_config()  # kept while its cache lives
            self.cache = self.cache_config.create_runtime_cache()
            if self.cache_path.is_file():
                self.cache_loaded = self.cache.deserialize(self.cache_path.read_bytes())
                if not self.cache_loaded:
                    log.info("%s: the runtime cache was made elsewhere (another GPU, driver or TensorRT-RTX); "
                             "kernels are compiled again", self.cache_path.name)
        else:
            graphed = ()  # full TensorRT: no capture here (the RTX runtime captures by itself)
        size = max(self.engine.device_memory_size_v2, ALIGN)  # the largest profile's: enough for any of them
        try:
            self.scratch = check(self.cudart.cudaMalloc(size))
            for profile in range(self.engine.num_optimization_profiles):
                if flavour == "rtx":  # the config (kept: contexts use it) sets memory, graphs and cache
                    config = self.engine.create_runtime_config()
                    config.set_execution_context_allocation_strategy(strategy)
                    config.cuda_graph_strategy = (trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE if profile in graphed
                                                  else trt.CudaGraphStrategy.DISABLED)
                    if not config.set_runtime_cache(self.cache):
                        raise RuntimeError("TensorRT-RTX refused the runtime cache")
                    self.configs.append(config)
                    context = self.engine.create_execution_context(config)
                else:
                    context = self.engine.create_execution_context(strategy)
                if context is None:
                    raise RuntimeError("no execution context (out of GPU memory?)")
                context.set_device_memory(self.scratch, size)
                if not context.set_optimization_profile_async(profile, self.stream):
                    raise RuntimeError(f"TensorRT refused optimization profile {profile}")
                self.contexts.append(context)
            for profile in graphed:
                self._allocate_largest(profile, contract, precision)
        except RuntimeError as error:
            self.close()
            raise ValueError(f"TensorRT cannot set up {path.name}: {error}") from None

    def _allocate_largest(self, profile: int, contract, precision: str) -> None:
        """The profile's device buffers at its largest shapes, inputs packed smallest first (a call copies
        up to its last input's bytes: the gaps are the small tensors' unused room)."""
        dims = contract.profiles[profile]

        def nbytes(spec) -> int:
            return int(np.prod(dims.shape(spec, 2))) * numpy_dtype(spec.dtype, precision).itemsize

        inputs = sorted((spec for spec in contract.inputs if spec.name not in self.device_inputs), key=nbytes)
        self.layouts[profile] = _offsets({spec.name: nbytes(spec) for spec in inputs})
        self.buffer(profile, "__inputs__", self.layouts[profile]["__end__"])
        for spec in contract.outputs:
            self.buffer(profile, spec.name, nbytes(spec))

    def check_shape(self, profile: int, name: str, shape: tuple[int, ...]) -> None:
        low, _, high = self.engine.get_tensor_profile_shape(name, profile)
        if len(shape) != len(low) or any(s < lo or s > hi for s, lo, hi in zip(shape, low, high)):
            raise ValueError(f"{name} of shape {shape} is outside the engine's profile {profile} "
                             f"(min {tuple(low)}, max {tuple(high)})")

    def buffer(self, profile: int, name: str, nbytes: int) -> int:
        """A device buffer for `name` of at least nbytes, reused across calls (a graphed profile's never
        grows: it was allocated at the largest shape)."""
        pointer, size = self.buffers.get((profile, name), (0, 0))
        if size < nbytes:
            if profile in self.layouts:
                raise RuntimeError(f"{name}: {nbytes} bytes exceed the buffer of the profile's largest shape")
            if pointer:
                del self.buffers[(profile, name)]
                check(self.cudart.cudaFree(pointer))
            pointer = check(self.cudart.cudaMalloc(max(nbytes, 1)))
            self.buffers[(profile, name)] = (pointer, nbytes)
        return pointer

    def staging(self, role: str, nbytes: int) -> np.ndarray:
        """A pinned host buffer of at least nbytes (uint8, reused across calls) for `role`."""
        pointer, size = self.pinned.get(role, (0, 0))
        if size < nbytes:
            if pointer:
                del self.pinned[role]
                check(self.cudart.cudaFreeHost(pointer))
            size = max(nbytes, ALIGN)
            pointer = check(self.cudart.cudaMallocHost(size))
            self.pinned[role] = (pointer, size)
        return np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(pointer))

    def download(self, outputs: dict[str, tuple[int, tuple[int, ...], np.dtype]]) -> dict[str, np.ndarray]:
        """Copy device outputs to the host through pinned memory (one copy each), wait, return arrays."""
        sizes = {name: int(np.prod(shape)) * np.dtype(dtype).itemsize for name, (_, shape, dtype) in outputs.items()}
        offsets = _offsets(sizes)
        host = self.staging("out", offsets["__end__"])
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, (pointer, _, _) in outputs.items():
            check(self.cudart.cudaMemcpyAsync(host.ctypes.data + offsets[name], pointer, sizes[name], kind, self.stream))
        self.synchronize()
        return {name: host[offsets[name]:offsets[name] + sizes[name]].view(dtype).reshape(shape).copy()
                for name, (_, shape, dtype) in outputs.items()}

    def execute(self, profile: int, feeds: dict[str, np.ndarray], device_inputs: dict[str, tuple[int, tuple]],
                outputs: dict[str, np.dtype]) -> dict[str, tuple[int, tuple[int, ...], np.dtype]]:
        """Upload feeds (one copy: packed in pinned memory), bind device inputs, enqueue; returns output
        name -> (pointer, shape, dtype) on device. Every shape is checked before anything is queued."""
        context = self.contexts[profile]
        device_inputs = {name: bound for name, bound in device_inputs.items() if self.bound.get((profile, name)) != bound}
        for name, shape in [*((n, a.shape) for n, a in feeds.items()), *((n, s) for n, (_, s) in device_inputs.items())]:
            self.check_shape(profile, name, shape)
            if not context.set_input_shape(name, shape):
                raise RuntimeError(f"TensorRT refused the shape {tuple(shape)} of {name!r} (profile {profile})")
        offsets = self.layouts.get(profile) or _offsets({name: array.nbytes for name, array in feeds.items()})
        end = max(offsets[name] + array.nbytes for name, array in feeds.items())
        host = self.staging("in", end)
        device = self.buffer(profile, "__inputs__", offsets["__end__"])
        for name, array in feeds.items():
            host[offsets[name]:offsets[name] + array.nbytes] = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
            _set_address(context, name, device + offsets[name])
        for name, (pointer, shape) in device_inputs.items():
            _set_address(context, name, pointer)
            self.bound[(profile, name)] = (pointer, shape)
        result = {}
        for name, dtype in outputs.items():
            shape = tuple(context.get_tensor_shape(name))
            pointer = self.buffer(profile, name, int(np.prod(shape)) * np.dtype(dtype).itemsize)
            _set_address(context, name, pointer)
            result[name] = (pointer, shape, dtype)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(self.cudart.cudaMemcpyAsync(device, host.ctypes.data, end, kind, self.stream))
        if not context.execute_async_v3(self.stream):
            self.synchronize()  # the staging buffer is reused by the next call: let the copy finish
            raise RuntimeError("TensorRT enqueue failed; see the TensorRT log above")
        return result

    def synchronize(self) -> None:
        check(self.cudart.cudaStreamSynchronize(self.stream))

    def close(self) -> None:
        self._save_cache()  # while the contexts that fill it are alive
        self.contexts = []  # before the configs, the cache and the memory they use
        self.configs, self.cache, self.cache_config = [], None, None
        for pointer, _ in self.buffers.values():
            self.cudart.cudaFree(pointer)
        for pointer, _ in self.pinned.values():
            self.cudart.cudaFreeHost(pointer)
        self.buffers, self.pinned = {}, {}
        if self.scratch:
            self.cudart.cudaFree(self.scratch)
            self.scratch = 0
        if self.stream is not None and self.own_stream:
            self.cudart.cudaStreamDestroy(self.stream)
        self.stream = None

    def _save_cache(self) -> None:
        """Write the TensorRT-RTX runtime cache beside the engine (atomically) once contexts have run;
        a read-only bundle keeps none."""
        if self.cache is None or not self.contexts:
            return
        blob = self.cache.serialize()
        tmp = self.cache_path.with_name(f".{self.cache_path.name}.{os.getpid()}")
        try:
            tmp.write_bytes(memoryview(blob))
            os.replace(tmp, self.cache_path)
        except OSError as error:
            tmp.unlink(missing_ok=True)
            log.info("cannot keep the runtime cache %s (%s); kernels are compiled again at the next load",
                     self.cache_path, error)


def _offsets(sizes: dict[str, int]) -> dict[str, int]:
    """Byte offset of each tensor in one buffer, ALIGN-aligned, in order; "__end__": the buffer's size."""
    offsets, end = {}, 0
    for name, size in sizes.items():
        offsets[name] = end
        end += -(-size // ALIGN) * ALIGN
    offsets["__end__"] = end
    return offsets


class TrtSession(Session):
    def __init__(self, path: Path, contract, precision: str, flavour: str):
        super().__init__(contract, precision)
        if len(contract.profiles) != 1:
            raise ValueError(f"{contract.component}: a session runs single-profile engines, this one has "
                             f"{len(contract.profiles)} (the LLM runs as a PagedLLM)")
        self._engine = _Engine(path, flavour, contract, precision, graphed=(0,))
        self._outputs = {s.name: numpy_dtype(s.dtype, precision) for s in contract.outputs}

    def _run(self, feeds):
        host = self._engine.download(self._engine.execute(0, feeds, {}, self._outputs))  # its one profile
        return [host[s.name] for s in self.contract.outputs]

    def close(self) -> None:
        self._engine.close()


class TrtPagedLLM(PagedLLM):
    """Decode calls (one new token per sequence) run in the decode profile's context, the rest in prefill's.

    sampler: the bundle's sampler engine and contract, when it has one: a decode call may then keep
    its logits in the decode context's output buffer (forward_kept), where the sampler engine draws
    from them on the same stream (sample_kept); only the ids and the step's small inputs cross.
    """

    def __init__(self, path: Path, contract, precision: str, num_blocks: int, flavour: str,
                 sampler: tuple[Path, object] | None = None):
        super().__init__(contract, precision, num_blocks)
        # decode steps replay CUDA graphs; prefill calls change shape from one call to the next
        self._engine = _Engine(path, flavour, contract, precision, graphed=(self.decode_profile,),
                               device_inputs=self.layout.names)
        self._pool, self._empty, self._sampler, self._kept = 0, 0, None, None
        empty_bytes = int(np.prod(self.layout.plane_shape(1))) * np.dtype(self.dtype).itemsize
        try:
            self._pool = check(self._engine.cudart.cudaMalloc(self.pool_bytes))
            check(self._engine.cudart.cudaMemset(self._pool, 0, self.pool_bytes))  # the graph reads every slot
            self._empty = check(self._engine.cudart.cudaMalloc(empty_bytes))
            check(self._engine.cudart.cudaMemset(self._empty, 0, empty_bytes))
        except RuntimeError as error:
            self.close()
            raise ValueError(f"cannot allocate a KV pool of {self.pool_bytes / 1e6:.0f} MB on the GPU ({error})") from None
        if sampler is not None:
            # the logits it reads sit at one address (the decode context's, allocated once): graphed too
            try:
                self._sampler = _Engine(sampler[0], flavour, sampler[1], "fp32", graphed=(0,),
                                        device_inputs=(SAMPLER_LOGITS,), stream=self._engine.stream)
            except ValueError:
                self.close()  # the pool and the LLM's engine, which nothing else would free
                raise
        self._itemsize = np.dtype(self.dtype).itemsize
        self._outputs = {s.name: numpy_dtype(s.dtype, precision) for s in contract.outputs}

    @property
    def device_sampler(self) -> bool:
        return self._sampler is not None

    def _run(self, batch: LLMBatch) -> tuple[int, tuple[int, ...], np.dtype]:
        """Enqueue one call and the commit of its new K/V; the logits on the device."""
        profile = self.decode_profile if self.in_place(batch) else self.prefill_profile
        feeds = batch.feeds()
        feeds["input_embeds"] = feeds["input_embeds"].astype(self.dtype)
        # the decode profile's graphs always see the pool's addresses; a prefill's past is gathered
        planes, feeds["block_table"] = self.device_planes(
            batch, self._pool, self._empty, lambda nbytes: self._engine.buffer(self.prefill_profile, "__past__", nbytes),
            lambda dst, src, copies: copy_2d(self._engine.cudart, dst, src, copies, self._engine.stream))
        out = self._engine.execute(profile, feeds, planes, self._outputs)
        copy_2d(self._engine.cudart, self._pool, out[NEW_KV][0],
                self.layout.slot_copies(batch.slots, self.num_blocks, self._itemsize), self._engine.stream)
        return out[LOGITS]

    def forward(self, batch: LLMBatch) -> np.ndarray:
        self._kept = None
        return self._engine.download({LOGITS: self._run(batch)})[LOGITS]

    def forward_kept(self, batch: LLMBatch) -> None:
        self._kept = self._run(batch)

    def sample_kept(self, window: np.ndarray, uniforms: np.ndarray, config: np.ndarray) -> np.ndarray:
        pointer, shape, _ = self._kept
        feeds = {"window": window, "uniforms": uniforms, "config": config}
        out = self._sampler.execute(0, feeds, {SAMPLER_LOGITS: (pointer, shape)}, {"ids": np.dtype(np.int64)})
        return self._sampler.download(out)["ids"]

    def kept_logits(self) -> np.ndarray:
        return self._engine.download({LOGITS: self._kept})[LOGITS]

    def copy_block(self, src: int, dst: int) -> None:
        copy = self.layout.block_copy(src, dst, self.num_blocks, self._itemsize)
        copy_2d(self._engine.cudart, self._pool, self._pool, [copy], self._engine.stream)

    def close(self) -> None:
        if self._sampler is not None:  # before the engine whose stream it uses
            self._sampler.close()
            self._sampler = None
        for pointer in (self._pool, self._empty):
            if pointer:
                self._engine.cudart.cudaFree(pointer)
        self._pool = self._empty = 0
        self._engine.close()


class TrtBackend(Backend):
    name = "trt"
    on_gpu = True

    def __init__(self, bundle: Path, manifest: Manifest):
        self.bundle = bundle
        self.manifest = manifest

    def _engine(self, component: str):
        if component not in self.manifest.engines:
            raise ValueError(f"bundle {self.bundle} has no {component} engine (built: {', '.join(self.manifest.engines)})")
        record, engine = self.manifest.components[component], self.manifest.engines[component]
        return (self.manifest.engine_path(self.bundle, component), record.contract, self.float_type(component),
                engine.flavour)

    def float_type(self, component: str) -> str:
        return graph_float(self.manifest.components[component].precision)

    def session(self, component: str) -> Session:
        return TrtSession(*self._engine(component))

    def paged_llm(self, num_blocks: int) -> PagedLLM:
        path, contract, precision, flavour = self._engine("llm")
        sampler = None
        if "sampler" in self.manifest.engines:  # bundles exported before the sampler graph draw on the host
            sampler_path, sampler_contract, _, _ = self._engine("sampler")
            sampler = (sampler_path, sampler_contract)
        return TrtPagedLLM(path, contract, precision, num_blocks, flavour, sampler)

"""`vp`: generate with a bundle (`vp generate`), describe one (`vp info`), measure one (`vp bench`,
`vp soak`), serve one over HTTP (`vp serve`, on Ray Serve).

Thin click layers over vp.runtime.pipeline and vp.runtime.media. Without
--bundle, `vp generate` uses the default bundle (the trained demo preset), exporting it
into the cache folder on first use ($VP_CACHE, else ~/.cache/vp).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from vp.runtime.backends import BACKENDS
from vp.runtime.vocab import HEAD_NAMES, Task

DEFAULT_PRESET = "demo"


def cache_dir() -> Path:
    path = Path(os.environ.get("VP_CACHE", Path.home() / ".cache" / "vp"))
    if path.exists() and not path.is_dir():
        raise click.ClickException(f"VP_CACHE={path} is a file; point it at a folder (it holds exported bundles)")
    return path


def default_bundle() -> Path:
    """The default preset's bundle in the cache, exported on first use (needs `vp[export]`).

    The folder is named for the bundle format version and the digest of the shipped weights and
    their preset.json (which holds the sampling defaults), so a vp upgrade that changes any of them
    exports a new bundle instead of refusing or running the old one."""
    from vp.engines.manifest import FORMAT_VERSION

    bundle = cache_dir() / "bundles" / f"{DEFAULT_PRESET}-v{FORMAT_VERSION}-{_shipped_weights_digest()}"
    if (bundle / "manifest.json").is_file():
        return bundle
    try:
        from vp.export.bundle import ExportConfig, export_bundle
    except ImportError as error:
        raise click.ClickException(f"no --bundle given and the default bundle needs exporting, which needs torch "
                                   f"({error.name} is missing): pip install torch==2.13.0 && pip install "
                                   f"'vp[export]', or pass --bundle DIR") from None
    click.echo(f"first use: exporting the {DEFAULT_PRESET} preset into {bundle} (once)", err=True)
    bundle.parent.mkdir(parents=True, exist_ok=True)
    export_bundle(ExportConfig(preset=DEFAULT_PRESET, out=bundle, engines="none", force=True))
    return bundle


def _shipped_weights_digest() -> str:
    """12 hex digits of the sha256 of the default preset's shipped weight files and preset.json
    (read without importing vp.models, which needs torch)."""
    import hashlib
    from importlib.util import find_spec

    folder = Path(find_spec("vp.models").submodule_search_locations[0]) / "weights" / DEFAULT_PRESET
    digest = hashlib.sha256()
    for path in sorted([*folder.glob("*.safetensors"), folder / "preset.json"]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log the backend choice and stage timings.")
def main(verbose):
    """vp: VideoPoet-architecture video generation with TensorRT or ONNX Runtime."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")


def _box(ctx, param, value):
    if value is None:
        return None
    try:
        x0, y0, x1, y1 = (int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected x0,y0,x1,y1 pixels, got {value!r}") from None
    return x0, y0, x1, y1


@main.command()
@click.argument("prompt", default="")
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="Bundle folder from vp-export (default: the demo preset, exported on first use).")
@click.option("--task", type=click.Choice([t.value for t in Task]), default="t2v", show_default=True,
              help="t2v text-to-video, t2i image, i2v image-to-video, continue, long (see --seconds), inpaint, "
                   "outpaint, v2a video-to-audio, a2v, av-continue, stylize, uncond.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("vp.mp4"),
              show_default=True, help=".mp4 (H.264 + AAC), .png (t2i) or .wav (v2a); samples 2.. get -1, -2 ...")
@click.option("--image", type=click.Path(path_type=Path), help="Input image (i2v).")
@click.option("--video", type=click.Path(path_type=Path), help="Input video (continue, long, inpaint, outpaint, v2a, ...).")
@click.option("--audio", type=click.Path(path_type=Path), help="Input audio (a2v, av-continue); default: --video's.")
@click.option("--mask", type=click.Path(path_type=Path), help="Mask image for inpaint/outpaint: white = fill.")
@click.option("--box", callback=_box, help="Mask box x0,y0,x1,y1 in pixels (inpaint fills it, outpaint keeps it).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--temperature", type=float, default=None, help="0 = greedy (default: the bundle's).")
@click.option("--top-k", type=int, default=None, help="0 = off (default: the bundle's).")
@click.option("--top-p", type=float, default=None, help="1.0 = off (default: the bundle's).")
@click.option("--cfg", "cfg_scale", type=float, default=None, help="Guidance scale, 1.0 = off (default: the bundle's).")
@click.option("--samples", type=int, default=1, show_default=True, help="Samples of the prompt (they share the prefix).")
@click.option("--seconds", type=float, default=None, help="Long video: length in seconds (1-second continuations).")
@click.option("--portrait", is_flag=True, help="Portrait output (the <res> layout).")
@click.option("--sr", is_flag=True, help="Run the super-resolution stage(s).")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="auto: TensorRT when engines match this GPU, else ONNX Runtime.")
def generate(prompt, bundle, task, output, image, video, audio, mask, box, seed, temperature, top_k, top_p,
             cfg_scale, samples, seconds, portrait, sr, backend):
    """Generate from PROMPT with a bundle and write the result."""
    from tqdm import tqdm

    from vp.runtime.file_request import FileRequest, run_request
    from vp.runtime.pipeline import Pipeline

    sampling = {k: v for k, v in dict(temperature=temperature, top_k=top_k, top_p=top_p,
                                      cfg_scale=cfg_scale).items() if v is not None}
    request = FileRequest(task=task, prompt=prompt, output=output, image=image, video=video, audio=audio, mask=mask,
                          box=box, seed=seed, samples=samples, seconds=seconds, portrait=portrait, sr=sr,
                          sampling=sampling)
    try:
        request.check()
        with Pipeline.load(bundle or default_bundle(), backend=backend) as pipeline, \
                tqdm(unit="tok", desc="tokens", leave=False) as bar:

            def advance(done, total):
                bar.total = total
                bar.update(done - bar.n)

            result, paths = run_request(pipeline, request, on_token=advance)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    t = result.timings
    click.echo(f"wrote {', '.join(map(str, paths))}  (backend {pipeline.backend.name}; "
               f"{t['total'] / 1e3:.1f} s total, {t['llm_decode'] / max(t['decode_steps'], 1):.1f} ms per decode step)")


@main.command()
@click.option("--bundle", type=click.Path(path_type=Path), required=True, help="Bundle folder from vp-export.")
@click.option("--sha256", "digest", is_flag=True,
              help="Print only the bundle's digest (after checking every file's fingerprint): an app pins it "
                   "with Pipeline.load(..., expect_digest=...).")
def info(bundle, digest):
    """Describe a bundle: preset, components, precision, engines, layouts."""
    from vp.runtime.bundle import Bundle
    from vp.runtime.vocab import Task as T

    try:
        b = Bundle.open(bundle)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    m = b.manifest
    if digest:
        click.echo(m.digest())
        return
    llm = m.preset["llm"]
    click.echo(f"bundle {b.path}: preset {b.name}, format {m.format_version}")
    click.echo(f"  llm: d_model {llm['d_model']}, {llm['n_layers']} layers, {llm['n_heads']} heads "
               f"({llm['n_kv_heads']} kv), vocabulary {b.vocab.size}, context {llm['max_seq_len']}")
    click.echo("  output heads (logits a call computes): " +
               ", ".join(f"{name} ids [{low}, {high})" for name, (low, high) in zip(HEAD_NAMES, b.vocab.heads())))
    click.echo(f"  clip: {m.clip['frames']} frames {m.clip['height']}x{m.clip['width']} at {m.clip['fps']} fps, "
               f"latent {tuple(m.clip['video_grid'])}, audio {m.clip['audio_frames']} x "
               f"{b.vocab.audio_levels} codes at {m.clip['sample_rate']} Hz")
    click.echo(f"  sampling defaults: {', '.join(f'{k}={v}' for k, v in b.sampling.base.to_dict().items())}")
    for task, overrides in b.sampling.tasks.items():
        click.echo(f"    {task}: {', '.join(f'{k}={v}' for k, v in overrides.items())}")
    click.echo(f"  {'component':<20}{'precision':>10}{'ONNX MB':>10}{'engine':>24}")
    for name, c in m.components.items():
        e = m.engines.get(name)
        engine = f"{e.flavour} SM{','.join(map(str, e.compute_capabilities)) or '-'} {e.bytes / 1e6:.0f}MB" if e else "-"
        click.echo(f"  {name:<20}{c.precision:>10}{c.bytes / 1e6:>10.1f}{engine:>24}")
    if not m.engines:
        click.echo(f"  engines: none ({m.engines_note})")
    for name, c in m.components.items():
        if c.cpu_kernel_block is not None:
            click.echo(f"  {name} on a CPU: {c.cpu_onnx}, ONNX Runtime's int8 MatMulNBits over K blocks of "
                       f"{c.cpu_kernel_block}")
    if m.calibration is not None:
        from vp.calibration.record import CalibrationRecord

        try:
            lines = CalibrationRecord.from_dict(m.calibration).lines()
        except (ValueError, KeyError, TypeError) as error:
            raise click.ClickException(f"{b.path / 'manifest.json'}: malformed calibration record ({error!r})") from None
        click.echo("\n".join("  " + line for line in lines))
    builder = b.layouts()
    click.echo("  sequence lengths (prefix + output) with 64 text tokens:")
    for task in (T.TEXT_TO_VIDEO, T.TEXT_TO_IMAGE):
        layout = builder.build(task, text_len=64, with_audio=task is T.TEXT_TO_VIDEO)
        click.echo(f"    {task.value}: {layout.prefix_len} + {layout.output_len}")


def _ints(ctx, param, value: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in value.split(",") if v)
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise click.BadParameter(f"expected positive integers like 1,4, got {value!r}")
    return values


@main.command()
@click.option("--bundle", type=click.Path(path_type=Path), required=True, help="Bundle folder from vp-export.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--compare", type=click.Choice(["torch"]), default=None,
              help="Also run the torch reference models on the same work, in the same run (batch 1).")
@click.option("--task", type=click.Choice(["t2v", "t2i", "uncond"]), default="t2v", show_default=True)
@click.option("--batch", default="1", show_default=True, callback=_ints, help="Samples per generation, e.g. 1,4.")
@click.option("--prompt-len", type=int, default=16, show_default=True, help="Text tokens of the prompt (1-64).")
@click.option("--warmup", type=int, default=1, show_default=True, help="Runs thrown away first.")
@click.option("--iters", type=int, default=3, show_default=True, help="Measured runs (medians and percentiles).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the full report (schema: docs/benchmarks.md).")
def bench(bundle, backend, compare, task, batch, prompt_len, warmup, iters, seed, json_path):
    """Measure each stage and the whole generation of a bundle: latency, TPOT, memory,
    KV waste, runtime overhead and the memory-bandwidth floor."""
    import json

    from vp.runtime.bench import BenchConfig, run_bench
    from vp.runtime.bench_report import format_table
    from vp.runtime.file_request import check_writable
    from vp.runtime.media import atomic_path

    config = BenchConfig(bundle=str(bundle), backend=backend, task=task, batch=batch, prompt_len=prompt_len,
                         warmup=warmup, iters=iters, seed=seed, compare_torch=compare == "torch")
    try:
        if json_path:
            check_writable(json_path)
        report = run_bench(config, progress=lambda s: click.echo(f"... {s}", err=True))
        if json_path:
            with atomic_path(json_path, ".json") as tmp:
                tmp.write_text(json.dumps(report, indent=2))
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    except ImportError as error:
        raise click.ClickException(f"--compare torch needs the export extra ({error.name} is missing): "
                                   "pip install torch==2.13.0 && pip install 'vp[export]'") from None
    click.echo(format_table(report))


@main.command()
@click.option("--bundle", type=click.Path(path_type=Path), required=True, help="Bundle folder from vp-export.")
@click.option("--generations", type=int, default=200, show_default=True,
              help="Generations measured after the warm-up, cycling through every task.")
@click.option("--warmup", type=int, default=24, show_default=True,
              help="Generations first (two rounds of the tasks: the KV pool reaches its largest size).")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the soak's mp4/png/wav files (default: a temporary folder, removed after).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report as JSON.")
def soak(bundle, generations, warmup, backend, seed, out_dir, json_path):
    """Run many generations of mixed tasks in one process and report what they leave behind:
    resident memory growth after the warm-up, open file descriptors and threads, temporary files."""
    import json
    import tempfile

    from tqdm import tqdm

    from vp.runtime.file_request import check_writable
    from vp.runtime.media import atomic_path
    from vp.runtime.soak import SoakConfig, run_soak

    config = SoakConfig(bundle=str(bundle), generations=generations, warmup=warmup, backend=backend, seed=seed)
    try:
        if json_path:
            check_writable(json_path)
        with tqdm(unit="gen", desc="soak", leave=False) as bar, tempfile.TemporaryDirectory() as scratch:

            def advance(done, total, task):
                bar.total = total
                bar.set_postfix_str(task)
                bar.update(done - bar.n)

            report = run_soak(config, out_dir or Path(scratch), progress=advance)
        if json_path:
            with atomic_path(json_path, ".json") as tmp:
                tmp.write_text(json.dumps(report, indent=2))
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    r, f = report["rss_mb"], report["fds"]
    growth = "n/a" if r["growth_share"] is None else f"{100 * r['growth_share']:+.2f}%"
    click.echo(f"soak: {report['generations']} generations after {report['warmup']} warm-up, "
               f"{report['seconds']:.0f} s; RSS {r['after_warmup']:.0f} -> {r['end']:.0f} MB ({growth}); "
               f"open fds {f['after_warmup']} -> {f['end']}; threads {report['threads']['after_warmup']} -> "
               f"{report['threads']['end']}; leftover files {len(report['leftover_files'])}, new temp entries "
               f"{len(report['new_temp_entries'])}")


@main.command()
@click.option("--bundle", type=click.Path(path_type=Path), required=True, help="Bundle folder from vp-export "
              "(on a cluster: the same path on every machine).")
@click.option("--replicas", type=int, default=1, show_default=True,
              help="Pipelines serving requests, each a Ray actor with its own copy of the bundle.")
@click.option("--threads-per-replica", "threads", type=int, default=None,
              help="CPUs each replica asks Ray for, and its ONNX Runtime threads (default: the cluster's CPUs "
                   "shared out). A replica on TensorRT asks for one GPU instead.")
@click.option("--port", type=int, default=8000, show_default=True, help="HTTP port.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 to serve other machines).")
@click.option("--address", default=None,
              help="Join this Ray cluster (e.g. auto, or HEAD:6379) instead of starting Ray here.")
@click.option("--queue", type=int, default=4, show_default=True,
              help="Requests waiting per replica; past that the service answers 503 with Retry-After.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
def serve(bundle, replicas, threads, port, host, address, queue, backend):
    """Serve a bundle over HTTP on Ray Serve until Ctrl-C (or SIGTERM): POST /v1/generate (media
    bytes), POST /v1/generate/stream (NDJSON, a line per latent frame), GET /healthz, GET /v1/info
    (docs/serving.md). Needs the serve extra: pip install 'vp[serve]'."""
    import signal
    import time

    try:
        from vp.serve.app import ServeConfig, start, stop

        url = start(ServeConfig(bundle=str(bundle), replicas=replicas, threads=threads, host=host, port=port,
                                address=address, backend=backend, queue=queue))
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"serving {bundle} at {url} with {replicas} replica(s); Ctrl-C stops")

    def terminate(signum, frame):  # a service manager's stop: the same clean shutdown as Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("stopping: Serve and Ray are shut down", err=True)
    finally:
        stop()

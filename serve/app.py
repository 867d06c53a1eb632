"""`vp serve`: a bundle behind an HTTP service on Ray Serve (docs/serving.md).

Two deployments:
- `Generator`: one Replica (a Pipeline) per Ray actor, `replicas` of them,
  each asking Ray for `threads` CPUs, or for one GPU when the bundle runs on
  TensorRT. Ray Serve routes each request to a replica with room and replaces a
  replica whose process dies.
- `Gateway`: the HTTP front (FastAPI): parses nothing heavy, forwards bodies to
  the generators, and turns their answers into responses: media bytes, NDJSON
  streams, 4xx with {"error": ...}; 503 with Retry-After when the queue is
  full or the replica serving a request died.

Backpressure: a replica takes `max_ongoing` requests at once (the Pipeline
runs generations one after another; the second waits inside, ready), and the
gateway keeps at most `queue` requests per replica waiting; past that, 503.
"""


import asyncio
import json
import math
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "vp"
RETRY_AFTER_S = 1


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """address: a Ray cluster to join ("auto" = the local one started with `ray start`), None =
    start Ray here. threads: CPUs (and ONNX Runtime threads) per replica; None = this
    cluster's CPUs shared out. queue: requests waiting per replica before 503."""

    bundle: str
    replicas: int = 1
    threads: int | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    address: str | None = None
    backend: str = "auto"
    queue: int = 4
    max_ongoing: int = 2


def _import_ray():
    try:
        import ray
        from ray import serve
    except ImportError:
        raise ValueError("vp serve needs Ray Serve: pip install 'vp[serve]'") from None
    return ray, serve


def build_app(config: ServeConfig, cluster_cpus: float, uses_gpu: bool):
    """The Ray Serve application for `config` on a cluster with `cluster_cpus` CPUs."""
    _, serve = _import_ray()
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import BackPressureError

    from vp.serve.replica import Replica

    threads = config.threads or max(1, math.floor(cluster_cpus / config.replicas))
    resources = {"num_cpus": 1, "num_gpus": 1} if uses_gpu else {"num_cpus": threads}
    # generate() is synchronous: run it in a thread so health checks are answered during a generation
    resources["runtime_env"] = {"env_vars": {"RAY_SERVE_RUN_SYNC_IN_THREADPOOL": "1"}}

    @serve.deployment(name="Generator", num_replicas=config.replicas, max_ongoing_requests=config.max_ongoing,
                      max_queued_requests=config.queue * config.replicas, ray_actor_options=resources,
                      health_check_period_s=5)
    class Generator(Replica):
        def check_health(self) -> None:
            self.pipeline.bundle.manifest  # the pipeline is open; a dead process fails the check itself

    api = FastAPI(title="vp serve", docs_url=None, redoc_url=None)

    def error(status: int, message: str, retry: bool = False) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if retry else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def failure(e: Exception) -> JSONResponse:
        """The answer to a call of a replica that raised instead of answering."""
        if isinstance(e, BackPressureError):
            return error(503, "every replica is busy and the queue is full; retry later", retry=True)
        if isinstance(e, RayActorError):
            return error(503, "the replica serving this request died; retry (Ray is replacing it)", retry=True)
        # a bug, not the request's fault: named, never a traceback
        return error(500, f"internal error in the replica ({type(e).__name__}); see the replica's log")

    async def body_of(request: Request):
        try:
            return json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as e:
            raise _BadRequest(f"the request body is not JSON ({e})") from None

    @serve.deployment(name="Gateway", num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
    @serve.ingress(api)
    class Gateway:
        def __init__(self, generator):
            self.generator = generator

        async def _call(self, method: str, *args):
            """The generator's answer, or an error response for what went wrong on the way."""
            try:
                return await getattr(self.generator, method).remote(*args)
            except Exception as e:  # noqa: BLE001 (every failure becomes a JSON answer)
                return failure(e)

        @api.post("/v1/generate")
        async def generate(self, request: Request):
            try:
                body = await body_of(request)
            except _BadRequest as e:
                return error(400, str(e))
            answer = await self._call("generate", body)
            if not isinstance(answer, dict):
                return answer
            if answer["status"] != 200:
                return error(answer["status"], answer["error"])
            return Response(answer["body"], media_type=answer["content_type"],
                            headers={"X-VP-Replica": answer["replica"]})

        @api.post("/v1/generate/stream")
        async def stream(self, request: Request):
            try:
                body = await body_of(request)
            except _BadRequest as e:
                return error(400, str(e))
            items = self.generator.options(stream=True).stream.remote(body)
            try:
                head = await items.__anext__()
            except Exception as e:  # noqa: BLE001
                return failure(e)
            if head["status"] != 200:
                return error(head["status"], head["error"])

            async def lines():
                try:
                    async for item in items:
                        yield json.dumps(item) + "\n"
                except RayActorError:
                    yield json.dumps({"error": "the replica serving this stream died"}) + "\n"
                except Exception as e:  # noqa: BLE001 (the 200 is sent: the error is the stream's last line)
                    yield json.dumps({"error": f"internal error in the replica ({type(e).__name__})"}) + "\n"
                finally:
                    items.cancel()  # a client that left: the replica stops generating for nobody

            return StreamingResponse(lines(), media_type="application/x-ndjson",
                                     headers={"X-VP-Replica": head["replica"]})

        @api.get("/v1/info")
        async def info(self):
            answer = await self._call("info")
            return answer if not isinstance(answer, dict) else JSONResponse(answer)

        @api.get("/healthz")
        async def healthz(self):
            status = await asyncio.to_thread(serve.status)
            app = status.applications.get(APP_NAME)
            deployment = app.deployments.get("Generator") if app else None
            running = deployment.replica_states.get("RUNNING", 0) if deployment else 0
            healthy = deployment is not None and deployment.status == "HEALTHY" and running >= config.replicas
            return JSONResponse({"status": "ok" if healthy else "unavailable", "replicas": running,
                                 "wanted": config.replicas}, status_code=200 if healthy else 503)

    return Gateway.bind(Generator.bind(config.bundle, "trt" if uses_gpu else config.backend,
                                       None if uses_gpu else threads))


class _BadRequest(ValueError):
    pass


def start(config: ServeConfig) -> str:
    """Start (or join) Ray, deploy the bundle, wait until it serves; the service's URL."""
    if config.replicas < 1 or config.queue < 1 or (config.threads is not None and config.threads < 1):
        raise ValueError("replicas, threads and queue must be positive")
    if not (Path(config.bundle) / "manifest.json").is_file():
        raise ValueError(f"bundle folder {config.bundle} has no manifest.json (make one with vp-export)")
    ray, serve = _import_ray()
    uses_gpu = _uses_gpu(config)
    if not ray.is_initialized():
        ray.init(address=config.address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    cpus, gpus = (ray.cluster_resources().get(kind, 0) for kind in ("CPU", "GPU"))
    need = config.replicas * (1 if uses_gpu else (config.threads or 1))
    if need > cpus:
        raise ValueError(f"{config.replicas} replica(s) x {config.threads or 1} thread(s) need {need} CPUs; "
                         f"this Ray cluster has {cpus:g}: lower --replicas or --threads-per-replica")
    if uses_gpu and config.replicas > gpus:
        raise ValueError(f"{config.replicas} TensorRT replica(s) need a GPU each; this Ray cluster has {gpus:g}: "
                         f"lower --replicas, or --backend ort")
    try:
        serve.start(http_options={"host": config.host, "port": config.port})
        serve.run(build_app(config, cpus, uses_gpu), name=APP_NAME, route_prefix="/", blocking=False)
    except Exception as error:  # noqa: BLE001 (Ray's deploy errors: a replica that cannot start, a port in use)
        raise ValueError(f"the service did not start: {str(error).strip().splitlines()[-1]}") from None
    return f"http://{config.host}:{config.port}"


def _uses_gpu(config: ServeConfig) -> bool:
    """Whether replicas run the bundle on TensorRT (and so each asks Ray for a GPU)."""
    if config.backend == "ort":
        return False
    from vp.runtime.backends.trt import trt_unavailable
    from vp.runtime.bundle import Bundle

    reason = trt_unavailable(Bundle.open(config.bundle, verify=False).manifest)
    if config.backend == "trt" and reason:
        raise ValueError(f"--backend trt is not possible here: {reason}")
    return reason is None


def stop() -> None:
    """Remove the application and Serve (Ray itself stays up if it was joined)."""
    ray, serve = _import_ray()
    serve.shutdown()
    ray.shutdown()

"""Pregen over a Ray cluster: one replica of a registered rewriter backend per Ray actor.

`RayExecutor` is itself a rewriter backend. The pipeline hands it every pending batch; it keeps
each actor busy with one batch at a time (`ray.wait`) and yields batches as they finish, so the
pipeline caches each one at once and a killed run resumes. Every actor builds its own backend with
`create_backend(name, **options)`: only the (picklable) options cross the wire, and the driver never
loads the model. Batches are seeded from their requests' cache keys, so a batch gives the same
replies on any actor; on CPU this holds at equal torch thread counts, and Ray sets each actor's
`OMP_NUM_THREADS` to its CPUs (`num_cpus_per_worker`) unless the environment already sets it.
Ray is imported lazily: without `--executor ray` nothing here needs it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any

from instraug_plugin.backends.base import GenerationRequest
from instraug_plugin.backends.registry import BACKENDS, create_backend
from instraug_plugin.core.errors import InstrAugError, one_line


class _Replica:
    """The actor: one backend instance serving whole batches."""

    def load(self, backend: str, options: dict[str, Any]) -> tuple[str, str, bool]:
        """Create the backend; return its (name, model_id, supports_constraints).

        A method rather than `__init__`: Ray hands a method's exception to the driver as an object,
        an `__init__` failure only as text.
        """
        self.backend = create_backend(backend, **options)
        return self.backend.name, self.backend.model_id, self.backend.supports_constraints

    def generate(self, requests: list[GenerationRequest]) -> list[str]:
        return self.backend.generate(requests)


def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise InstrAugError("--executor ray needs Ray: pip install 'instraug-plugin[ray]'") from None
    return ray


def _reason(exc: BaseException) -> str:
    """One line: the worker's own exception when Ray carries it, else Ray's message."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    return one_line(str(exc) if isinstance(exc, InstrAugError) else f"{type(exc).__name__}: {exc}")


class RayExecutor:
    """A rewriter backend whose batches run on `num_workers` Ray actors, each with its own replica.

    `address`: None starts a local Ray instance, `auto` joins the running cluster, or a cluster
    address; an already initialized Ray (in a script or test) is used as it is and left running.
    `num_gpus_per_worker` defaults to 1 on a cluster with GPUs, else 0; `num_workers` to one per
    cluster GPU (`GPUs // num_gpus_per_worker`), else 1. Leave the backend's `device` unset on GPUs:
    Ray makes each actor's own GPUs the only visible ones.
    """

    def __init__(
        self,
        backend: str,
        options: Mapping[str, Any],
        *,
        address: str | None = None,
        num_workers: int | None = None,
        num_gpus_per_worker: float | None = None,
        num_cpus_per_worker: float = 1,
    ) -> None:
        if backend not in BACKENDS:  # fail before starting Ray
            raise InstrAugError(f"unknown backend {backend!r}; available: {', '.join(sorted(BACKENDS))}")
        if (num_workers is not None and num_workers < 1) or num_cpus_per_worker < 0 or (num_gpus_per_worker or 0) < 0:
            raise InstrAugError("ray workers must be at least 1, and CPUs and GPUs per worker at least 0")
        self._ray = ray = _import_ray()
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            try:
                ray.init(address=address)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"join Ray at {address}" if address else "start a local Ray instance"
                raise InstrAugError(f"cannot {where}: {_reason(exc)}") from None
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        if num_gpus_per_worker is None:
            num_gpus_per_worker = 1 if cluster_gpus else 0
        if num_workers is None:
            num_workers = max(1, int(cluster_gpus // num_gpus_per_worker)) if num_gpus_per_worker else 1
        actor = ray.remote(_Replica).options(num_cpus=num_cpus_per_worker, num_gpus=num_gpus_per_worker)
        self._workers = [actor.remote() for _ in range(num_workers)]
        loads = [worker.load.remote(backend, dict(options)) for worker in self._workers]
        try:
            described = [self._get(ref, index, f"could not start the {backend} backend") for index, ref in enumerate(loads)]
        except InstrAugError:
            self.close()
            raise
        self.name, self.model_id, self.supports_constraints = described[0]

    def _get(self, ref: Any, worker: int, failure: str) -> Any:
        """The result of `ref` from `worker`; a Ray or worker error becomes one InstrAugError line."""
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayError as exc:
            raise InstrAugError(f"ray worker {worker + 1} of {len(self._workers)} {failure}: {_reason(exc)}") from exc

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """One list of requests, on the first actor."""
        return self._get(self._workers[0].generate.remote(list(requests)), 0, "failed")

    def generate_batches(
        self, batches: Sequence[Sequence[GenerationRequest]]
    ) -> Iterator[tuple[int, list[str]]]:
        """Keep every actor busy with one batch; yield `(batch index, replies)` in completion order."""
        queued = deque(enumerate(batches))
        idle = deque(range(len(self._workers)))
        running: dict[Any, tuple[int, int]] = {}  # object ref -> (batch index, worker)
        while queued or running:
            while queued and idle:
                (index, batch), worker = queued.popleft(), idle.popleft()
                running[self._workers[worker].generate.remote(list(batch))] = (index, worker)
            [ref], _ = self._ray.wait(list(running), num_returns=1)
            index, worker = running.pop(ref)
            idle.append(worker)
            yield index, self._get(ref, worker, "failed on a batch (finished batches are cached, rerun to resume)")

    def close(self) -> None:
        """Kill the actors, and shut Ray down if this executor started it."""
        for worker in self._workers:
            self._ray.kill(worker)
        self._workers = []
        if self._owns_ray:
            self._ray.shutdown()
            self._owns_ray = False

"""GPU profiles: what an allocator trace cannot see, per card, with where each number comes from.

A profile holds the card's memory (``total_memory_bytes``: what ``torch.cuda.get_device_properties().
total_memory`` reports, i.e. cudaMemGetInfo's total), its compute capability and the memory that lies
outside the tensors a model trace records:

- **CUDA context** (``cuda_context_bytes``) and **lazily loaded kernels** (``lazy_kernels_bytes``): device
  memory the driver takes for this process; nvidia-smi counts it, the caching allocator never sees it, and
  it is not available to cudaMalloc. Typical 0.3–0.5 GiB with lazy module loading (CUDA ≥ 11.7; PyTorch sets
  ``CUDA_MODULE_LOADING=LAZY``). Estimated until calibrated.
- **cuBLAS workspace** (``cublas_workspace_bytes``): allocated *through* the caching allocator at the first
  cuBLAS call on a (handle, stream) and never freed. Size from ``aten/src/ATen/cuda/CublasHandlePool.cpp``
  (``parseChosenWorkspaceSize``): ``4096 * 1024 * 2 + 16 * 1024 * 8`` = 8,519,680 B (the ``:4096:2:16:8``
  default, PR pytorch#91564, torch ≥ 2.0) and 32 MiB on compute capability 9.x (Hopper). PR pytorch#175344
  (2026) extended 32 MiB to Blackwell (10.x, 12.x); that is applied for torch ≥ 2.12 and marked uncertain.
  ``CUBLAS_WORKSPACE_CONFIG`` (``:SIZE_KiB:COUNT`` pairs) overrides it, as in PyTorch.
  cuBLAS handles are per thread (``getCurrentCUDABlasHandle``: a ``thread_local`` PoolWindow reserves a
  handle per thread and device), and the workspace map is keyed by (handle, stream)
  (``cublas_handle_stream_to_workspace``, ``WorkspaceMapWithMutex`` keyed by ``tuple<void*, void*>`` in
  torch 2.13's ATen/cuda/CUDAContextLight.h): autograd's device thread, which runs CUDA backward nodes,
  gets its own workspace of the same size (the predictor inserts both).
- **cuBLASLt workspace** (``cublaslt_workspace_bytes``): in torch 2.13 open-source CUDA builds cuBLASLt
  *shares* the cuBLAS workspace: ``TORCH_CUBLASLT_UNIFIED_WORKSPACE`` defaults to on outside fbcode
  (CublasHandlePool.cpp ``unified_cublas_and_lt_workspaces``: ``unified_env_var == std::nullopt ||
  unified_env_var == true``; ``getCUDABlasLtWorkspace`` then returns the (cuBLAS handle, stream) workspace),
  and torch 2.13's own ``torch/backends/cuda/__init__.py`` (blas workspace-size docstring) says "the cuBLASLt
  workspace is capped at the cuBLAS workspace size and physically reuses the same allocation". So the
  derived size is 0 (no allocation of its own). With ``TORCH_CUBLASLT_UNIFIED_WORKSPACE=0`` the separate
  pool of ``parseCUDABlasLtWorkspaceSize`` comes back: 1024 KiB (``CUBLASLT_WORKSPACE_SIZE`` KiB
  overrides), allocated at the first cuBLASLt matmul (addmm with a bias) per thread and kept. Older
  releases (before the unified default) had the separate 1 MiB pool: a profile may set it explicitly.
- **cuDNN convolution workspaces** (``conv_workspace``): allocated through the caching allocator for each
  convolution call and freed right after it. Their size depends on the GPU, the cuDNN version and the
  algorithm the heuristics pick; the shipped numbers are a **placeholder estimate** (a fraction of the
  call's input bytes, capped) until ``calibrate()`` measures them on the card.

Profiles ship in ``resources/gpus/*.json`` with ``"estimated": true``; calibrated ones are saved to
``~/.config/vggexplorer/gpus/`` (``$XDG_CONFIG_HOME`` respected) with ``"estimated": false`` and take
precedence over a shipped profile of the same name.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from vggexplorer.core.base.errors import VGGExplorerError
from vggexplorer.core.base.fileio import read_bounded
from vggexplorer.core.base.units import GiB, MiB, fmt_bytes, parse_bytes

__all__ = [
    "GPU_FORMAT",
    "ConvWorkspacePolicy",
    "GpuError",
    "GpuProfile",
    "adhoc_profile",
    "cublas_workspace_bytes",
    "cublaslt_unified",
    "cublaslt_workspace_bytes",
    "find_profile",
    "list_profiles",
    "load_profile",
    "resolve_gpu",
    "user_profile_dir",
]

GPU_FORMAT = "vggexplorer.gpu/1"
SHIPPED_DIR = Path(__file__).resolve().parents[3] / "resources" / "gpus"
MAX_PROFILE_BYTES = 256 * 1024

#: cuBLAS default workspace, ``:4096:2:16:8`` (CublasHandlePool.cpp, parseChosenWorkspaceSize).
CUBLAS_DEFAULT_WORKSPACE = 4096 * 1024 * 2 + 16 * 1024 * 8  # 8,519,680 B
#: cuBLAS workspace on Hopper (same function): ``4096 * 8 * 1024``.
CUBLAS_HOPPER_WORKSPACE = 4096 * 8 * 1024  # 32 MiB
#: cuBLASLt default workspace (parseCUDABlasLtWorkspaceSize): 1024 KiB.
CUBLASLT_DEFAULT_WORKSPACE = 1024 * 1024

DEFAULT_CONTEXT_BYTES = 400 * MiB
DEFAULT_LAZY_KERNELS_BYTES = 160 * MiB


class GpuError(VGGExplorerError):
    """Unknown GPU name, a bad profile file, or a bad capacity."""


def torch_version_string() -> str:
    """torch's version: the imported module's, else from package metadata (which does not import torch)."""
    mod = sys.modules.get("torch")
    if mod is not None:
        return str(mod.__version__)
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:  # pragma: no cover - torch is a dependency
        return "0.0"


def _torch_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", torch_version_string())
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _parse_cublas_config(val: str) -> int | None:
    pairs = re.findall(r":([0-9]+):([0-9]+)", val)
    if not pairs:
        return None
    return sum(int(size) * 1024 * int(count) for size, count in pairs)


def cublas_workspace_bytes(
    compute_capability: tuple[int, int], torch_version: tuple[int, int] | None = None, env: str | None = None
) -> int:
    """cuBLAS workspace bytes PyTorch allocates at the first cuBLAS call (CublasHandlePool.cpp rules).

    ``env`` is ``CUBLAS_WORKSPACE_CONFIG`` (e.g. ``":4096:8"``); an unparseable value falls back to the
    default, as PyTorch does (with a warning there).
    """
    major = compute_capability[0]
    tv = torch_version if torch_version is not None else _torch_version()
    default = CUBLAS_DEFAULT_WORKSPACE
    if major == 9 or (major in (10, 12) and tv >= (2, 12)):
        default = CUBLAS_HOPPER_WORKSPACE
    if env:
        parsed = _parse_cublas_config(env)
        if parsed is not None:
            return parsed
    return default


#: ``c10::utils::check_env`` spellings (c10/util/env.cpp): true / false; anything else is "not set"
_ENV_TRUE = frozenset({"1", "ON", "YES", "TRUE", "Y"})
_ENV_FALSE = frozenset({"0", "OFF", "NO", "FALSE", "N"})


def cublaslt_unified(env: str | None = None) -> bool:
    """Whether cuBLASLt reuses the cuBLAS workspace: ``TORCH_CUBLASLT_UNIFIED_WORKSPACE`` unset or true (the
    default in open-source CUDA builds; CublasHandlePool.cpp ``unified_cublas_and_lt_workspaces``)."""
    if env is None:
        return True
    v = env.strip().upper()
    return v in _ENV_TRUE or v not in _ENV_FALSE


def cublaslt_workspace_bytes(cublas_bytes: int, env_kib: str | None = None, *, unified: bool = False) -> int:
    """Bytes cuBLASLt allocates *of its own* (see the module docstring).

    ``unified`` (torch 2.13's default): 0 — it reuses the cuBLAS workspace. Otherwise
    ``parseCUDABlasLtWorkspaceSize``: 1024 KiB (``CUBLASLT_WORKSPACE_SIZE`` KiB overrides), at most the cuBLAS
    workspace (the cap older releases applied).
    """
    if unified:
        return 0
    size = CUBLASLT_DEFAULT_WORKSPACE
    if env_kib:
        with contextlib.suppress(ValueError):
            size = int(env_kib) * 1024
    return min(size, cublas_bytes)


@dataclass(frozen=True)
class ConvWorkspacePolicy:
    """How big a cuDNN convolution workspace is, per call (forward, backward-data, backward-weight).

    ``bytes = min(cap_bytes, ceil(fraction_of_input × input bytes of the call))``; 1×1 convolutions get
    none unless ``one_by_one``. An **estimate** for shipped profiles (``measured`` False); calibrate() fits
    ``fraction_of_input`` and ``cap_bytes`` on the real card.
    """

    fraction_of_input: float = 0.25
    cap_bytes: int = 256 * MiB
    one_by_one: bool = False
    measured: bool = False

    def workspace(self, input_bytes: int, kernel_hw: tuple[int, int]) -> int:
        if input_bytes <= 0 or self.fraction_of_input <= 0 or self.cap_bytes <= 0:
            return 0
        if kernel_hw == (1, 1) and not self.one_by_one:
            return 0
        return int(min(self.cap_bytes, math.ceil(self.fraction_of_input * input_bytes)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "fraction_of_input": self.fraction_of_input,
            "cap_bytes": self.cap_bytes,
            "one_by_one": self.one_by_one,
            "measured": self.measured,
        }


@dataclass(frozen=True)
class GpuProfile:
    """One card. Bytes are raw integers; ``estimated`` until ``calibrate()`` measured them on the card."""

    name: str
    total_memory_bytes: int
    compute_capability: tuple[int, int] = (8, 0)
    cuda_context_bytes: int = DEFAULT_CONTEXT_BYTES
    lazy_kernels_bytes: int = DEFAULT_LAZY_KERNELS_BYTES
    cublas_workspace: int | None = None  # None: derived from compute capability and torch version
    cublaslt_workspace: int | None = None  # None: derived (0 when unified with cuBLAS, the 2.13 default)
    conv_workspace: ConvWorkspacePolicy = field(default_factory=ConvWorkspacePolicy)
    nvidia_smi_total_bytes: int | None = None
    aliases: tuple[str, ...] = ()
    estimated: bool = True
    sources: tuple[str, ...] = ()
    path: str = ""  # file it came from ("" for ad-hoc)

    @property
    def cublas_workspace_bytes(self) -> int:
        if self.cublas_workspace is not None:
            return self.cublas_workspace
        return cublas_workspace_bytes(self.compute_capability, env=os.environ.get("CUBLAS_WORKSPACE_CONFIG"))

    @property
    def cublaslt_workspace_bytes(self) -> int:
        if self.cublaslt_workspace is not None:
            return self.cublaslt_workspace
        return cublaslt_workspace_bytes(
            self.cublas_workspace_bytes,
            os.environ.get("CUBLASLT_WORKSPACE_SIZE"),
            unified=cublaslt_unified(os.environ.get("TORCH_CUBLASLT_UNIFIED_WORKSPACE")),
        )

    @property
    def non_allocator_bytes(self) -> int:
        """Device memory this process holds outside the caching allocator (context + kernels)."""
        return self.cuda_context_bytes + self.lazy_kernels_bytes

    @property
    def allocator_capacity_bytes(self) -> int:
        """What cudaMalloc can hand the caching allocator: total − context − kernels (no other process)."""
        return max(self.total_memory_bytes - self.non_allocator_bytes, 0)

    def label(self) -> str:
        est = " (estimated)" if self.estimated else " (calibrated)"
        return f"{self.name} · {fmt_bytes(self.total_memory_bytes)}{est}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": GPU_FORMAT,
            "name": self.name,
            "aliases": list(self.aliases),
            "total_memory_bytes": self.total_memory_bytes,
            "nvidia_smi_total_bytes": self.nvidia_smi_total_bytes,
            "compute_capability": list(self.compute_capability),
            "cuda_context_bytes": self.cuda_context_bytes,
            "lazy_kernels_bytes": self.lazy_kernels_bytes,
            "cublas_workspace_bytes": self.cublas_workspace,
            "cublaslt_workspace_bytes": self.cublaslt_workspace,
            "conv_workspace": self.conv_workspace.to_dict(),
            "estimated": self.estimated,
            "sources": list(self.sources),
        }

    def summary_dict(self) -> dict[str, Any]:
        """The profile with derived values resolved (what ``predict --json`` prints under ``gpu``)."""
        d = self.to_dict()
        d.pop("format")
        d["cublas_workspace_bytes"] = self.cublas_workspace_bytes
        d["cublaslt_workspace_bytes"] = self.cublaslt_workspace_bytes
        d["allocator_capacity_bytes"] = self.allocator_capacity_bytes
        d["path"] = self.path
        return d

    @staticmethod
    def from_dict(d: object, *, where: str = "profile") -> GpuProfile:
        if not isinstance(d, dict):
            raise GpuError(f"{where}: a GPU profile must be a JSON object")
        if d.get("format") != GPU_FORMAT:
            raise GpuError(f"{where}: unsupported format {d.get('format')!r}; expected {GPU_FORMAT!r}")

        def need_int(key: str, default: int | None = None, *, nullable: bool = False) -> Any:
            v = d.get(key, default)
            if v is None and nullable:
                return None
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise GpuError(f"{where}: '{key}' must be a non-negative integer (bytes), got {v!r:.40}")
            return v

        name = d.get("name")
        if not isinstance(name, str) or not name.strip():
            raise GpuError(f"{where}: 'name' must be a non-empty string")
        total = need_int("total_memory_bytes")
        if total <= 0:
            raise GpuError(f"{where}: 'total_memory_bytes' must be positive")
        cc = d.get("compute_capability", [8, 0])
        if (
            not isinstance(cc, list | tuple)
            or len(cc) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 100 for x in cc)
        ):
            raise GpuError(f"{where}: 'compute_capability' must be [major, minor], got {cc!r:.40}")
        cw_raw = d.get("conv_workspace", {})
        if not isinstance(cw_raw, dict):
            raise GpuError(f"{where}: 'conv_workspace' must be an object")
        frac = cw_raw.get("fraction_of_input", 0.25)
        if isinstance(frac, bool) or not isinstance(frac, int | float) or not 0 <= frac <= 64:
            raise GpuError(f"{where}: 'conv_workspace.fraction_of_input' must be a number in [0, 64]")
        cap = cw_raw.get("cap_bytes", 256 * MiB)
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            raise GpuError(f"{where}: 'conv_workspace.cap_bytes' must be a non-negative integer")
        conv = ConvWorkspacePolicy(
            float(frac), cap, bool(cw_raw.get("one_by_one", False)), bool(cw_raw.get("measured", False))
        )
        aliases = d.get("aliases", [])
        sources = d.get("sources", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise GpuError(f"{where}: 'aliases' must be a list of strings")
        if not isinstance(sources, list) or not all(isinstance(a, str) for a in sources):
            raise GpuError(f"{where}: 'sources' must be a list of strings")
        estimated = d.get("estimated", True)
        if not isinstance(estimated, bool):
            raise GpuError(f"{where}: 'estimated' must be true or false")
        smi = need_int("nvidia_smi_total_bytes", None, nullable=True)
        return GpuProfile(
            name=name.strip(),
            total_memory_bytes=total,
            compute_capability=(int(cc[0]), int(cc[1])),
            cuda_context_bytes=need_int("cuda_context_bytes", DEFAULT_CONTEXT_BYTES),
            lazy_kernels_bytes=need_int("lazy_kernels_bytes", DEFAULT_LAZY_KERNELS_BYTES),
            cublas_workspace=need_int("cublas_workspace_bytes", None, nullable=True),
            cublaslt_workspace=need_int("cublaslt_workspace_bytes", None, nullable=True),
            conv_workspace=conv,
            nvidia_smi_total_bytes=smi,
            aliases=tuple(aliases),
            estimated=estimated,
            sources=tuple(sources),
        )

    def save(self, path: str | Path) -> None:
        from vggexplorer.core.base.fileio import atomic_write_text

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p, json.dumps(self.to_dict(), indent=2) + "\n")


def load_profile(path: str | Path) -> GpuProfile:
    p = Path(path)
    raw = read_bounded(p, MAX_PROFILE_BYTES, "GPU profile", GpuError, refused=f"{p.name}: ")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise GpuError(f"{p.name}: not valid JSON: {e}") from None
    return replace(GpuProfile.from_dict(data, where=p.name), path=str(p))


def user_profile_dir() -> Path:
    """``$XDG_CONFIG_HOME/vggexplorer/gpus`` (default ``~/.config/vggexplorer/gpus``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vggexplorer" / "gpus"


def list_profiles(*, include_user: bool = True) -> list[GpuProfile]:
    """Shipped profiles, with calibrated user profiles replacing shipped ones of the same name."""
    found: dict[str, GpuProfile] = {}
    dirs = [SHIPPED_DIR] + ([user_profile_dir()] if include_user else [])
    for d in dirs:
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*.json")):
            try:
                prof = load_profile(f)
            except GpuError:
                if d == SHIPPED_DIR:
                    raise
                continue  # a broken user file must not hide the shipped profiles
            found[prof.name.lower()] = prof
    return sorted(found.values(), key=lambda p: (p.total_memory_bytes, p.name))


def _norm(s: str) -> str:
    s = s.lower().replace("nvidia", "").replace("geforce", "")
    return re.sub(r"[^a-z0-9]+", "", s)


def find_profile(name: str, profiles: list[GpuProfile] | None = None) -> GpuProfile:
    """Fuzzy lookup: ``"RTX 3060"``, ``"3060"``, ``"h100"``, ``"a100 80gb"``.

    Exact (normalised) name or alias first; then the profiles whose name/alias contains the query; one match
    wins, several prefer an exact word alias, else a ``GpuError`` lists them; none lists every choice.
    """
    profs = profiles if profiles is not None else list_profiles()
    q = _norm(name)
    if not q:
        raise GpuError(f"empty GPU name; choose one of: {_choices(profs)}")
    exact = [p for p in profs if q in {_norm(p.name), *(_norm(a) for a in p.aliases)}]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise GpuError(f"GPU name {name!r} is ambiguous: {', '.join(p.name for p in exact)}")
    partial = [p for p in profs if any(q in _norm(k) for k in (p.name, *p.aliases))]
    if len(partial) == 1:
        return partial[0]
    if len(partial) > 1:
        raise GpuError(
            f"GPU name {name!r} matches several profiles: {', '.join(p.name for p in partial)}; "
            "be more specific"
        )
    raise GpuError(
        f"no GPU profile matches {name!r}; choose one of: {_choices(profs)} (or use --capacity 24GiB)"
    )


def _choices(profs: list[GpuProfile]) -> str:
    return ", ".join(f"{p.name} ({p.total_memory_bytes / GiB:.1f} GiB)" for p in profs)


def adhoc_profile(capacity: str | int, *, compute_capability: tuple[int, int] = (8, 0)) -> GpuProfile:
    """A profile for ``--capacity 24GiB``: that much device memory, default context/workspace estimates."""
    try:
        total = parse_bytes(capacity) if isinstance(capacity, str) else int(capacity)
    except ValueError as e:
        raise GpuError(str(e)) from None
    if total <= 0:
        raise GpuError(f"capacity must be positive, got {capacity!r}")
    return GpuProfile(
        name=f"ad-hoc {fmt_bytes(total, 2)}",
        total_memory_bytes=total,
        compute_capability=compute_capability,
        estimated=True,
        sources=(
            "ad-hoc profile from --capacity: total memory as given; CUDA context, kernels and workspaces are "
            "the defaults for an unknown card (estimates)",
        ),
    )


def resolve_gpu(gpu: str | None = None, capacity: str | int | None = None) -> GpuProfile:
    """The CLI's ``--gpu NAME`` or ``--capacity SIZE`` (exactly one)."""
    if (gpu is None) == (capacity is None):
        raise GpuError("give either a GPU name (--gpu 'RTX 3060') or a capacity (--capacity 24GiB)")
    if gpu is not None:
        return find_profile(gpu)
    assert capacity is not None
    return adhoc_profile(capacity)

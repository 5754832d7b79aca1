"""GPU profiles: shipped cards, fuzzy lookup, ad-hoc capacity, cuBLAS rules, user (calibrated) overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vggexplorer.core.predict.gpus import (
    CUBLAS_DEFAULT_WORKSPACE,
    GiB,
    GpuError,
    GpuProfile,
    adhoc_profile,
    cublas_workspace_bytes,
    cublaslt_workspace_bytes,
    find_profile,
    list_profiles,
    load_profile,
    resolve_gpu,
    user_profile_dir,
)


@pytest.fixture(autouse=True)
def _no_user_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.delenv("CUBLASLT_WORKSPACE_SIZE", raising=False)


def test_shipped_profiles_cover_the_memory_classes() -> None:
    profs = list_profiles()
    assert len(profs) >= 8
    classes = {round(p.total_memory_bytes / GiB / 4) * 4 for p in profs}
    for gb in (8, 12, 16, 24, 40, 48, 80):
        assert any(abs(p.total_memory_bytes / GiB - gb) <= 0.12 * gb for p in profs), (gb, classes)
    for p in profs:
        assert p.estimated is True and p.sources, p.name
        assert 0 < p.cuda_context_bytes < 1 * GiB
        assert p.allocator_capacity_bytes < p.total_memory_bytes
        assert p.path.endswith(".json")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("RTX 3060", "NVIDIA GeForce RTX 3060"),
        ("3060", "NVIDIA GeForce RTX 3060"),
        ("rtx3060", "NVIDIA GeForce RTX 3060"),
        ("h100", "NVIDIA H100 80GB HBM3"),
        ("4060", "NVIDIA GeForce RTX 4060"),
        ("4060 Ti", "NVIDIA GeForce RTX 4060 Ti 16GB"),
        ("a100", "NVIDIA A100-SXM4-40GB"),
        ("A100 80GB", "NVIDIA A100-SXM4-80GB"),
        ("L40S", "NVIDIA L40S"),
        ("a6000", "NVIDIA RTX A6000"),
        ("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090"),
    ],
)
def test_fuzzy_lookup(query: str, expected: str) -> None:
    assert find_profile(query).name == expected


def test_unknown_and_ambiguous_names_list_choices() -> None:
    with pytest.raises(GpuError) as e:
        find_profile("voodoo")
    assert "RTX 3060" in str(e.value) and "H100" in str(e.value) and "--capacity" in str(e.value)
    with pytest.raises(GpuError, match="several"):
        find_profile("rtx")
    with pytest.raises(GpuError):
        find_profile("  ")


def test_adhoc_capacity() -> None:
    p = adhoc_profile("24GiB")
    assert p.total_memory_bytes == 24 * GiB and p.estimated
    assert resolve_gpu(capacity="512MiB").total_memory_bytes == 512 * 1024**2
    with pytest.raises(GpuError):
        adhoc_profile("lots")
    with pytest.raises(GpuError):
        resolve_gpu()
    with pytest.raises(GpuError):
        resolve_gpu("3060", "24GiB")


def test_cublas_workspace_rules() -> None:
    assert CUBLAS_DEFAULT_WORKSPACE == 8_519_680
    assert cublas_workspace_bytes((8, 6), (2, 13)) == 8_519_680
    assert cublas_workspace_bytes((8, 0), (2, 13)) == 8_519_680
    assert cublas_workspace_bytes((9, 0), (2, 13)) == 32 * 1024**2
    assert cublas_workspace_bytes((12, 0), (2, 13)) == 32 * 1024**2
    assert cublas_workspace_bytes((12, 0), (2, 6)) == 8_519_680
    assert cublas_workspace_bytes((8, 6), (2, 13), env=":4096:8") == 4096 * 1024 * 8
    assert cublas_workspace_bytes((8, 6), (2, 13), env=":4096:2:16:8") == 8_519_680
    assert cublas_workspace_bytes((8, 6), (2, 13), env="garbage") == 8_519_680
    assert cublaslt_workspace_bytes(8_519_680) == 1024 * 1024
    assert cublaslt_workspace_bytes(512 * 1024) == 512 * 1024  # capped at the cuBLAS workspace
    assert cublaslt_workspace_bytes(8_519_680, "4096") == 4096 * 1024
    assert cublaslt_workspace_bytes(8_519_680, "4096", unified=True) == 0
    assert find_profile("h100").cublas_workspace_bytes == 32 * 1024**2
    assert find_profile("3060").cublas_workspace_bytes == 8_519_680


def test_env_override_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    assert find_profile("3060").cublas_workspace_bytes == 16 * 1024 * 8


def test_conv_workspace_policy() -> None:
    pol = find_profile("3060").conv_workspace
    assert pol.workspace(1000, (3, 3)) == 250
    assert pol.workspace(10 * GiB, (3, 3)) == pol.cap_bytes
    assert pol.workspace(1000, (1, 1)) == 0
    assert not pol.measured


def test_round_trip_and_calibrated_profile_overrides(tmp_path: Path) -> None:
    shipped = find_profile("RTX 3060")
    calibrated = GpuProfile(
        name=shipped.name,
        total_memory_bytes=shipped.total_memory_bytes + 1,
        compute_capability=(8, 6),
        cuda_context_bytes=123 * 1024**2,
        estimated=False,
        sources=("calibrated",),
    )
    calibrated.save(user_profile_dir() / "mine.json")
    got = find_profile("3060")
    assert got.estimated is False and got.cuda_context_bytes == 123 * 1024**2
    assert load_profile(user_profile_dir() / "mine.json").to_dict() == calibrated.to_dict()
    # a broken user file does not hide the shipped profiles
    (user_profile_dir() / "broken.json").write_text("{")
    assert len(list_profiles()) >= 8


@pytest.mark.parametrize(
    "patch",
    [
        {"format": "other"},
        {"total_memory_bytes": -1},
        {"total_memory_bytes": True},
        {"compute_capability": [8]},
        {"conv_workspace": {"fraction_of_input": "lots"}},
        {"name": ""},
        {"aliases": "3060"},
    ],
)
def test_bad_profiles_are_refused(tmp_path: Path, patch: dict[str, object]) -> None:
    d = find_profile("3060").to_dict()
    d.update(patch)
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(d))
    with pytest.raises(GpuError):
        load_profile(f)
    f.write_text("not json")
    with pytest.raises(GpuError, match="JSON"):
        load_profile(f)


def test_cublaslt_shares_the_cublas_workspace_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch 2.13, aten/src/ATen/cuda/CublasHandlePool.cpp ``unified_cublas_and_lt_workspaces``: unified
    unless ``TORCH_CUBLASLT_UNIFIED_WORKSPACE`` is false (``c10::utils::check_env`` spellings); then
    ``getCUDABlasLtWorkspace`` returns the cuBLAS workspace, and torch/backends/cuda/__init__.py documents
    that it "physically reuses the same allocation". A derived profile therefore adds no 1 MiB of its own."""
    from vggexplorer.core.predict.gpus import cublaslt_unified

    monkeypatch.delenv("TORCH_CUBLASLT_UNIFIED_WORKSPACE", raising=False)
    monkeypatch.delenv("CUBLASLT_WORKSPACE_SIZE", raising=False)
    assert cublaslt_unified(None) and cublaslt_unified("1") and cublaslt_unified("maybe")
    assert not cublaslt_unified("0") and not cublaslt_unified("off")
    assert find_profile("3060").cublaslt_workspace_bytes == 0
    monkeypatch.setenv("TORCH_CUBLASLT_UNIFIED_WORKSPACE", "0")
    assert find_profile("3060").cublaslt_workspace_bytes == 1024 * 1024


def test_a_profile_that_is_not_a_regular_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A FIFO reports size 0 and blocks a plain read forever; like every user file, a GPU profile is read
    through the one bounded read, which refuses anything but a regular file before opening it."""
    import os

    from vggexplorer.core.predict.gpus import GpuError, load_profile

    fifo = tmp_path / "profile.json"
    os.mkfifo(fifo)
    with pytest.raises(GpuError, match="not a regular file"):
        load_profile(fifo)
    big = tmp_path / "big.json"
    big.write_text(" " * (2 << 20))
    with pytest.raises(GpuError, match="over the limit"):
        load_profile(big)

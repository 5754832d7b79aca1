"""Prediction without the GPU: what a chosen GPU would show for a RunConfig — allocated, reserved,
nvidia-smi, fits or "out of memory at layer X in phase Y", and the largest batch that fits.

``faketrace`` runs the engine's own step program on meta (or CPU fake) tensors and maps it to what CUDA
allocates; ``replay`` inserts the workspaces a tensor trace cannot see (cuBLAS, cuBLASLt, cuDNN, from the
GPU profile in ``gpus``) and replays everything through the caching-allocator model; ``batch_model`` makes
every event affine in the batch from two traces, so other batches are replays only; ``predictor`` is the
API (:class:`Predictor`, ``predict``, ``max_batch``) and ``cache`` its on-disk store, which answers a known
config without importing torch; ``calibrate`` measures a real card's context, kernels and workspaces into
a profile; ``service`` is the prediction loop the GUI runs in a child process.
"""

from vggexplorer._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "calibrate": ["CalibrationError"],
        "gpus": ["GpuProfile", "adhoc_profile", "find_profile", "list_profiles"],
        "predictor": ["MAX_BATCH", "Prediction", "Predictor", "max_batch", "predict"],
    },
)

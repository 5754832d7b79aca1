"""The model stage, at the bottom of the data path: what a run is of, as plain data.

``layers`` describes the layer types a head may hold and their parameters; ``head`` is the immutable
:class:`HeadSpec` (JSON ``vggexplorer.head/1``), its presets and the undoable :class:`HeadDocument`;
``backbone`` holds the VGG backbones and builds the ``nn.Module`` (torch is imported only there, inside the
functions that build); ``shapes`` infers every layer's output shape without torch and says why a layer
cannot run; ``config`` is the torch-free :class:`RunConfig` every later stage reads (measured runs,
predictions, the GUI's settings).
"""

from vggexplorer._lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "backbone": ["build_model", "head_module_names"],
        "config": ["DTYPES", "MODES", "OPTIMIZERS", "ZERO_GRAD", "ConfigError", "RunConfig"],
        "head": ["HeadDocument", "HeadSpec", "LayerSpec", "load_head", "preset"],
        "layers": ["LAYER_TYPES"],
        "shapes": ["ShapeReport", "fix_chain", "infer_shapes"],
    },
)

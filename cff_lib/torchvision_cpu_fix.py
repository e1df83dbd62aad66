"""Make the CUDA-built torchvision 0.28.0 importable on CPU-only torch 2.13.0.

Why: torchvision 0.28.0 is the only torchvision for torch 2.13, and its wheel is built for CUDA. On a CPU
torch its compiled extension ``_C.so`` cannot load, so the custom operators ``torchvision::nms``,
``roi_align``, ... are never defined, and ``torchvision/_meta_registrations.py`` fails at import with
``RuntimeError: operator torchvision::nms does not exist``. Everything that imports torchvision goes down
with it: open_clip, lpips, torchmetrics' image metrics, and transformers' model imports (which then report
a misleading "Could not import module").

What: before torchvision is first imported we try to load its ``_C`` ourselves. If it loads (a CUDA
machine, or a matching build) nothing else happens. If it does not, we *define* the operator schemas that
``_C`` would have defined, so the meta/fake registrations succeed. The ops get no kernels:
``torchvision.ops.nms`` and friends still raise torchvision's own "Couldn't load custom C++ ops". Nothing in
this project uses the detection ops; transforms, models (VGG-16, Inception) and io all work.

How it is triggered: ``install()`` puts a one-shot finder on ``sys.meta_path`` that runs the fix when
``torchvision`` is imported, and never imports torch earlier. ``cff_lib/__init__.py`` calls it, and
``install_pth()`` (run by ``make``) writes a ``.pth`` file into the
environment's site-packages so the hook is active even when a notebook imports open_clip before cff_lib.
See docs/environment.md.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig

PTH_NAME = "cff_torchvision_cpu_fix.pth"

# Schemas of torchvision 0.28's custom operators (argument names as in torchvision/_meta_registrations.py).
SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width,"
    " int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height,"
    " SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width,"
    " int sampling_ratio, bool aligned) -> Tensor",
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height,"
    " SymInt pooled_width, int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale,"
    " SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, SymInt channels,"
    " SymInt height, SymInt width) -> Tensor",
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height,"
    " SymInt pooled_width) -> (Tensor, Tensor)",
    "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, SymInt pooled_height,"
    " SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height,"
    " SymInt pooled_width) -> (Tensor, Tensor)",
    "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale,"
    " SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height,"
    " SymInt width) -> Tensor",
    "qroi_align(Tensor input, Tensor rois, float input_scale, int input_zero_point, float rois_scale,"
    " int rois_zero_point, float spatial_scale, SymInt pooled_height, SymInt pooled_width,"
    " int sampling_ratio, bool aligned) -> Tensor",
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h,"
    " SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups,"
    " SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask,"
    " Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h,"
    " SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask)"
    " -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)

_state: dict[str, object] = {"applied": None}  # None: not yet run; True: schemas defined; False: _C loaded


def _extension_path() -> str | None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for name in os.listdir(folder):
            if name.startswith("_C") and name.endswith((".so", ".pyd")):
                return os.path.join(folder, name)
    return None


def apply() -> bool:
    """Define torchvision's operator schemas if its ``_C`` cannot load. Returns True if it defined them."""
    if _state["applied"] is not None:
        return bool(_state["applied"])
    import torch

    path = _extension_path()
    if path is None:  # torchvision not installed: nothing to fix
        _state["applied"] = False
        return False
    try:
        torch.ops.load_library(path)
        _state["applied"] = False
        return False
    except (OSError, ImportError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "DEF")  # noqa: TID251 (kept alive in _state)
    for schema in SCHEMAS:
        lib.define(schema)
    _state["library"] = lib
    _state["applied"] = True
    return True


class _ImportHook:
    """A one-shot meta-path finder: runs ``apply()`` just before torchvision is imported."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _ImportHook)]
            apply()
        return None  # let the normal finders import it


def install() -> None:
    """Arrange for ``apply()`` to run when torchvision is first imported (or now, if it already was)."""
    if "torchvision" in sys.modules:
        return
    if not any(isinstance(f, _ImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _ImportHook())


def install_pth() -> str:
    """Write the .pth file that calls ``install()`` at every interpreter start of this environment."""
    target = os.path.join(sysconfig.get_paths()["purelib"], PTH_NAME)
    tmp = target + ".tmp"
    with open(tmp, "w") as f:
        f.write("import cff_lib.torchvision_cpu_fix as _cff_tv; _cff_tv.install()\n")
    os.replace(tmp, target)
    return target


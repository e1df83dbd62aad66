"""cff_lib: the thin library behind the ClipFaceFusion companion notebooks.

Importing the package is cheap (no torch import); each concern lives in its own module, whose docstring
names the paper section and equations it implements.
"""
from cff_lib import torchvision_cpu_fix as _torchvision_cpu_fix

_torchvision_cpu_fix.install()

__version__ = "0.1.0"

"""Import every model module so that each registers itself (for `available_models`: a run imports only its own
model file, see `base.model_class`)."""

import importlib
import pkgutil

from . import __path__ as _pkg_path

for _m in pkgutil.iter_modules(_pkg_path):
    if not _m.name.startswith("_") and _m.name != "base":
        importlib.import_module(f"{__package__}.{_m.name}")

"""A params alias of a registered model (models.<name> with arch: <other>) is named in the model's own errors."""

import pytest

from modalrec.errors import ParamError
from modalrec.models.base import ModelContext, build_model


def test_an_alias_error_names_the_alias_entry():
    ctx = ModelContext(n_items=5, max_len=4)
    with pytest.raises(ParamError, match=r"^parameter models\.sasrec_frozen\.modalities"):
        build_model("sasrec_frozen", {"item_repr": "frozen", "modalities": ["image"]}, ctx, arch="sasrec")
    with pytest.raises(ParamError, match=r"^parameter models\.sasrec\.modalities"):
        build_model("sasrec", {"item_repr": "frozen", "modalities": ["image"]}, ctx)

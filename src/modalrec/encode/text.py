"""Item text templates: ``"{title}. {brand}. {description}"`` -> one string per item, missing fields skipped cleanly.

A template is a prefix, then fields each followed by its separator. A missing (null/blank) field is dropped together
with its separator, and the last present field ends with the template's tail, so a missing brand gives
``"Title. Description"`` and a missing description ``"Title. Brand"`` (never ``"Title. . "``).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from ..errors import ParamError


@dataclass(frozen=True)
class Template:
    prefix: str
    fields: tuple[str, ...]
    seps: tuple[str, ...]     # separator after each field; the last one is the template's tail

    @classmethod
    def parse(cls, template: str, key: str = "encode.text.template") -> "Template":
        prefix, fields, seps = "", [], []
        try:
            parts = list(string.Formatter().parse(template))
        except ValueError as e:
            raise ParamError(key, f"bad template {template!r}: {e}") from None
        for literal, name, spec, conv in parts:
            if fields:
                seps[-1] += literal
            else:
                prefix += literal
            if name is not None:
                if not name.isidentifier() or spec or conv:
                    raise ParamError(key, f"template fields must be plain names like {{title}}, got {{{name}}}")
                fields.append(name)
                seps.append("")
        if not fields:
            raise ParamError(key, f"template {template!r} names no item field (e.g. '{{title}}. {{description}}')")
        return cls(prefix, tuple(fields), tuple(seps))

    def check_fields(self, available: list[str], key: str = "encode.text.template") -> list[str]:
        """The template's fields this dataset lacks (skipped, so one template serves several datasets); a
        ParamError when it has none of them."""
        absent = [f for f in self.fields if f not in available]
        if len(absent) == len(self.fields):
            raise ParamError(key, f"none of the template fields {list(self.fields)} exist; the prepared items have "
                                  f"{sorted(available)}")
        return absent

    def without(self, fields: list[str]) -> "Template":
        keep = [i for i, f in enumerate(self.fields) if f not in fields]
        seps = [self.seps[i] for i in keep]
        seps[-1] = self.seps[-1]           # the tail stays the template's tail
        return Template(self.prefix, tuple(self.fields[i] for i in keep), tuple(seps))

    def render(self, row: dict[str, object], lowercase: bool = False) -> str | None:
        """The item's text, or None when every field is missing."""
        present = []
        for f, sep in zip(self.fields, self.seps):
            v = row.get(f)
            if v is None:
                continue
            s = " ".join(str(v).split())      # collapse whitespace/newlines
            if s:
                present.append((s, sep))
        if not present:
            return None
        tail = self.seps[-1]
        text = self.prefix + "".join(v + sep for v, sep in present[:-1]) + present[-1][0] + tail
        text = text.strip()
        return text.lower() if lowercase else text

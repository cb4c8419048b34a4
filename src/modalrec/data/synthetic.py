"""The embedded default dataset: a seeded synthetic multi-modal homeware catalogue.

Why synthetic: the pipeline must run end to end on a fresh clone in minutes, offline, and the data must *reward*
models that use item content. Every item has latent attributes:

- ``category`` (8 product types), drawn in the image as a distinct silhouette (plate = circle, coaster = square, ...)
  and named in the text with synonyms;
- ``colour`` (8 well-separated hues), the fill colour of the silhouette and a colour word (with synonyms) in the text;
- ``material`` (ceramic / wood / metal / fabric), named in the text only (with synonyms);
- ``brand`` (text only) and per-item noise (position, scale, rotation, hue jitter, background tone, filler sentences),
  so two items with equal attributes never have identical content.

Images are deliberately plain (a solid silhouette on a background tinted with the item's colour). An ImageNet CNN's
pooled features are dominated by texture: an earlier version drew a pattern texture inside the shapes and
EfficientNet-Lite0's 5-NN colour agreement fell to 0.17 (chance 0.12) while the pattern took 0.95. Without the texture
category and colour both separate (figures in ``docs/synthetic.md``, from ``benchmarks/synthetic.py``).

User sequences are driven by the attributes, not by item identities: the next item's category is usually the
*complement* of the last item's category (a plate is followed by a coaster, a coaster by a pennant, ... a fixed cycle
``COMPLEMENT``), its colour usually one of the user's favourite colours and its material often the user's favourite
material; within the chosen attribute cell an item is picked by a Zipf popularity weight, and a fraction of steps
picks a globally popular item. Rare items therefore share attributes with popular ones: a model that sees the
attributes (through images or texts) can rank a rare item it has hardly seen in training, while an ID-only model
cannot. :func:`modalrec.analysis.probes.learnability_check` measures exactly that with count-based
predictors.

Output follows the reader contract (``docs/contracts.md``): ``generate()`` returns ``(interactions, items)`` polars
frames; images are PNG bytes in ``items.image_bytes`` (no loose files). Everything is a pure function of the
parameters and the seed (numpy ``default_rng``; PIL drawing and PNG encoding are deterministic).
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from ..errors import ParamError
from ..params import dataclass_from

# --------------------------------------------------------------------------------------------------------------------
# The attribute vocabulary. Order matters: the complement of category c is COMPLEMENT[c].

CATEGORIES = ["plate", "coaster", "pennant", "ornament", "clock", "tile", "kite", "badge"]
SHAPES = ["circle", "square", "triangle", "star", "ring", "hexagon", "diamond", "cross"]  # silhouette per category
CATEGORY_WORDS = {
    "plate": ["plate", "dinner plate", "dish", "side plate"],
    "coaster": ["coaster", "drink coaster", "cup mat", "table coaster"],
    "pennant": ["pennant", "bunting flag", "pennant flag", "triangle flag"],
    "ornament": ["ornament", "star ornament", "hanging decoration", "star decoration"],
    "clock": ["wall clock", "clock", "round clock", "kitchen clock"],
    "tile": ["tile", "wall tile", "hexagon tile", "mosaic tile"],
    "kite": ["kite", "diamond kite", "stunt kite", "beach kite"],
    "badge": ["badge", "pin badge", "cross badge", "enamel pin"],
}
CATEGORY_PATHS = {
    "plate": "Home > Kitchen > Tableware", "coaster": "Home > Kitchen > Table Linen",
    "pennant": "Home > Decor > Party", "ornament": "Home > Decor > Seasonal",
    "clock": "Home > Decor > Clocks", "tile": "Home > DIY > Tiles",
    "kite": "Toys > Outdoor > Kites", "badge": "Accessories > Pins",
}
# A fixed cycle: the category usually bought right after category c.
COMPLEMENT = [1, 4, 3, 6, 7, 0, 2, 5]  # plate->coaster->clock->badge->tile->plate; pennant->ornament->kite->pennant

COLOURS = ["red", "orange", "yellow", "green", "teal", "blue", "purple", "pink"]
COLOUR_RGB = [(215, 25, 30), (245, 130, 0), (245, 215, 0), (40, 160, 50),
              (0, 170, 170), (30, 60, 210), (125, 35, 170), (245, 100, 180)]
COLOUR_WORDS = {
    "red": ["red", "crimson", "scarlet", "cherry red"], "orange": ["orange", "tangerine", "burnt orange", "amber"],
    "yellow": ["yellow", "lemon", "mustard", "sunflower yellow"], "green": ["green", "emerald", "leaf green", "forest green"],
    "teal": ["teal", "turquoise", "aqua", "cyan"], "blue": ["blue", "cobalt", "royal blue", "navy"],
    "purple": ["purple", "violet", "plum", "lavender purple"], "pink": ["pink", "rose", "fuchsia", "blush pink"],
}
MATERIALS = ["ceramic", "wood", "metal", "fabric"]
MATERIAL_WORDS = {
    "ceramic": ["ceramic", "porcelain", "stoneware"], "wood": ["wooden", "oak", "bamboo"],
    "metal": ["metal", "steel", "tin"], "fabric": ["fabric", "cotton", "felt"],
}
STYLES = ["handmade", "minimalist", "classic", "modern", "rustic", "bold", "vintage", "playful", "elegant", "sturdy"]
FILLERS = [
    "Makes a thoughtful gift.", "Wipe clean with a damp cloth.", "Designed in a small studio.",
    "Ships in recyclable packaging.", "A customer favourite this season.", "Lightweight and durable.",
    "Pairs well with the rest of the range.", "Handmade, so each piece is slightly different.",
    "Limited edition run.", "Suitable for indoor use.", "Dishwasher safe where applicable.", "Fade resistant finish.",
]
BRAND_SYLLABLES = ["nor", "ka", "vel", "lu", "mi", "sto", "ren", "ba", "tor", "el", "fi", "ga", "ro", "sa", "dun"]
N_CELLS = len(CATEGORIES) * len(COLOURS) * len(MATERIALS)


@dataclass
class SyntheticConfig:
    """Every knob of the generator (mirrors ``params.yaml`` ``datasets.synthetic.options``)."""

    n_users: int = 2000
    n_items: int = 1000
    n_interactions: int = 20000     # target total; each user gets 5 + a geometric number of extra interactions
    min_len: int = 5                # every user has at least this many interactions
    max_len: int = 200
    seed: int = 2023
    image_size: int = 96            # rendered PNG side in pixels (encoders resize to their own input size)
    background_tint: float = 0.75   # how much of the item's colour tints the image background (0 = light grey)
    zipf_alpha: float = 1.5         # popularity weight of the item with popularity rank r is r^-alpha
    p_popular: float = 0.15         # a step picks a globally popular item (ignores attributes)
    p_complement: float = 0.65      # next category = COMPLEMENT[last category]
    p_same_category: float = 0.1    # next category = last category (look-alikes); else a random category
    p_colour: float = 0.75          # next colour = one of the user's favourite colours; else random
    p_material: float = 0.5          # next material = the user's favourite material; else random
    n_brands: int = 24
    start_timestamp: int = 1_577_836_800  # 2020-01-01 UTC
    with_ratings: bool = True

    def validate(self) -> None:
        def bad(key: str, msg: str) -> ParamError:
            return ParamError(f"datasets.synthetic.options.{key}", msg)

        for k in ("n_users", "n_items", "n_interactions", "min_len", "max_len", "image_size", "n_brands"):
            v = getattr(self, k)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise bad(k, f"must be a positive integer, got {v!r}")
        if self.max_len < self.min_len:
            raise bad("max_len", f"must be >= min_len ({self.min_len}), got {self.max_len}")
        if self.n_interactions < self.n_users * self.min_len:
            raise bad("n_interactions", f"must be >= n_users * min_len = {self.n_users * self.min_len}, "
                                        f"got {self.n_interactions}")
        if self.image_size < 16:
            raise bad("image_size", f"must be >= 16 pixels, got {self.image_size}")
        for k in ("background_tint", "p_popular", "p_complement", "p_same_category", "p_colour", "p_material"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise bad(k, f"must be a probability in [0, 1], got {v!r}")
        if self.p_complement + self.p_same_category > 1.0:
            raise bad("p_same_category", "p_complement + p_same_category must be <= 1")
        if not isinstance(self.zipf_alpha, (int, float)) or self.zipf_alpha < 0:
            raise bad("zipf_alpha", f"must be a non-negative number, got {self.zipf_alpha!r}")


def make_config(**options: Any) -> SyntheticConfig:
    """A validated config from keyword options; unknown keys are a ParamError naming the key."""
    cfg = dataclass_from(SyntheticConfig, options, "datasets.synthetic.options")
    cfg.validate()
    return cfg


# --------------------------------------------------------------------------------------------------------------------
# Items: latent attributes, images, texts.

def _item_attributes(cfg: SyntheticConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Category, colour, material, brand and popularity weight per item (0-based item index)."""
    n = cfg.n_items
    # Cover every attribute cell as evenly as possible (so rare items share cells with popular ones), then shuffle.
    cells = np.concatenate([np.tile(np.arange(N_CELLS), n // N_CELLS), rng.permutation(N_CELLS)[: n % N_CELLS]])
    cells = rng.permutation(cells)
    n_col, n_mat = len(COLOURS), len(MATERIALS)
    category, rest = np.divmod(cells, n_col * n_mat)
    colour, material = np.divmod(rest, n_mat)
    rank = rng.permutation(n) + 1                          # popularity rank, independent of the attributes
    weight = rank.astype(np.float64) ** (-cfg.zipf_alpha)
    brand = rng.integers(0, cfg.n_brands, size=n)
    return {"category": category, "colour": colour, "material": material, "brand": brand, "weight": weight}


def _brand_names(cfg: SyntheticConfig, rng: np.random.Generator) -> list[str]:
    names: list[str] = []
    while len(names) < cfg.n_brands:
        k = int(rng.integers(2, 4))
        name = "".join(BRAND_SYLLABLES[int(i)] for i in rng.integers(0, len(BRAND_SYLLABLES), size=k)).capitalize()
        if name not in names:
            names.append(name)
    return names


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    def ring(k: int, radius: float, phase: float) -> list[tuple[float, float]]:
        return [(cx + radius * math.cos(phase + rot + 2 * math.pi * i / k),
                 cy + radius * math.sin(phase + rot + 2 * math.pi * i / k)) for i in range(k)]

    if shape == "square":
        return ring(4, r * 1.0, math.pi / 4)
    if shape == "triangle":
        return ring(3, r * 1.1, -math.pi / 2)
    if shape == "hexagon":
        return ring(6, r, 0.0)
    if shape == "diamond":  # a tall rhombus, so it never looks like a rotated square
        return [(cx + dx * math.cos(rot) - dy * math.sin(rot), cy + dx * math.sin(rot) + dy * math.cos(rot))
                for dx, dy in [(0, -r * 1.1), (r * 0.6, 0), (0, r * 1.1), (-r * 0.6, 0)]]
    if shape == "star":
        outer, inner = ring(5, r * 1.1, -math.pi / 2), ring(5, r * 0.45, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    if shape == "cross":
        a, b = r * 0.95, r * 0.34
        pts = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
        return [(cx + x * math.cos(rot) - y * math.sin(rot), cy + x * math.sin(rot) + y * math.cos(rot)) for x, y in pts]
    raise ValueError(shape)


def render_image(category: int, colour: int, size: int, rng: np.random.Generator, tint: float = 0.75) -> bytes:
    """PNG bytes of one item: the category's silhouette in the item's colour on a background tinted with it.

    Large solid shapes with a dark outline and saturated colours, so an ImageNet CNN separates shape and colour.
    """
    from PIL import Image, ImageDraw

    s = size
    jitter = rng.uniform(-18, 18, size=3)
    base = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLOUR_RGB[colour], jitter))
    grey = 235 + rng.integers(-15, 16, size=3)
    bg = tuple(int(g * (1 - tint) + c * tint) for g, c in zip(grey, base))
    outline = tuple(int(c * 0.4) for c in base)
    img = Image.new("RGB", (s, s), bg)
    draw = ImageDraw.Draw(img)
    # The shape stays inside the central 85% (ImageNet's resize-256/crop-224 keeps the central 87.5%).
    cx, cy = s / 2 + rng.uniform(-0.04, 0.04, size=2) * s
    r = s * rng.uniform(0.34, 0.39)
    rot = math.radians(float(rng.uniform(-12, 12)))
    width = max(1, s // 32)
    shape = SHAPES[category]
    if shape in ("circle", "ring"):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=base, outline=outline, width=width)
        if shape == "ring":
            ri = r * 0.5
            draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=bg, outline=outline, width=width)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, rot), fill=base, outline=outline, width=width)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _item_texts(cfg: SyntheticConfig, attrs: dict[str, np.ndarray], brands: list[str],
                rng: np.random.Generator) -> tuple[list[str], list[str], list[str]]:
    """Title, categories path and description per item: templated sentences with synonyms and filler noise.

    Every text names the category, the colour and the material (with varying synonyms and word order); brand, style
    words and filler sentences are noise, so texts are never a trivial id of the attribute cell.
    """
    titles, cats, descs = [], [], []
    pick = lambda seq: seq[int(rng.integers(0, len(seq)))]  # noqa: E731
    for i in range(cfg.n_items):
        cat, col, mat = (CATEGORIES[attrs["category"][i]], COLOURS[attrs["colour"][i]],
                         MATERIALS[attrs["material"][i]])
        noun, cw, mw = pick(CATEGORY_WORDS[cat]), pick(COLOUR_WORDS[col]), pick(MATERIAL_WORDS[mat])
        cw2, style, brand = pick(COLOUR_WORDS[col]), pick(STYLES), brands[attrs["brand"][i]]
        title = pick([f"{brand} {cw} {noun}", f"{brand} {style} {cw} {noun}", f"{cw} {mw} {noun} by {brand}"]).title()
        lead = pick([
            f"A {style} {mw} {noun} in {cw2}.",
            f"This {cw2} {noun} is made of {mw} with a {style} look.",
            f"{mw.capitalize()} {noun}, {cw2}, {style} design.",
            f"Our {style} {cw2} {noun} in {mw}.",
        ])
        k = int(rng.integers(1, 3))
        extra = " ".join(FILLERS[int(j)] for j in rng.choice(len(FILLERS), size=k, replace=False))
        titles.append(title)
        cats.append(CATEGORY_PATHS[cat])
        descs.append(f"{lead} {extra}")
    return titles, cats, descs


# --------------------------------------------------------------------------------------------------------------------
# Interactions.

def _pools(attrs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per attribute cell, the items to draw from and their cumulative popularity (flattened CSR-like arrays).

    An empty cell (small catalogues) falls back to its (category, colour) items, then its category's, then all items.
    Returns ``(pool_items, pool_cum, pool_ptr)``: cell c draws from ``pool_items[ptr[c]:ptr[c+1]]``.
    """
    n_col, n_mat = len(COLOURS), len(MATERIALS)
    cell = (attrs["category"] * n_col + attrs["colour"]) * n_mat + attrs["material"]
    cc = attrs["category"] * n_col + attrs["colour"]
    items_all = np.arange(len(cell))
    pool_items, pool_cum, ptr = [], [], [0]
    for c in range(N_CELLS):
        members = items_all[cell == c]
        if len(members) == 0:
            members = items_all[cc == c // n_mat]
        if len(members) == 0:
            members = items_all[attrs["category"] == c // (n_col * n_mat)]
        if len(members) == 0:
            members = items_all
        w = attrs["weight"][members]
        pool_items.append(members)
        pool_cum.append(np.cumsum(w) / w.sum())
        ptr.append(ptr[-1] + len(members))
    return np.concatenate(pool_items), np.concatenate(pool_cum), np.asarray(ptr)


def _interactions(cfg: SyntheticConfig, attrs: dict[str, np.ndarray],
                  rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Simulate all users step by step (vectorised over users). Returns flat arrays user, item, step, rating, ts."""
    U, n_cat, n_col, n_mat = cfg.n_users, len(CATEGORIES), len(COLOURS), len(MATERIALS)
    extra_mean = cfg.n_interactions / U - cfg.min_len
    if extra_mean > 0:
        extra = rng.geometric(1.0 / (extra_mean + 1.0), size=U) - 1
    else:
        extra = np.zeros(U, dtype=np.int64)
    lengths = np.minimum(cfg.min_len + extra, cfg.max_len)

    # User tastes: one or two favourite colours, one favourite material (colour popularity is mildly skewed).
    colour_pop = rng.dirichlet(np.full(n_col, 3.0))
    fav1 = rng.choice(n_col, size=U, p=colour_pop)
    fav2 = np.where(rng.random(U) < 0.5, rng.choice(n_col, size=U, p=colour_pop), fav1)
    fav_mat = rng.integers(0, n_mat, size=U)

    pool_items, pool_cum, ptr = _pools(attrs)
    # Each pool's CDF shifted by its cell index: one sorted key array serves every cell's searchsorted at once.
    pool_key = np.repeat(np.arange(N_CELLS), np.diff(ptr)) + pool_cum
    global_cum = np.cumsum(attrs["weight"]) / attrs["weight"].sum()
    comp = np.asarray(COMPLEMENT)

    T = int(lengths.max())
    items = np.full((U, T), -1, dtype=np.int64)
    last_cat = rng.integers(0, n_cat, size=U)
    for t in range(T):
        active = np.flatnonzero(lengths > t)
        n = len(active)
        u_r = rng.random((n, 6))
        # Category: complement of the last one / same / random (the first step has no last item: random).
        if t == 0:
            cat = last_cat[active]
        else:
            lc = last_cat[active]
            cat = np.where(u_r[:, 0] < cfg.p_complement, comp[lc],
                           np.where(u_r[:, 0] < cfg.p_complement + cfg.p_same_category, lc,
                                    rng.integers(0, n_cat, size=n)))
        fav = np.where(u_r[:, 1] < 0.5, fav1[active], fav2[active])
        col = np.where(u_r[:, 2] < cfg.p_colour, fav, rng.integers(0, n_col, size=n))
        mat = np.where(u_r[:, 3] < cfg.p_material, fav_mat[active], rng.integers(0, n_mat, size=n))
        cell = (cat * n_col + col) * n_mat + mat
        # Draw an item inside the cell by popularity: searchsorted within the cell's slice of the flat CDF.
        lo, hi = ptr[cell], ptr[cell + 1]
        pos = np.clip(np.searchsorted(pool_key, cell + u_r[:, 4], side="right"), lo, hi - 1)
        chosen = pool_items[pos]
        popular = rng.random(n) < cfg.p_popular
        if popular.any():
            g = np.searchsorted(global_cum, rng.random(int(popular.sum())), side="right")
            chosen[popular] = np.minimum(g, cfg.n_items - 1)
        items[active, t] = chosen
        last_cat[active] = attrs["category"][chosen]

    mask = items >= 0
    user = np.repeat(np.arange(U), lengths)
    item = items[mask]
    step = np.concatenate([np.arange(L) for L in lengths])
    # Timestamps: a random start in the first year, then gaps of 1 minute to a few days (strictly increasing).
    start = cfg.start_timestamp + rng.integers(0, 365 * 86400, size=U)
    gaps = 60 + rng.exponential(2 * 86400, size=len(item)).astype(np.int64)
    ts = np.empty(len(item), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    for u in range(U):
        a, b = offsets[u], offsets[u + 1]
        ts[a:b] = start[u] + np.cumsum(gaps[a:b])
    # Ratings: higher when the item matches the user's colour taste (so a rating threshold is meaningful).
    match = (attrs["colour"][item] == fav1[user]) | (attrs["colour"][item] == fav2[user])
    rating = np.clip(np.round(3.4 + 1.0 * match + rng.normal(0, 0.8, size=len(item))), 1, 5).astype(np.float32)
    return user, item, step, rating, ts


# --------------------------------------------------------------------------------------------------------------------
# Public API.

def generate(return_attributes: bool = False, **options: Any):
    """Generate the catalogue: ``(interactions, items)`` polars frames following the reader contract.

    interactions: ``user_orig`` str, ``item_orig`` str, ``timestamp`` int64, ``order`` int64 (row position; rows are
    in global time order like a log file), ``rating`` float32 (null when ``with_ratings=False``).
    items: ``item_orig``, ``title``, ``brand``, ``categories``, ``description`` (str), ``image_path`` (null str),
    ``image_bytes`` (PNG). With ``return_attributes=True`` a third frame gives the latent attributes per item
    (``item_orig``, ``category``, ``colour``, ``material``, ``brand_id`` as ints, ``popularity_weight``), for
    analyses and tests only: it is never part of the dataset the models see.
    """
    cfg = make_config(**options)
    root = np.random.SeedSequence(cfg.seed)
    rng_attr, rng_img, rng_text, rng_seq = (np.random.default_rng(s) for s in root.spawn(4))
    attrs = _item_attributes(cfg, rng_attr)
    brands = _brand_names(cfg, rng_attr)
    item_ids = [f"SYN{i:06d}" for i in range(cfg.n_items)]

    images = [render_image(int(attrs["category"][i]), int(attrs["colour"][i]), cfg.image_size, rng_img,
                           cfg.background_tint) for i in range(cfg.n_items)]
    titles, cats, descs = _item_texts(cfg, attrs, brands, rng_text)
    items = pl.DataFrame({
        "item_orig": item_ids, "title": titles, "brand": [brands[b] for b in attrs["brand"]],
        "categories": cats, "description": descs,
        "image_path": pl.Series("image_path", [None] * cfg.n_items, dtype=pl.String),
        "image_bytes": pl.Series("image_bytes", images, dtype=pl.Binary),
    })

    user, item, step, rating, ts = _interactions(cfg, attrs, rng_seq)
    # Global log order: by timestamp, ties by user then step (stable, deterministic).
    perm = np.lexsort((step, user, ts))
    n = len(perm)
    interactions = pl.DataFrame({
        "user_orig": pl.Series([f"U{u:06d}" for u in user[perm]], dtype=pl.String),
        "item_orig": pl.Series(np.asarray(item_ids, dtype=object)[item[perm]].tolist(), dtype=pl.String),
        "timestamp": pl.Series(ts[perm], dtype=pl.Int64),
        "order": pl.Series(np.arange(n), dtype=pl.Int64),
        "rating": pl.Series(rating[perm] if cfg.with_ratings else [None] * n, dtype=pl.Float32),
    })
    if not return_attributes:
        return interactions, items
    attributes = pl.DataFrame({
        "item_orig": item_ids,
        "category": pl.Series(attrs["category"], dtype=pl.Int32), "colour": pl.Series(attrs["colour"], dtype=pl.Int32),
        "material": pl.Series(attrs["material"], dtype=pl.Int32), "brand_id": pl.Series(attrs["brand"], dtype=pl.Int32),
        "popularity_weight": attrs["weight"],
    })
    return interactions, items, attributes


def default_options() -> dict[str, Any]:
    """The generator's defaults as a plain dict (what ``params.yaml`` ``datasets.synthetic.options`` mirrors)."""
    return asdict(SyntheticConfig())

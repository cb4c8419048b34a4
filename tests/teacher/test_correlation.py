"""Every ξ against a hand computation; the dissected split; bad D is a clear error."""

import math

import pytest
import torch

from modalrec.errors import ParamError
from modalrec.teacher.correlation import (check_split, dissected, holistic, matrix_xi, normalise_xi, split_cosines,
                                          unit_split)

A = torch.tensor([1.0, 0.0, 2.0, 2.0])
B = torch.tensor([0.0, 3.0, 4.0, 0.0])


@pytest.mark.parametrize("xi, want", [
    ("cos", 8.0 / (3.0 * 5.0)),                    # a·b = 8, |a| = 3, |b| = 5
    ("dot", 8.0),
    ("euclidean", math.sqrt(1 + 9 + 4 + 4)),       # a − b = (1, −3, −2, 2)
    ("manhattan", 1 + 3 + 2 + 2),
])
def test_holistic_by_hand(xi, want):
    assert holistic(A, B, xi).item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("xi, want", [
    # parts: a = (1, 0 | 2, 2), b = (0, 3 | 4, 0)
    ("cos", [0.0, 8.0 / (math.sqrt(8) * 4.0)]),
    ("dot", [0.0, 8.0]),
    ("euclidean", [math.sqrt(1 + 9), math.sqrt(4 + 4)]),
    ("manhattan", [4.0, 4.0]),
])
def test_dissected_by_hand(xi, want):
    got = dissected(A, B, 2, xi)
    assert got.shape == (2,)
    assert got.tolist() == pytest.approx(want, rel=1e-6)


def test_cosine_of_a_zero_vector_is_zero():
    z = torch.zeros(4)
    assert holistic(z, A, "cos").item() == 0.0
    assert dissected(z, A, 2, "cos").tolist() == [0.0, 0.0]
    assert matrix_xi(torch.stack([z, A]), torch.stack([z, A]), "cos")[0].tolist() == [0.0, 0.0]


def test_unit_split_factors_give_the_cosines():
    """The teacher's fast path: holistic and per-part cosines from per-vector factors equal the direct definitions,
    by hand for A, B (parts (1, 0)·(0, 3) = 0 and (2, 2)·(4, 0) = 8: cosines 0 and 1/√2; holistic 8/15), for random
    rows, and with zero vectors and zero parts (cosine 0)."""
    (ua, wa), (ub, wb) = unit_split(A, 2), unit_split(B, 2)
    h, c = split_cosines(ua, wa, ub, wb, 2)
    assert h.item() == pytest.approx(8 / 15) and c.tolist() == pytest.approx([0.0, 1 / math.sqrt(2)])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 16, generator=g) * 2 - 1
    x[3] = 0  # a zero vector
    x[5, 4:8] = 0  # a zero part
    u, w = unit_split(x, 4)
    i, j = torch.randint(0, 40, (2, 300), generator=g)
    i[:4], j[:4] = torch.tensor([3, 3, 5, 5]), torch.tensor([7, 3, 8, 5])
    h, c = split_cosines(u[i], w[i], u[j], w[j], 4)
    torch.testing.assert_close(h, holistic(x[i], x[j], "cos"), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c, dissected(x[i], x[j], 4, "cos"), rtol=1e-5, atol=1e-6)
    assert h[:2].tolist() == [0.0, 0.0] and c[2, 1].item() == 0.0 and c[3, 1].item() == 0.0


@pytest.mark.parametrize("xi", ["cos", "dot", "euclidean", "manhattan"])
def test_matrix_form_equals_pair_form(xi):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 5, 8, generator=g)
    m = matrix_xi(x, x, xi)
    ii, jj = torch.meshgrid(torch.arange(5), torch.arange(5), indexing="ij")
    p = holistic(x[:, ii], x[:, jj], xi)
    torch.testing.assert_close(m, p, rtol=1e-5, atol=1e-5)


def test_aliases_and_errors():
    assert normalise_xi("cosine") == "cos" and normalise_xi("euc") == "euclidean" and normalise_xi("man") == "manhattan"
    with pytest.raises(ParamError, match="kdsr.xi"):
        normalise_xi("pearson")
    assert check_split(128, 8) == 16
    with pytest.raises(ParamError, match=r"kdsr\.D.*does not divide.*128"):
        check_split(128, 6)
    with pytest.raises(ParamError, match="kdsr.D"):
        check_split(128, 0)

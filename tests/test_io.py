"""modalrec.io: atomic writes leave complete files with the usual permissions, or nothing."""

import os
import stat

import pyarrow as pa
import pytest

from modalrec.io import atomic_path, read_json, read_parquet_meta, write_json, write_parquet


@pytest.fixture
def restore_umask():
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_outputs_get_default_permissions_modulo_umask(tmp_path, restore_umask, mask, expected):
    os.umask(mask)
    write_json(tmp_path / "a.json", {"x": 1})
    write_parquet(tmp_path / "t.parquet", pa.table({"a": [1, 2]}), meta={"k": "v"})
    with atomic_path(tmp_path / "sub" / "b.txt") as tmp:
        assert _mode(tmp) == expected          # already while the block writes (a writer that truncates keeps it)
        tmp.write_text("hello")
    assert _mode(tmp_path / "a.json") == expected
    assert _mode(tmp_path / "t.parquet") == expected
    assert _mode(tmp_path / "sub" / "b.txt") == expected
    assert read_json(tmp_path / "a.json") == {"x": 1}
    assert read_parquet_meta(tmp_path / "t.parquet") == {"k": "v"}


def test_failed_block_leaves_previous_output_and_no_temp(tmp_path):
    out = tmp_path / "a.json"
    write_json(out, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert read_json(out) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_text_and_json_readers_name_the_file_and_line(tmp_path):
    from modalrec.errors import DataError
    from modalrec.io import read_json, read_text
    from modalrec.params import load_params

    binary = tmp_path / "b.json"
    binary.write_bytes(b'{"a": 1,\n "b": "\xff"}\n')
    with pytest.raises(DataError, match=r"b\.json:2: not UTF-8 text"):
        read_text(binary)
    with pytest.raises(DataError, match=r"b\.json:2: not UTF-8 text"):
        read_json(binary)
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,\n "b": }\n')
    with pytest.raises(DataError, match=r"bad\.json:2: not valid JSON"):
        read_json(bad)
    yml = tmp_path / "params.yaml"
    yml.write_text("base:\n  dataset: x\n  seeds: [1\n")
    with pytest.raises(DataError, match=r"params\.yaml:\d+: not valid YAML"):
        load_params(yml)
    yml.write_bytes(b"base: {dataset: \xfe}\n")
    with pytest.raises(DataError, match=r"params\.yaml:1: not UTF-8 text"):
        load_params(yml)

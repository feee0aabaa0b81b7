from pathlib import Path

import pytest

from verge.settings import DEFAULT_CAPTIONS, Settings, SettingsError, settings_table


def test_defaults_are_the_embedded_setup():
    s = Settings.from_env({})
    assert s.encoder == "ViT-B-32" and s.pretrained == "openai"
    assert s.captions == DEFAULT_CAPTIONS
    assert s.route_band == (0.4, 0.6)
    assert s.embedded_broker
    assert s.resolved_database_url == f"sqlite:///{(Path('var') / 'verge.db').resolve()}"
    assert s.resolved_blob_dir == Path("var") / "blobs"


def test_values_are_parsed():
    s = Settings.from_env({"VERGE_ROUTE_BAND": "0.3, 0.7", "VERGE_CHUNK_SIZE": "8",
                           "VERGE_CAPTIONS": "a field|a road", "VERGE_DEVICE": "CUDA:1",
                           "VERGE_BROKER_URL": "redis://h:6379/0"})
    assert s.route_band == (0.3, 0.7) and s.chunk_size == 8
    assert s.captions == ("a field", "a road") and s.device == "cuda:1"
    assert not s.embedded_broker


@pytest.mark.parametrize("env, value", [
    ("VERGE_CHUNK_SIZE", "0"), ("VERGE_CHUNK_SIZE", "many"), ("VERGE_ROUTE_BAND", "0.7,0.3"),
    ("VERGE_AUDIT_FRACTION", "1.5"), ("VERGE_DEVICE", "tpu"), ("VERGE_CAPTIONS", "only one"),
    ("VERGE_ENCODER", "  "), ("VERGE_REVIEWS_PER_TASK", "0"), ("VERGE_REVIEWS_PER_TASK", "0.5"),
])
def test_a_bad_value_names_its_setting(env, value):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({env: value})
    assert str(err.value).startswith(f"{env}={value!r} is not valid")


def test_the_readme_settings_table_is_exactly_what_verge_settings_prints():
    from click.testing import CliRunner

    from verge.cli import main

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = CliRunner().invoke(main, ["settings", "--markdown"]).output
    assert len(table.splitlines()) == len(settings_table()) + 2
    assert table.strip() in readme, "README's settings table is stale: paste `verge settings --markdown`"

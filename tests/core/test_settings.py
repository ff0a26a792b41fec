from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import Settings


def test_env_nesting_and_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "shoprank.yaml"
    config.write_text("retrieval:\n  rrf_k: 30\n  dense_index: hnsw\nindex_name: shop1\n")
    monkeypatch.setenv("SHOPRANK_CONFIG", str(config))
    monkeypatch.setenv("SHOPRANK_RETRIEVAL__RRF_K", "10")
    settings = Settings()
    assert settings.retrieval.rrf_k == 10  # env beats the file
    assert settings.retrieval.dense_index == "hnsw" and settings.index_name == "shop1"


def test_unknown_keys_fail_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "shoprank.yaml"
    config.write_text("retrieval:\n  rrf_kk: 30\n")
    monkeypatch.setenv("SHOPRANK_CONFIG", str(config))
    with pytest.raises(ValidationError, match="rrf_kk"):
        Settings()


def test_a_kafka_bootstrap_is_read_as_kafka_clients_read_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.service_settings import check_kafka_bootstrap as kafka_bootstrap

    for blank in ("", " "):  # no Kafka, as unset
        monkeypatch.setenv("SHOPRANK_EVENTS__KAFKA_BOOTSTRAP", blank)
        assert Settings().events.kafka_bootstrap is None

    for value in ("127.0.0.1:9092", "b1:9092,b2:9093", "[::1]:9092", "PLAINTEXT://kafka.internal:9092", "kafka"):
        assert kafka_bootstrap(value) == value  # the port defaults to 9092; a protocol prefix is ignored
    for value in ("a b:9092", "b1:9092,", ":9092", "b1:x", "[::1]9092"):
        with pytest.raises(ValueError, match="is not HOST"):
            kafka_bootstrap(value)


def test_ranges_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPRANK_RETRIEVAL__RRF_K", "0")
    with pytest.raises(ValidationError, match="rrf_k"):
        Settings()


@pytest.mark.parametrize(("name", "value", "said"), [
    ("SHOPRANK_LOG_LEVEL", "verbose", "SHOPRANK_LOG_LEVEL='VERBOSE'"),
    ("SHOPRANK_SERVING__STAGE_BUDGETS_MS", '{"teachr": 60}', "'student', 'teacher', 'ltr' or 'rules'"),
    ("SHOPRANK_SERVING__STAGE_BUDGETS_MS", "teacher=5", "SHOPRANK_SERVING__STAGE_BUDGETS_MS='teacher=5' is not "
     "JSON: give JSON, e.g. SHOPRANK_SERVING__STAGE_BUDGETS_MS='{\"student\": 600.0}'"),
    # a list in a section: the variable and its value named, not pydantic-settings' "error parsing field api"
    ("SHOPRANK_API__CORS_ORIGINS", "https://a.com, https://b.com", "SHOPRANK_API__CORS_ORIGINS='https://a.com, "
     "https://b.com' is not JSON: give JSON, e.g. SHOPRANK_API__CORS_ORIGINS='[\"https://a.com\", \"https://b.com\"]'"),
    ("SHOPRANK_SERVING__STAGE_BUDGETS_MS", '{"teacher": -5}',
     "serving.stage_budgets_ms.teacher (in SHOPRANK_SERVING__STAGE_BUDGETS_MS)=-5: Input should be greater than 0"),
    # an empty path is the working directory: refused, not artifacts and keys written where the command runs
    ("SHOPRANK_HOME", "", "SHOPRANK_HOME='': Value error, empty; give the artifact home's folder"),
    ("SHOPRANK_CATALOG", " ", "SHOPRANK_CATALOG=' ': Value error, empty; give a CSV, Parquet or JSONL catalog file"),
    ("SHOPRANK_SERVING__SCORE_STORE_URL", "redis://127.0.0.1:abc/1", "not a Redis URL"),
    # an empty address is every interface to uvicorn: a blank setting must not expose the server
    ("SHOPRANK_API__HOST", "", "SHOPRANK_API__HOST='': Value error, '' is not a bind address: give an IP address"),
    ("SHOPRANK_API__HOST", " ", "' ' is not a bind address"),
    # a bootstrap list Kafka's clients would only fail on, in a loop, long after the server started
    ("SHOPRANK_EVENTS__KAFKA_BOOTSTRAP", "not a host", "'not a host' of 'not a host' is not HOST[:PORT]"),
    ("SHOPRANK_EVENTS__KAFKA_BOOTSTRAP", "b1:9092,b2:99999", "'b2:99999' of 'b1:9092,b2:99999' is not HOST[:PORT]"),
])
def test_bad_settings_are_named_with_what_is_allowed(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                                     said: str) -> None:
    from core.errors import InvalidInput
    from core.settings import get_settings

    monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        with pytest.raises(InvalidInput, match=re.escape(said)):
            get_settings()
    finally:
        get_settings.cache_clear()


def _refused(monkeypatch: pytest.MonkeyPatch, config: Path, file: str, variable: str, value: str) -> str:
    """The message of the settings' refusal with ``file`` as SHOPRANK_CONFIG (written at ``config``) and
    ``variable`` set to ``value``."""
    from core.errors import InvalidInput
    from core.settings import get_settings

    config.write_text(file)
    monkeypatch.setenv("SHOPRANK_CONFIG", str(config))
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    try:
        with pytest.raises(InvalidInput) as raised:
            get_settings()
    finally:
        get_settings.cache_clear()
    return raised.value.message


def test_a_bad_variable_is_blamed_on_the_variable_not_the_config_file(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    config = tmp_path / "shoprank.yaml"
    said = _refused(monkeypatch, config, "log_level: info\nretrieval:\n  rrf_k: 0\n",
                    "SHOPRANK_SERVING__STAGE_BUDGETS_MS", '{"teacher": -1}')
    assert "serving.stage_budgets_ms.teacher (in SHOPRANK_SERVING__STAGE_BUDGETS_MS)=-1" in said
    assert f"retrieval.rrf_k (in SHOPRANK_CONFIG {config})=0" in said  # the file's own bad key: the file


@pytest.mark.parametrize(("variable", "value", "file", "said"), [
    # pydantic-settings merges a dict or section key by key: the bad key the file gives beside the variable's
    ("SHOPRANK_SERVING__STAGE_BUDGETS_MS", '{"student": 30}', "serving:\n  stage_budgets_ms:\n    teacher: -1\n",
     "serving.stage_budgets_ms.teacher (in SHOPRANK_CONFIG {config})=-1"),
    ("SHOPRANK_RETRIEVAL", '{"rrf_k": 30}', "retrieval:\n  hnsw_m: 1\n",
     "retrieval.hnsw_m (in SHOPRANK_CONFIG {config})=1"),
    # ... and the bad key the variable gives beside the file's
    ("SHOPRANK_SERVING", '{"stage_budgets_ms": {"teacher": -1}}', "serving:\n  stage_budgets_ms:\n    student: 30\n",
     "serving.stage_budgets_ms.teacher (in SHOPRANK_SERVING)=-1"),
    ("SHOPRANK_API__CORS_ORIGINS", '["https://a.com", 5]', "api:\n  cors_origins: []\n",
     "api.cors_origins.1 (in SHOPRANK_API__CORS_ORIGINS)=5"),
])
def test_a_key_of_a_merged_dict_is_blamed_on_what_gives_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           variable: str, value: str, file: str, said: str) -> None:
    config = tmp_path / "shoprank.yaml"
    assert said.format(config=config) in _refused(monkeypatch, config, file, variable, value)


def test_a_variable_that_names_no_setting_is_named_not_logged(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Loading the settings logs nothing (every process loads them, some before logging is set up): the command
    line warns of what :func:`unknown_variables` names, once per command."""
    from core.settings import get_settings, unknown_variables

    monkeypatch.setenv("SHOPRANK_ARTIFACT_URL", "s3://bucket/shoprank")  # a misspelled top-level setting
    monkeypatch.setenv("SHOPRANK_CPU_HIDE", "")  # read by ShopRank itself, beside the settings
    monkeypatch.setenv("SHOPRANK_SERVING__STAGE_BUDGETS_MS__TEACHER", "50")  # a key of a dict setting
    get_settings.cache_clear()
    try:
        with caplog.at_level("DEBUG"):
            assert get_settings().artifacts_url is None  # ignored, not an error
    finally:
        get_settings.cache_clear()
    assert not [record for record in caplog.records if "SHOPRANK_ARTIFACT_URL" in record.getMessage()]
    said = unknown_variables()
    assert [line for line in said if line.split()[0] in {"SHOPRANK_ARTIFACT_URL", "SHOPRANK_CPU_HIDE",
                                                           "SHOPRANK_SERVING__STAGE_BUDGETS_MS__TEACHER"}] == [
        "SHOPRANK_ARTIFACT_URL names no setting and is ignored; did you mean SHOPRANK_ARTIFACTS_URL? (every "
        "setting: `shoprank config reference`)"]
    assert unknown_variables({"SHOPRANK_HOME": "x", "SHOPRANK_HOMEE": "y"}) == [
        "SHOPRANK_HOMEE names no setting and is ignored; did you mean SHOPRANK_HOME? (every setting: `shoprank "
        "config reference`)"]


def test_a_stage_budget_given_keeps_the_others_and_a_level_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPRANK_SERVING__STAGE_BUDGETS_MS", '{"teacher": 50}')
    monkeypatch.setenv("SHOPRANK_LOG_LEVEL", "debug")
    settings = Settings()
    assert settings.serving.stage_budgets_ms == {"student": 600.0, "teacher": 50.0, "ltr": 200.0, "rules": 100.0}
    assert settings.log_level == "DEBUG"


def test_server_processes_and_their_model_threads_divide_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    import api.admission
    import core.hardware
    import core.service_settings
    import core.settings

    monkeypatch.setattr(core.hardware, "usable_cores", lambda: 8)
    monkeypatch.setattr(core.service_settings, "usable_cores", lambda: 8)
    assert core.service_settings.ApiSettings().processes() == 8  # workers 0: one per core
    assert core.service_settings.ApiSettings(workers=3).processes() == 3
    ranking = core.settings.RankingSettings()
    assert [ranking.threads_per_process(n) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    assert core.settings.RankingSettings(threads=4).threads_per_process(8) == 4  # set: kept as is
    assert [api.admission.default_shed_at(n) for n in (1, 2, 4, 8)] == [4, 2, 1, 1]

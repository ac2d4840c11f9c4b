"""API_KEY: the openai SDK with the key works, without it nothing but /v1/status answers.

In process (in_process.py): the key is checked before a job exists, so the app's own routes and
middleware answer, with a stub runner in place of generation."""
from __future__ import annotations

from pathlib import Path

import openai
import pytest
from in_process import URL, in_process_server

KEY = "test-key-123"


@pytest.fixture(scope="module")
def client(tmp_path_factory, smollm2_path):
    with in_process_server(tmp_path_factory.mktemp("auth"), {"smollm2": Path(smollm2_path)}, api_key=KEY) as c:
        yield c


def sdk(client, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=URL + "/v1", api_key=key, max_retries=0, http_client=client)


def test_sdk_with_the_key(client):
    with_key = sdk(client, KEY)
    assert "smollm2" in {m.id for m in with_key.models.list().data}
    r = with_key.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert r.choices[0].message.content is not None


def test_wrong_or_missing_key_is_401(client):
    jobs_before = len(client.app.state.hoshikage.runner.jobs)
    bad = sdk(client, "wrong")
    with pytest.raises(openai.AuthenticationError) as info:
        bad.models.list()
    assert info.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert client.post("/admin/reload").status_code == 401
    assert client.get("/v1/status").status_code == 200
    assert len(client.app.state.hoshikage.runner.jobs) == jobs_before  # nothing refused reached the worker


def test_admin_with_the_key(client):
    r = client.post("/admin/reload", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and "smollm2" in r.json()["models"]

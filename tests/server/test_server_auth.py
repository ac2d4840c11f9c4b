"""API_KEY on a live server: the openai SDK with the key works, without it nothing but
/v1/status answers."""
from __future__ import annotations

import httpx
import openai
import pytest


@pytest.fixture(scope="module")
def server(make_server):
    return make_server({"API_KEY": "test-key-123"})


def test_sdk_with_the_key(server):
    client = server.openai()
    assert "smollm2" in {m.id for m in client.models.list().data}
    r = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert r.choices[0].message.content is not None


def test_wrong_or_missing_key_is_401(server):
    bad = openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.models.list()
    assert info.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert httpx.post(server.url + "/admin/reload").status_code == 401
    assert httpx.get(server.url + "/v1/status").status_code == 200


def test_admin_with_the_key(server):
    r = httpx.post(server.url + "/admin/reload", headers=server.headers())
    assert r.status_code == 200 and "smollm2" in r.json()["models"]

import requests


def test_chat_non_stream(relay, fake):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    r = requests.post(relay.url + "/v1/chat/completions", json=body,
                      headers={"Authorization": "Bearer sk-test", "x-fake-tag": "smoke1"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "echo: hi"
    rec = fake.by_tag("smoke1")
    assert rec.path == "/v1/chat/completions"
    assert rec.header("authorization") == "Bearer sk-test"

import redis


def test_redis_server_answers_and_restarts(start_redis):
    server = start_redis()
    client = redis.Redis.from_url(server.url)
    client.set("k", "v")
    assert client.get("k") == b"v"
    server.stop()
    try:
        client.ping()
        raise AssertionError("redis should be down")
    except redis.ConnectionError:
        pass
    server.start()
    assert client.ping()

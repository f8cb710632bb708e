"""What one request, one key and one project may ask: body sizes, rates, quotas, caps."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from app.config import Settings
from app.errors import TooManyRequests
from app.main import create_app
from app.ratelimit import RedisRateLimiter
from tests.api.helpers import assert_error, job_spec, sentiment_dataset
from tests.conftest import REDIS_URL, create_key


def limited_api(settings: Settings, **limits: int) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=limits)))


class TestJsonBodies:
    def test_declared_oversize_body_is_413(self, api: TestClient, settings: Settings) -> None:
        body = b'{"name": "' + b"x" * settings.max_json_bytes + b'"}'
        response = api.post("/v1/jobs", content=body,
                            headers={"Content-Type": "application/json"})
        assert_error(response, 413, "body_too_large")

    def test_chunked_oversize_body_is_413(self, api: TestClient, settings: Settings) -> None:
        def chunks() -> Iterator[bytes]:
            yield b'{"name": "'
            for _ in range(settings.max_json_bytes // 1000 + 2):
                yield b"x" * 1000
            yield b'"}'

        response = api.post("/v1/jobs", content=chunks(),
                            headers={"Content-Type": "application/json"})
        assert_error(response, 413, "body_too_large")

    def test_a_body_under_the_cap_goes_through(self, api: TestClient, tmp_path: Path) -> None:
        dataset = sentiment_dataset(api, tmp_path)
        response = api.post("/v1/jobs", json=job_spec(dataset["id"], name="n" * 200))
        assert response.status_code == 201, response.text


@pytest.mark.parametrize(("field", "value"), [
    ("hyperparameters.epochs", 10_000), ("hyperparameters.max_steps", 10**12),
    ("hyperparameters.max_seq_length", 100_000), ("hyperparameters.batch_size", 10**6),
    ("hyperparameters.learning_rate", 1e9), ("name", "n" * 201), ("model", "m" * 201),
    ("dataset.text_column", "c" * 257), ("logging_steps", 0),
])
def test_absurd_spec_values_are_422_naming_the_field(api: TestClient, tmp_path: Path,
                                                     field: str, value: object) -> None:
    spec = job_spec("ds_" + "0" * 32)
    *parents, leaf = field.split(".")
    target = spec
    for part in parents:
        target = target.setdefault(part, {})
    target[leaf] = value
    assert_error(api.post("/v1/jobs", json=spec), 422, "invalid_request", field)


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/datasets"])
def test_page_size_is_capped(api: TestClient, path: str) -> None:
    assert_error(api.get(path, params={"limit": 101}), 422, "invalid_request", "limit")


class TestRateLimits:
    def test_over_the_limit_is_429_with_retry_after(self, settings: Settings) -> None:
        with limited_api(settings, rate_limit_per_minute=3) as client:
            key = create_key(client.app, "team-r")
            other = create_key(client.app, "team-s")
            answers = [client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
                       for _ in range(4)]
            assert [a.status_code for a in answers] == [200, 200, 200, 429]
            assert_error(answers[-1], 429, "rate_limited")
            assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
            # Per key: another key still gets through.
            assert client.get("/v1/jobs",
                              headers={"Authorization": f"Bearer {other}"}).status_code == 200

    def test_redis_counts_across_api_processes(self) -> None:
        url = f"{REDIS_URL}/11"
        identity = f"key:{uuid.uuid4().hex}"

        async def four_checks() -> None:
            first, second = RedisRateLimiter(url, 3), RedisRateLimiter(url, 3)
            await first.check(identity)
            await second.check(identity)
            await first.check(identity)
            with pytest.raises(TooManyRequests) as refused:
                await second.check(identity)
            assert refused.value.headers and "Retry-After" in refused.value.headers
            await first.close()
            await second.close()

        asyncio.run(four_checks())
        keys = redis.Redis.from_url(url).keys(f"finetune:ratelimit:{identity}:*")
        assert len(keys) == 1 and 0 < redis.Redis.from_url(url).ttl(keys[0]) <= 120

    def test_an_unreachable_redis_lets_requests_through(self) -> None:
        async def two_checks() -> None:
            limiter = RedisRateLimiter("redis://127.0.0.1:1/0", 1)
            await limiter.check("key:x")
            await limiter.check("key:x")

        asyncio.run(two_checks())


def test_project_quota_of_active_jobs(api: TestClient, settings: Settings,
                                      tmp_path: Path) -> None:
    dataset = sentiment_dataset(api, tmp_path)
    api.app.state.settings = settings.model_copy(update={"max_active_jobs_per_project": 2})
    first = api.post("/v1/jobs", json=job_spec(dataset["id"])).json()
    api.post("/v1/jobs", json=job_spec(dataset["id"]))
    refused = api.post("/v1/jobs", json=job_spec(dataset["id"]))
    error = assert_error(refused, 429, "job_quota_exceeded")
    assert "2" in error["message"] and refused.headers["Retry-After"]
    # Another project has its own quota; a finished job frees a place.
    other = {"Authorization": f"Bearer {create_key(api.app, 'team-q')}"}
    theirs = sentiment_dataset(api, tmp_path / "q", headers=other)
    assert api.post("/v1/jobs", json=job_spec(theirs["id"]), headers=other).status_code == 201
    api.post(f"/v1/jobs/{first['id']}/cancel")
    assert api.post("/v1/jobs", json=job_spec(dataset["id"])).status_code == 201

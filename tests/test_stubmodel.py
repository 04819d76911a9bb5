"""The stub Messages API answers the way the real API does, as each test scripts it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.stubmodel import Reply, StubModel


@pytest.fixture
def stub() -> Iterator[StubModel]:
    """A stub model server for one test."""
    model = StubModel().start()
    yield model
    model.stop()


def post(stub: StubModel, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        stub.base_url + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-api-key": "sk-secret"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    lines = raw.decode().splitlines()
    return [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]


def message_body(text: str, stream: bool = False) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}]
    return {"model": "claude-test", "messages": messages, "stream": stream}


def test_non_streaming_request_gets_a_message_with_text_and_usage(stub: StubModel) -> None:
    """A plain POST gets a complete message object holding the scripted text."""
    stub.reply_with(Reply.text_reply("exactly this"))

    status, _, body = post(stub, "/v1/messages", message_body("hi"))

    message = json.loads(body)
    assert status == 200
    assert message["content"] == [{"type": "text", "text": "exactly this"}]
    assert message["usage"]["input_tokens"] == 21
    assert message["usage"]["cache_read_input_tokens"] == 5


def test_streaming_request_gets_the_event_sequence_of_the_real_api(stub: StubModel) -> None:
    """A streaming POST gets message_start through message_stop, the text in one delta."""
    stub.reply_with(Reply.text_reply("streamed"))

    status, headers, body = post(stub, "/v1/messages?beta=true", message_body("hi", True))

    events = sse_events(body)
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream"
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[3]["delta"]["text"] == "streamed"
    assert events[5]["usage"]["output_tokens"] == 8


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(500, "api_error"), (429, "rate_limit_error"), (401, "authentication_error")],
)
def test_error_reply_has_status_error_type_and_immediate_retry(
    stub: StubModel, status: int, error_type: str
) -> None:
    """An error reply carries its HTTP status, the API's error type and retry-after 0."""
    stub.reply_with(Reply.error(status))

    got, headers, body = post(stub, "/v1/messages", message_body("hi"))

    assert got == status
    assert json.loads(body)["error"]["type"] == error_type
    assert headers["retry-after"] == "0"


def test_rules_pick_the_reply_by_a_marker_in_the_request(stub: StubModel) -> None:
    """A request containing a rule's marker gets that rule's reply, others the default."""
    stub.when("BREAK-ME", Reply.error(500))

    failed, _, _ = post(stub, "/v1/messages", message_body("please BREAK-ME"))
    passed, _, _ = post(stub, "/v1/messages", message_body("all good"))

    assert (failed, passed) == (500, 200)


def test_requests_are_recorded_without_credentials(stub: StubModel) -> None:
    """Each message request is recorded with its body; API key headers are left out."""
    body = {**message_body("the prompt"), "system": [{"type": "text", "text": "SYS"}]}

    post(stub, "/v1/messages", body)

    [recorded] = stub.message_requests()
    assert recorded.messages_text() == "the prompt"
    assert recorded.system_text() == "SYS"
    assert "x-api-key" not in recorded.headers


def test_token_counting_is_answered_and_not_recorded_as_a_message(stub: StubModel) -> None:
    """count_tokens gets a count; it is not one of the message requests."""
    status, _, body = post(stub, "/v1/messages/count_tokens", message_body("x" * 40))

    assert status == 200
    assert json.loads(body)["input_tokens"] > 0
    assert stub.message_requests() == []


def test_malformed_reply_breaks_off_with_invalid_json(stub: StubModel) -> None:
    """A malformed reply is a 200 event stream whose data is not JSON."""
    stub.reply_with(Reply.malformed())

    status, _, body = post(stub, "/v1/messages", message_body("hi", True))

    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        sse_events(body)

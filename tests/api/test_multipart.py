"""The one-pass multipart split gives exactly Werkzeug's answer, or leaves the body to Werkzeug."""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.test import encode_multipart

from webhook_api.multipart import InMemoryFormDataParser, read_input, split_form_data

BOUNDARY = "b0uNd4ry"
# Werkzeug applies the field limit to each 64 KiB chunk too: keep it above that, as Flask does.
LIMITS: dict[str, Any] = {"max_form_memory_size": 70_000, "max_form_parts": 4}


def _body(*, file: bytes = b"\xff\xd8\xffimage", **fields: str) -> bytes:
    values: MultiDict[str, Any] = MultiDict(
        {"file": FileStorage(io.BytesIO(file), "photo.jpg", content_type="image/jpeg"), **fields}
    )
    return encode_multipart(values, BOUNDARY)[1]


def _outcome(parser: FormDataParser, body: bytes) -> Any:
    try:
        _, form, files = parser.parse(
            io.BytesIO(body), "multipart/form-data", len(body), {"boundary": BOUNDARY}
        )
    except RequestEntityTooLarge:
        return "413"
    return (
        list(form.items(multi=True)),
        [
            (name, f.filename, f.content_type, dict(f.headers), f.read())
            for name, f in files.items(multi=True)
        ],
    )


def _same_as_werkzeug(body: bytes) -> None:
    werkzeug = _outcome(FormDataParser(**LIMITS), body)
    assert _outcome(InMemoryFormDataParser(**LIMITS), body) == werkzeug
    # As the app makes it: reading the body from the request's wsgi.input instead.
    from_input = InMemoryFormDataParser(**LIMITS)
    from_input.environ = {"wsgi.input": io.BytesIO(body)}
    assert _outcome(from_input, body) == werkzeug


def test_an_ordinary_body_is_split_without_werkzeug() -> None:
    body = _body(external_id="post-1", metadata='{"ü": 1}')
    parts = split_form_data(body, BOUNDARY.encode(), max_parts=None, max_field_bytes=None)
    assert parts is not None
    fields, files = parts
    assert fields == [("external_id", "post-1"), ("metadata", '{"ü": 1}')]
    assert [(name, f.filename, f.mimetype, f.read()) for name, f in files] == [
        ("file", "photo.jpg", "image/jpeg", b"\xff\xd8\xffimage")
    ]
    _same_as_werkzeug(body)


@pytest.mark.parametrize(
    "body",
    [
        b"--b0uNd4ry--\r\n",
        b"preamble\r\n" + _body(),
        _body().replace(b"\r\n--b0uNd4ry--", b"\r\n--b0uNd4ry--  \r\nepilogue"),
        _body(file=b'a\n--b0uNd4ry\r\nContent-Disposition: form-data; name="x"\r\n\r\nv'),
        _body(file=b"a\r--b0uNd4ry\r\nz"),
        _body(file=b"a\r\n--b0uNd4ryX\r\nz"),
        _body(file=b"\r\n\r\n--b0uNd4ry"),
        _body().replace(b"\r\nContent-Type", b"\r\n\tContent-Type"),
        _body().replace(b"\r\n\r\n", b"\n\n", 1),
        _body().replace(b'name="file"; ', b""),
        _body().replace(b"--b0uNd4ry\r\n", b"--b0uNd4ry \r\n", 1),
        _body(a="1", b="2", c="3", d="4"),
        _body(big="x" * 70_001),
        _body()[:-20],
        _body().replace(b"photo.jpg", "fötö.jpg".encode()),
        _body().replace(b"photo.jpg", b"\xff.jpg"),
    ],
)
def test_unusual_bodies_get_werkzeugs_answer(body: bytes) -> None:
    _same_as_werkzeug(body)


PIECES = [b"\r\n", b"\n", b"\r", b"--", b"--" + BOUNDARY.encode(), b" ", b":", b'"', b";"]
PIECES += [b'Content-Disposition: form-data; name="f"', b'; filename="x"', b"\r\n\r\n"]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(st.integers(0, 400), st.sampled_from(PIECES) | st.binary(max_size=3)),
        max_size=4,
    ),
    st.integers(0, 3),
)
def test_mutated_bodies_get_werkzeugs_answer(edits: list[tuple[int, bytes]], cut: int) -> None:
    body = bytearray(_body(external_id="e", metadata="{}"))
    for position, piece in edits:
        body[position:position] = piece
    _same_as_werkzeug(bytes(body[: len(body) - cut]))


class _Broken(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise ConnectionResetError("reset by peer")


def test_a_body_that_ends_early_or_fails_is_a_client_disconnect() -> None:
    body = _body()
    assert read_input({"wsgi.input": io.BytesIO(body)}, len(body)) == body
    with pytest.raises(ClientDisconnected):
        read_input({"wsgi.input": io.BytesIO(body[:-1])}, len(body))
    with pytest.raises(ClientDisconnected):
        read_input({"wsgi.input": _Broken()}, len(body))

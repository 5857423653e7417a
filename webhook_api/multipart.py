"""A one-pass ``multipart/form-data`` split for bodies already in memory, Werkzeug as the fallback.

A body of known length up to ``IN_MEMORY_BODY_BYTES`` is split with ``bytes.find``; anything it
does not recognise exactly goes to Werkzeug's parser unchanged (docs/design.md, "Storage,
security and the webhook API").
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from typing import IO, Any

from werkzeug.datastructures import FileStorage, Headers
from werkzeug.exceptions import ClientDisconnected
from werkzeug.formparser import FormDataParser, MultiPartParser
from werkzeug.http import parse_options_header

logger = logging.getLogger(__name__)

# Multipart bodies up to this size are parsed in memory; larger ones spool to a temporary file.
IN_MEMORY_BODY_BYTES = 8 * 1024 * 1024

Parts = tuple[list[tuple[str, str]], list[tuple[str, FileStorage]]]


_CHARSETS = MultiPartParser()  # only for its get_part_charset, Werkzeug's rule for field text


def _headers(block: bytes) -> Headers | None:
    """Returns a part's headers when every line is ``name: value`` ended by CRLF, else None."""
    if block.count(b"\n") != block.count(b"\r\n") or block.count(b"\r") != block.count(b"\r\n"):
        return None  # bare CR or LF: Werkzeug splits those differently
    headers = []
    for line in block.split(b"\r\n"):
        if not line or line[:1] in b" \t" or b":" not in line:
            return None  # empty, folded or not a header
        name, _, value = line.decode().partition(":")
        headers.append((name.strip(" \t"), value.strip(" \t")))
    return Headers(headers)


def _part(block: bytes) -> tuple[str, str | None, Headers] | None:
    """Returns a part's name, filename (None for a field) and headers, or None."""
    headers = _headers(block)
    if headers is None or "content-disposition" not in headers:
        return None
    _, options = parse_options_header(headers["content-disposition"])
    name = options.get("name")
    return None if name is None else (name, options.get("filename"), headers)


def split_form_data(
    body: bytes, boundary: bytes, *, max_parts: int | None, max_field_bytes: int | None
) -> Parts | None:
    """Returns the fields and files of a body in the plain form browsers and HTTP clients send
    (CRLF everywhere, no preamble but an optional CRLF); None for anything else."""
    delimiter = b"--" + boundary
    pos = 2 if body.startswith(b"\r\n") else 0
    if not body.startswith(delimiter, pos):
        return None
    fields: list[tuple[str, str]] = []
    files: list[tuple[str, FileStorage]] = []
    pos, field_bytes = pos + len(delimiter), 0
    while body[pos : pos + 2] != b"--":  # the closing delimiter; an epilogue is ignored
        if body[pos : pos + 2] != b"\r\n":
            return None
        if max_parts is not None and len(fields) + len(files) >= max_parts:
            return None
        head_end = body.find(b"\r\n\r\n", pos + 2)
        part = None if head_end < 0 else _part(body[pos + 2 : head_end])
        # The part ends at the next occurrence of the delimiter, which must be a whole one.
        end = -1 if part is None else body.find(delimiter, head_end + 4)
        if part is None or end < 0 or body[end - 2 : end] != b"\r\n":
            return None
        name, filename, headers = part
        data = body[head_end + 4 : end - 2]
        if filename is None:
            field_bytes += len(data)
            if max_field_bytes is not None and field_bytes > max_field_bytes:
                return None
            fields.append((name, data.decode(_CHARSETS.get_part_charset(headers), "replace")))
        else:
            files.append((name, FileStorage(io.BytesIO(data), filename, name, headers=headers)))
        pos = end + len(delimiter)
    return fields, files


def read_up_to(stream: IO[bytes], length: int) -> bytes:
    """Returns ``length`` bytes of ``stream``, or fewer if it ends first (reads until then)."""
    chunks, total = [], 0
    while total < length and (chunk := stream.read(length - total)):
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def read_input(environ: Mapping[str, Any], length: int) -> bytes:
    """Returns the request body's ``length`` bytes (its Content-Length) read straight from
    ``wsgi.input``, which PEP 3333 lets an application read up to CONTENT_LENGTH; raises
    ClientDisconnected (400) when the body ends first or the read fails, as Werkzeug's stream
    does. That stream would copy the body twice more, into two fresh buffers (docs/design.md,
    "Storage, security and the webhook API")."""
    try:
        data = read_up_to(environ["wsgi.input"], length)
    except (OSError, ValueError) as exc:
        raise ClientDisconnected() from exc
    if len(data) != length:
        raise ClientDisconnected()
    return data


class InMemoryFormDataParser(FormDataParser):
    """Splits multipart bodies up to ``IN_MEMORY_BODY_BYTES`` in one pass (see the module).

    With ``environ`` set (the request's, by ``UploadRequest``) such a body is read straight from
    ``wsgi.input`` (:func:`read_input`); Werkzeug has already refused one over its
    ``max_content_length`` when it made the stream it passes to :meth:`parse`."""

    environ: Mapping[str, Any] | None = None

    def parse(
        self,
        stream: IO[bytes],
        mimetype: str,
        content_length: int | None,
        options: dict[str, str] | None = None,
    ) -> tuple[IO[bytes], Any, Any]:
        """Returns ``(stream, form, files)`` like Werkzeug's parser."""
        boundary = (options or {}).get("boundary", "")
        if (
            mimetype != "multipart/form-data"
            or not boundary.isascii()
            or not boundary
            or content_length is None
            or content_length > IN_MEMORY_BODY_BYTES
        ):
            return super().parse(stream, mimetype, content_length, options)
        if self.environ is not None:
            body = read_input(self.environ, content_length)
            stream = io.BytesIO()  # the body is consumed: nothing is left to read from it
        else:
            body = read_up_to(stream, content_length)
        try:
            parts = split_form_data(
                body,
                boundary.encode("ascii"),
                max_parts=self.max_form_parts,
                max_field_bytes=self.max_form_memory_size,
            )
        except UnicodeDecodeError:
            parts = None
        if parts is None:
            return super().parse(io.BytesIO(body), mimetype, content_length, options)
        return stream, self.cls(parts[0]), self.cls(parts[1])

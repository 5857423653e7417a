"""Failure details as clients may see them: no Python object representation, no server path.

Every ``failure.detail`` a submission carries (and its ``submission.failed`` callback) passes
through :func:`public_detail`. Library messages are kept for what they say about the media, but
``<_io.BytesIO object at 0x…>`` says nothing to a client, and a path on the server says too much.
"""

from __future__ import annotations

import re

MAX_DETAIL_CHARS = 1000

# "<_io.BytesIO object at 0x7f…>", "<PIL.GifImagePlugin.GifImageFile image mode=P … at 0x…>"
_REPR = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>")
# Absolute paths of two segments or more, not part of a URL or a word ("http://h/a/b" stays).
_PATH = re.compile(r"(?<![\w:/.~-])/(?:[\w.@+-]+/)+[\w.@+-]*")


def public_detail(text: str) -> str:
    """Returns ``text`` with object representations and server paths replaced, at most
    :data:`MAX_DETAIL_CHARS` long."""
    text = _REPR.sub("the data", text)
    text = _PATH.sub("<path>", text)
    return text[:MAX_DETAIL_CHARS]

r"""A ``multipart/form-data`` upload parsed as it arrives, in memory, within budgets.

Apart from the transcription handler because it is a parser with its own
state (python-multipart's callbacks): it knows budgets and form parts, nothing
of sessions or audio. Its refusals are :class:`~.api_error.ApiError`\ s, 400
or 413, answered as the API answers any.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from .api_error import ApiError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

__all__ = ["MultipartForm"]

#: Besides the file, the form's fields and the parts' headers: at most 16
#: fields of at most 64 KiB.
_MAX_FIELDS = 16
_MAX_FIELD_BYTES = 65_536


class MultipartForm:
    """A multipart/form-data body, parsed as it arrives, in memory, within budgets.

    Starlette's parser spools a file part to a temporary file (no audio may
    reach the disk) and counts nothing until the body has all come. Here the
    file goes into memory and is refused (413) the moment it is over
    ``max_file_bytes``; the fields are few and small, each part's headers
    bounded by python-multipart. One file part, named ``file``.
    """

    def __init__(self, boundary: bytes, max_file_bytes: int) -> None:
        self.fields: dict[str, str] = {}
        #: every value of each field, in order: an array field
        #: (``timestamp_granularities[]``) is sent as one part per value
        self.values: dict[str, list[str]] = {}
        self._n_fields = 0
        self.file: io.BytesIO | None = None
        self.filename = "upload"
        self._max_file_bytes = max_file_bytes
        self._file_complete = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._name = ""
        self._field: bytearray | None = None  # the field part being read
        self._in_file = False
        callbacks: MultipartCallbacks = {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_part,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }
        self._parser = MultipartParser(boundary, callbacks)

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise ApiError(400, f"the request is not a valid form: {exc}") from None

    def finish(self) -> io.BytesIO:
        """The file, from its start; 400 when the body held no whole ``file`` part."""
        try:
            self._parser.finalize()
        except FormParserError as exc:
            self.close()
            raise ApiError(400, f"the request is not a valid form: {exc}") from None
        finally:
            self._parser.callbacks = {}
        if self.file is None or not self._file_complete:
            self.close()
            raise ApiError(400, "a 'file' part is required", param="file")
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        """Free the file now: a refused upload's buffer (up to the limit, 25 MB)
        must not wait for the cyclic garbage collector.

        The parser's callbacks are this form's bound methods (a cycle), and a
        refusal's traceback holds the frame that holds the form (another), so
        only the cyclic collector would free either: in the hostile soak each
        refused 64 MB chunked body kept 25 MB until it ran, +25 MB of RSS a
        round. Dropping the callbacks breaks the first cycle and closing the
        file frees its buffer whatever still refers to the form.
        """
        self._parser.callbacks = {}
        if self.file is not None:
            self.file.close()

    def _part_begin(self) -> None:
        self._disposition = b""
        self._field = None
        self._in_file = False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise ApiError(400, "the request is not a valid form: a part has no name")
        self._name = _text(options[b"name"])
        if b"filename" not in options:
            if self._n_fields >= _MAX_FIELDS:
                raise ApiError(400, f"the form has more than {_MAX_FIELDS} fields")
            self._n_fields += 1
            self._field = bytearray()
        elif self._name != "file" or self.file is not None:
            raise ApiError(400, "one file part, named 'file', is expected", param="file")
        else:
            self.file = io.BytesIO()
            self.filename = _text(options[b"filename"]) or "upload"
            self._in_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            assert self.file is not None
            if self.file.tell() + end - start > self._max_file_bytes:
                raise ApiError(
                    413, f"the file is over {self._max_file_bytes} bytes", code="file_too_large"
                )
            self.file.write(memoryview(data)[start:end])
        elif self._field is not None:
            if len(self._field) + end - start > _MAX_FIELD_BYTES:
                raise ApiError(400, f"the field {self._name!r} is over {_MAX_FIELD_BYTES} bytes")
            self._field += data[start:end]

    def _part_end(self) -> None:
        if self._in_file:
            self._file_complete = True
        elif self._field is not None:
            self.fields[self._name] = _text(bytes(self._field))
            self.values.setdefault(self._name, []).append(self.fields[self._name])


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")

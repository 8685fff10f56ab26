"""The bridge's reading of stdin: lines cut wherever the chunks fall, an overlong line
dropped as it arrives and reported once, the input's last line without its newline."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.stdiobridge.lines import LineReader, TooLong


def reader(chunks: Iterable[bytes], limit: int = 10) -> LineReader:
    pending = list(chunks)

    async def read() -> bytes:
        return pending.pop(0) if pending else b""

    return LineReader(read, limit)


async def all_lines(lines: LineReader) -> list[bytes | int]:
    """Each line, or the size of one that was too long."""
    found: list[bytes | int] = []
    while (line := await lines.next_line()) is not None:
        found.append(line.size if isinstance(line, TooLong) else line)
    return found


async def test_lines_split_across_chunks_come_whole_and_crlf_is_one_end() -> None:
    lines = reader([b"ab", b"c\nd", b"ef\r\n", b"\n", b"gh\n"])
    assert await all_lines(lines) == [b"abc", b"def", b"", b"gh"]


async def test_an_overlong_line_is_reported_once_with_its_size_and_the_next_line_follows() -> None:
    lines = reader([b"0123456789", b"0123456789", b"01\nok\n"])
    assert await all_lines(lines) == [22, b"ok"]


async def test_an_overlong_line_in_one_chunk_is_reported() -> None:
    assert await all_lines(reader([b"0123456789ABC\nok\n"])) == [13, b"ok"]


async def test_the_last_line_needs_no_newline_and_blank_tails_end_the_input() -> None:
    assert await all_lines(reader([b"one\ntwo"])) == [b"one", b"two"]
    assert await all_lines(reader([b"one\n  "])) == [b"one"]


async def test_an_overlong_last_line_without_newline_is_reported() -> None:
    assert await all_lines(reader([b"0123456789", b"0123456789X"])) == [21]

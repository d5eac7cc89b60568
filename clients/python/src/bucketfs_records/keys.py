"""Key layout under the records prefix and the escaping of ids into key segments (Swift: RecordKey)."""

_KEEP = set(b"-_.:@+=")
FOLDERS = ["sessions/", "conversations/", "checkpoints/", "tasks/", "uploads/", "buffers/", "registry/", "events/"]


def segment(ident: str) -> str:
    """An id as one key segment: ASCII letters, digits and `-_.:@+=` stay, every other byte is %XX."""
    out = []
    for byte in ident.encode("utf-8"):
        if byte < 0x80 and (chr(byte).isalnum() or byte in _KEEP):
            out.append(chr(byte))
        else:
            out.append("%%%02X" % byte)
    text = "".join(out)
    if text in (".", ".."):
        text = "%2E" * len(text)
    return text


def id_from_segment(seg: str) -> str:
    data = seg.encode("utf-8")
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i] == ord("%") and i + 2 < len(data) and _is_hex(data[i + 1:i + 3]):
            out.append(int(data[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(data[i])
            i += 1
    return out.decode("utf-8", errors="replace")


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)


def validate(ident: str, what: str) -> None:
    if not isinstance(ident, str) or not ident or "\0" in ident:
        raise ValueError(f"{what} must be a non-empty string without NUL")


def padded(number: int) -> str:
    return "%010d" % number


def session(ident): return f"sessions/{segment(ident)}.json"
def checkpoints(thread): return f"checkpoints/{segment(thread)}/"
def checkpoint(thread, cp): return checkpoints(thread) + segment(cp) + ".json"
def writes(thread, cp): return checkpoints(thread) + segment(cp) + ".writes.json"
def events(stream): return f"events/{segment(stream)}/"
def event(stream, sequence): return events(stream) + padded(sequence) + ".json"

